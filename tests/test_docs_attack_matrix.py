"""docs/attacks.md's MobileNetV2 matrix table is what `condimmune attack-matrix` makes of the
kept metrics in docs/data/attack-matrix/, so the published numbers cannot drift from the
runs they come from (a hand edit of a cell, or a kept run added without regenerating the
table, fails here)."""

from pathlib import Path

from condimmune.experiments.attack_matrix import write_attack_matrix

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "docs" / "data" / "attack-matrix" / "mobilenet-fashion-mnist"


def _table(markdown: str) -> list[str]:
    """The lines of the first markdown table that starts with ``| attacker |``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| attacker |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_mobilenet_matrix_table_in_docs_is_regenerated_from_the_kept_runs(tmp_path: Path) -> None:
    result = write_attack_matrix([KEPT], tmp_path / "report")
    generated = _table((tmp_path / "report" / "attack_matrix.md").read_text())
    docs = (ROOT / "docs" / "attacks.md").read_text()
    section = docs.split("## The `mobilenet-fashion-mnist` matrix", 1)[1]
    assert _table(section) == generated
    assert f"{len(result.runs)} runs of 24" in section


def test_whole_network_matrix_table_in_docs_is_regenerated_from_the_kept_runs(
    tmp_path: Path,
) -> None:
    result = write_attack_matrix([KEPT.parent / "mnist-cnn-defence"], tmp_path / "report")
    generated = _table((tmp_path / "report" / "attack_matrix.md").read_text())
    docs = (ROOT / "docs" / "attacks.md").read_text()
    section = docs.split("## The whole-network defence matrix", 1)[1]
    assert _table(section) == generated
    assert f"{len(result.runs)} runs of 27" in section


def test_cluttered_matrix_table_in_docs_is_regenerated_from_the_kept_runs(
    tmp_path: Path,
) -> None:
    result = write_attack_matrix([KEPT.parent / "mnist-cnn-cluttered"], tmp_path / "report")
    generated = _table((tmp_path / "report" / "attack_matrix.md").read_text())
    docs = (ROOT / "docs" / "attacks.md").read_text()
    section = docs.split("## The cluttered operating point", 1)[1]
    assert _table(section) == generated
    assert f"{len(result.runs)} runs of 27" in section
