"""The ``condimmune`` entry point (``condimmune.cli:main``): the command's exit code, output
and ``atexit`` handlers survive its exit without the interpreter's module teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_module_entry_point_keeps_output_and_exit_codes() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "condimmune.cli", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0 and "mnist-cnn-cluttered" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "condimmune.cli", "run", "no-such-experiment"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        bad.returncode == 2 and "unknown experiment 'no-such-experiment'" in bad.stdout + bad.stderr
    )


def test_atexit_handlers_run_and_a_message_exit_is_code_one() -> None:
    done = _python(
        """
        import atexit, sys
        import condimmune.cli as cli
        atexit.register(lambda: print("atexit ran"))
        sys.argv = ["condimmune", "list"]
        cli.main()
        """
    )
    assert done.returncode == 0 and done.stdout.rstrip().endswith("atexit ran")
    message = _python(
        """
        import condimmune.cli as cli
        def app():
            raise SystemExit("stopped: a message")
        cli.app = app
        cli.main()
        """
    )
    assert message.returncode == 1 and "stopped: a message" in message.stderr


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "written-by-the-thread"
    result = _python(
        """
        import sys, threading, time
        from pathlib import Path
        import condimmune.cli as cli
        def write():
            time.sleep(0.5)
            Path(sys.argv[1]).write_text("done")
        threading.Thread(target=write).start()
        cli.app = lambda: None
        cli.main()
        """,
        str(marker),
    )
    assert result.returncode == 0 and marker.read_text() == "done"
