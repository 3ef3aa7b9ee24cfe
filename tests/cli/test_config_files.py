"""Config files through the real command line: ``run --config FILE`` and a run directory's
``config.yaml`` read by ``evaluate`` are read strictly (repeated keys, nesting, anchors,
size), each refusal is one short ``error:`` line (exit code 2) naming the file, the line
and the key, nothing on disk changes; and ``012`` is refused alike in a file and in
``--set``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cli_support import error_line, invoke, sets, snapshot

MAX_MESSAGE = 300
"""An ``error:`` line naming a file under pytest's temporary directory stays shorter."""


def _aliases(levels: int) -> str:
    """A "billion laughs" document: 9 ** levels strings from a few hundred bytes."""
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Bad:
    """A YAML text and what its one error line must say besides the file's name."""

    text: str
    names: tuple[str, ...]


FILE_CASES: dict[str, Bad] = {
    "duplicate-key": Bad(
        "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n",
        ("duplicate key train.epochs", "line 4", "first at line 2"),
    ),
    "duplicate-section": Bad("seed: 1\ntrain: {}\ntrain: {}\n", ("duplicate key train", "line 3")),
    "deep-list": Bad("train: " + "[" * 100_000 + "]" * 100_000 + "\n", ("nested deeper than 32",)),
    "alias-bomb": Bad(_aliases(9), ("anchor or alias not allowed", "line 1")),
    "five-megabytes": Bad("# padding\n" * 500_000, ("larger than 1 MiB",)),
    "huge-unknown-key": Bad(f"? {'k' * 200_000}\n: 1\n", ("unknown config key: kkk",)),
    "huge-value": Bad("train:\n  epochs: '" + "9" * 200_000 + "'\n", ("train.epochs",)),
}


def _check(result_args: list[str], tmp_path: Path, names: tuple[str, ...]) -> str:
    """Invoke, and check the one short error line, the exit code and the untouched disk."""
    before = snapshot(tmp_path)
    result = invoke(*result_args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = error_line(result)
    for name in names:
        assert name in line, line
    assert len(line) < MAX_MESSAGE, line
    assert snapshot(tmp_path) == before
    return line


@pytest.mark.parametrize("bad", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_bad_config_file_is_one_short_line(tmp_path: Path, bad: Bad) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(bad.text)
    args = ["run", "digits", "--config", path, "--out", tmp_path / "out", "--no-progress"]
    _check(args, tmp_path, (str(path), *bad.names))


RUN_DIR_CASES: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
    "duplicate-key": (lambda written: f"{written}seed: 5\n", ("duplicate key seed", "first at")),
    **{
        name: (lambda _written, text=FILE_CASES[name].text: text, FILE_CASES[name].names)
        for name in ("deep-list", "alias-bomb", "five-megabytes")
    },
}
"""How each case changes the run's ``config.yaml`` (given its text), and what the line names."""


@pytest.mark.parametrize(("change", "names"), RUN_DIR_CASES.values(), ids=RUN_DIR_CASES.keys())
def test_a_bad_config_yaml_in_a_run_directory_is_one_short_line(
    tmp_path: Path, tiny_run: Path, change: Callable[[str], str], names: tuple[str, ...]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(change(config.read_text()))
    _check(["evaluate", run], tmp_path, (str(config), *names))


def test_a_leading_zero_is_refused_alike_in_a_file_and_in_set(tmp_path: Path) -> None:
    """YAML 1.1 reads ``epochs: 012`` as 10 and ``--set`` read it as 12: now both refuse it,
    for the same reason."""
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 012\n")
    base = ["run", "digits", "--out", tmp_path / "out", "--no-progress"]
    reason = "train.epochs must be of type int, got '012' (write integers without leading zeros)"
    from_file = _check([*base, "--config", path], tmp_path, (str(path), reason))
    from_set = _check([*base, *sets(["train.epochs=012"])], tmp_path, (reason,))
    assert from_file.endswith(reason) and from_set.endswith(reason)
