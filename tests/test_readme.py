"""The README's two set-up commands are exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2, commands
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci_lines, f"{command!r} is not a line of .ci/run"
    assert "pip install" in commands[0] and "condimmune run" in commands[0]
    assert "pytest" in commands[1]


def test_readme_library_example_runs():
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## The library", 1)[1]
    code = re.findall(r"```python\n(.*?)\n```", example, flags=re.S)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["bound"].value is not None


def _keys(example: object, real: object, where: str = "") -> list[str]:
    """Keys of ``example`` missing in ``real``, or of another JSON type there."""
    if isinstance(example, dict):
        if not isinstance(real, dict):
            return [where or "(top)"]
        problems = []
        for k, v in example.items():
            key = f"{where}.{k}"
            problems += [key] if k not in real else _keys(v, real[k], key)
        return problems
    numbers = (int, float)
    same = isinstance(example, numbers) and isinstance(real, numbers) and not isinstance(real, bool)
    return [] if same or type(example) is type(real) else [where]


def test_readme_metrics_example_has_the_keys_of_a_real_run(tmp_path):
    import json
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The run directory (a contract)", 1)[1]
    (example,) = re.findall(r"```json\n(.*?)\n```", section, flags=re.S)
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "condimmune.cli", "run", "--out", str(out), "--no-progress"],
        check=True,
        capture_output=True,
    )
    real = json.loads((out / "metrics.json").read_text())
    assert _keys(json.loads(example), real) == []
