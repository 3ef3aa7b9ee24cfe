"""The README's two set-up commands are exactly what CI runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


CPU_INDEPENDENT = (
    "experiment",
    "method",
    "seed",
    "kappa.benign.original",
    "kappa.harmful.original",
    "benign_task.metric",
    "benign_task.original",
    "attack.target",
    "attack.steps_original",
    "rir_bound.value",
    "rir_bound.unbounded",
)
"""The README example's numbers of the raw inputs (κ, GD steps, the raw head's accuracy,
the bound): the same on every CPU, so they must equal a real run's to the digits shown. The
trained extractor's numbers (RIR, immunized κ's and steps) move with the CPU's rounding, as
the README says: only their keys and types are checked."""


def _at(data: object, dotted: str) -> object:
    for part in dotted.split("."):
        assert isinstance(data, dict), dotted
        data = data[part]
    return data


def _shown(real: object, text: str) -> object:
    """``real`` rounded as the example writes it: a float to the significant digits of its
    ``text`` in the README (``757.1``: 4), anything else as it is."""
    if isinstance(real, float):
        digits = len(text.lstrip("-0.").replace(".", "").split("e")[0])
        return float(f"{real:.{digits}g}")
    return real


@pytest.fixture(scope="module")
def default_run_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("readme") / "run"
    subprocess.run(
        [sys.executable, "-m", "condimmune.cli", "run", "--out", str(out), "--no-progress"],
        check=True,
        capture_output=True,
    )
    metrics: dict = json.loads((out / "metrics.json").read_text())
    return metrics


def _example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The run directory (a contract)", 1)[1]
    (example,) = re.findall(r"```json\n(.*?)\n```", section, flags=re.S)
    return str(example)


def test_readme_metrics_example_has_the_keys_of_a_real_run(default_run_metrics):
    assert _keys(json.loads(_example()), default_run_metrics) == []


@pytest.mark.parametrize("key", CPU_INDEPENDENT)
def test_readme_metrics_example_has_the_numbers_of_a_real_run(default_run_metrics, key):
    as_text = json.loads(_example(), parse_float=str)  # the digits as the README shows them
    shown, real = _at(json.loads(_example()), key), _at(default_run_metrics, key)
    expected = _shown(real, str(_at(as_text, key)))
    assert shown == expected, f"README shows {key} = {shown}, a run gives {real}"
