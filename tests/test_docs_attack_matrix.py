"""docs/attacks.md's attack-matrix tables are what `condimmune attack-matrix` makes of the
kept metrics in docs/data/attack-matrix/, so the published numbers cannot drift from the
runs they come from (a hand edit of a cell, or a kept run added without regenerating the
table, fails here)."""

from pathlib import Path

import pytest

from condimmune.experiments.attack_matrix import write_attack_matrix

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "docs" / "data" / "attack-matrix" / "mobilenet-fashion-mnist"


def _table(markdown: str) -> list[str]:
    """The lines of the first markdown table that starts with ``| attacker |``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| attacker |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


MATRICES = {
    "mobilenet-fashion-mnist": ("## The `mobilenet-fashion-mnist` matrix", 24),
    "mnist-cnn-defence": ("## The whole-network defence matrix", 27),
    "mobilenet-fashion-mnist-yardstick": ("### Under the yardstick: the MobileNetV2 matrix", 24),
    "mnist-cnn-cluttered": ("## The cluttered operating point", 27),
    "mnist-cnn-cluttered-rerun mnist-cnn-cluttered-union "
    "mnist-cnn-cluttered-union-ablations/taps-union": (
        "### `full-depth` with the union adversary",
        9,
    ),
    "mnist-cnn-cluttered-union-ablations/anchor-off-union "
    "mnist-cnn-cluttered-union-ablations/condnum-union": (
        "### Ablations of the union defence",
        6,
    ),
    "mnist-cnn-cluttered-union-ablations/taps-union "
    "mnist-cnn-cluttered-union-ablations/grid-taps-union": (
        "### The few-label point's grid union on the cluttered point",
        6,
    ),
    "mnist-cnn-cluttered-prefix-curve": ("### Prefix ceilings across the depth", 3),
    "mnist-cnn-few-labels": ("## The few-label operating point", 27),
    "mnist-cnn-few-labels-union mnist-cnn-few-labels-grid-union "
    "mnist-cnn-few-labels-grid-union-ablations/mean-union "
    "mnist-cnn-few-labels-grid-union-ablations/taps-only "
    "mnist-cnn-few-labels-grid-union-ablations/taps-only-anchor-off "
    "mnist-cnn-few-labels-grid-union-ablations/taps-only-condnum": (
        "### The union defence and its ablations on the few-label point",
        18,
    ),
}
"""Kept runs (folders of docs/data/attack-matrix/, space-separated, combined in one report)
→ the docs section that publishes their table, and how many runs the full matrix has."""


@pytest.mark.parametrize("kept", MATRICES, ids=list(MATRICES))
def test_matrix_table_in_docs_is_regenerated_from_the_kept_runs(kept: str, tmp_path: Path) -> None:
    heading, full = MATRICES[kept]
    folders = [KEPT.parent / name for name in kept.split()]
    result = write_attack_matrix(folders, tmp_path / "report")
    generated = _table((tmp_path / "report" / "attack_matrix.md").read_text())
    docs = (ROOT / "docs" / "attacks.md").read_text()
    section = docs.split(heading, 1)[1]
    assert _table(section) == generated
    assert f"{len(result.runs)} runs of {full}" in section


BOTH_FORMS = {
    "few-label": "mnist-cnn-few-labels-exploration/grid-mean-union",
    "cluttered": "mnist-cnn-cluttered-exploration/grid-mean-union",
    "cluttered, mean_union_ridge=0.1": "mnist-cnn-cluttered-exploration/grid-mean-union-ridge",
    "few-label, union_weight=1": "mnist-cnn-few-labels-exploration/grid-w1-mean-union",
    "cluttered, union_weight=1": "mnist-cnn-cluttered-exploration/grid-w1-mean-union",
}
"""The runs of docs/attacks.md's "Both union forms at once" table, per operating point."""


def test_both_union_forms_table_is_the_kept_runs() -> None:
    """Each row of the per-seed table is what the kept metrics.json says, and every kept
    run has its row."""
    import json

    section = (ROOT / "docs" / "attacks.md").read_text().split("### Both union forms at once")[1]
    table = [line for line in section.split("\n### ")[0].splitlines() if line.startswith("| ")]
    expected = []
    for point, folder in BOTH_FORMS.items():
        for path in sorted((KEPT.parent / folder).glob("*/metrics.json")):
            run = json.loads(path.read_text())
            suite = run["attack_suite"]
            stick, cheapest = suite["yardstick"], suite["yardstick"]["cheapest_immunized"]
            expected.append(
                f"| {point} | {run['seed']} | {stick['s']:.4g} | {stick['s_max']:.4g} | "
                f"{stick['p']:.3f} | `{cheapest['attacker']}`, {cheapest['steps']} steps | "
                f"{suite['utility']['drop_points']:.1f} |"
            )
    assert table[1:] == expected  # after the header row
