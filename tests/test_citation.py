"""CITATION.cff: valid CFF 1.2 (the keys GitHub and Zenodo read), citing the paper."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_citation_file_has_the_required_keys_and_cites_the_paper() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"]
    assert cff["license"] == project["license"]["text"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Model Immunization from a Condition Number Perspective"
    assert [a["family-names"] for a in paper["authors"]] == ["Zheng", "Bai", "Bullins", "Yeh"]
    assert paper["year"] == 2025 and "2505.23760" in paper["url"]
