"""``read_metrics`` picks the record by the experiment's family (the registry), not by
sniffing fields; every refusal names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condimmune.core.records import RecordError
from condimmune.experiments.pipeline import read_metrics
from condimmune.experiments.records import DeepRunMetrics

KEPT = Path(__file__).resolve().parents[2] / "docs" / "data" / "attack-matrix"


def test_a_kept_deep_record_reads_as_deep_and_round_trips() -> None:
    path = KEPT / "mnist-cnn-defence" / "mnist-cnn-none-s0" / "metrics.json"
    data = json.loads(path.read_text())
    metrics = read_metrics(data, source=str(path))
    assert isinstance(metrics, DeepRunMetrics) and metrics.experiment == "mnist-cnn"
    assert read_metrics(metrics.to_json(), source="again") == metrics


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param({"experiment": "cifar"}, "unknown experiment 'cifar'", id="unknown"),
        pytest.param({}, "unknown experiment 'None'", id="missing"),
        pytest.param([1, 2], "unknown experiment 'None'", id="not-a-mapping"),
        pytest.param({"experiment": "mnist-pair"}, "missing", id="linear-fields-missing"),
    ],
)
def test_refusals_name_the_source(data: object, fragment: str) -> None:
    with pytest.raises(RecordError) as err:
        read_metrics(data, source="runs/x/metrics.json")
    assert str(err.value).startswith("runs/x/metrics.json: ") and fragment in str(err.value)


def test_a_deep_document_under_a_linear_experiment_is_refused() -> None:
    path = KEPT / "mnist-cnn-defence" / "mnist-cnn-none-s0" / "metrics.json"
    data = {**json.loads(path.read_text()), "experiment": "mnist-pair"}
    with pytest.raises(RecordError):
        read_metrics(data, source=str(path))
