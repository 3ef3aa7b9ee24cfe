"""The strict JSON form of result records (``JsonRecord``) and the records of ``core``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

import pytest
import torch

import condimmune as ci
from condimmune.core.bound import ImmunizationBound
from condimmune.core.metrics import ConditionNumbers, ImmunizationCheck
from condimmune.core.records import JsonRecord, RecordError


class Shade(StrEnum):
    LIGHT = "light"
    DARK = "dark"


@dataclass(frozen=True)
class Point(JsonRecord):
    x: int
    label: str


@dataclass(frozen=True)
class Sample(JsonRecord):
    name: str
    ratio: float
    count: int
    ok: bool
    shade: Shade
    origin: Point
    path: list[Point]
    scores: dict[str, float]
    bounds: tuple[float, ...]
    gap: float | None
    note: str | None = None
    tags: list[str] = field(default_factory=list)


SAMPLE = Sample(
    name="s",
    ratio=0.5,
    count=3,
    ok=True,
    shade=Shade.DARK,
    origin=Point(0, "o"),
    path=[Point(1, "a"), Point(2, "b")],
    scores={"a": 1.5, "b": math.inf},
    bounds=(0.0, 1.0),
    gap=None,
    note="n",
    tags=["t"],
)

SAMPLE_JSON = {
    "name": "s",
    "ratio": 0.5,
    "count": 3,
    "ok": True,
    "shade": "dark",
    "origin": {"x": 0, "label": "o"},
    "path": [{"x": 1, "label": "a"}, {"x": 2, "label": "b"}],
    "scores": {"a": 1.5, "b": math.inf},
    "bounds": [0.0, 1.0],
    "gap": None,
    "note": "n",
    "tags": ["t"],
}


def _through_json_text(record: JsonRecord) -> object:
    """What ``metrics.json`` holds: the record written with ``json.dumps`` and read back."""
    return json.loads(json.dumps(record.to_json(), allow_nan=True))


def test_to_json_gives_plain_values_in_field_order():
    out = SAMPLE.to_json()
    assert out == SAMPLE_JSON
    assert list(out) == list(SAMPLE_JSON)
    assert type(out["shade"]) is str and type(out["bounds"]) is list


def test_round_trip_through_json_text():
    back = Sample.from_json(_through_json_text(SAMPLE))
    assert back == SAMPLE
    assert back.shade is Shade.DARK
    assert isinstance(back.origin, Point) and isinstance(back.path[1], Point)
    assert back.bounds == (0.0, 1.0) and isinstance(back.bounds, tuple)
    assert back.scores["b"] == math.inf


def test_none_default_is_left_out_and_read_back_as_none():
    record = replace(SAMPLE, note=None)
    out = record.to_json()
    assert "note" not in out
    assert out["gap"] is None  # no default: None is written as null
    assert Sample.from_json(out) == record


def test_defaulted_fields_may_be_absent():
    data = {k: v for k, v in SAMPLE_JSON.items() if k not in ("note", "tags")}
    back = Sample.from_json(data)
    assert back.note is None and back.tags == []


def test_int_is_read_as_float_for_a_float_field():
    back = Sample.from_json({**SAMPLE_JSON, "ratio": 2})
    assert back.ratio == 2.0 and type(back.ratio) is float


def _without(key: str) -> dict[str, object]:
    return {k: v for k, v in SAMPLE_JSON.items() if k != key}


def _nested(key: str, inner: dict[str, object]) -> dict[str, object]:
    return {**SAMPLE_JSON, key: inner}


BAD_DOCUMENTS = [
    pytest.param(_without("count"), "missing field count", id="missing-key"),
    pytest.param(
        _nested("origin", {"x": 0}), "missing field origin.label", id="missing-nested-key"
    ),
    pytest.param({**SAMPLE_JSON, "colour": "red"}, "unexpected field colour", id="extra-key"),
    pytest.param(
        _nested("origin", {"x": 0, "label": "o", "y": 1}),
        "unexpected field origin.y",
        id="extra-nested-key",
    ),
    pytest.param({**SAMPLE_JSON, "count": "3"}, "count must be int", id="str-for-int"),
    pytest.param({**SAMPLE_JSON, "count": True}, "count must be int", id="bool-for-int"),
    pytest.param({**SAMPLE_JSON, "count": 1.5}, "count must be int", id="float-for-int"),
    pytest.param({**SAMPLE_JSON, "ratio": "0.5"}, "ratio must be float", id="str-for-float"),
    pytest.param({**SAMPLE_JSON, "ratio": False}, "ratio must be float", id="bool-for-float"),
    pytest.param({**SAMPLE_JSON, "ok": 1}, "ok must be bool", id="int-for-bool"),
    pytest.param({**SAMPLE_JSON, "name": None}, "name must be str", id="null-for-str"),
    pytest.param({**SAMPLE_JSON, "gap": "x"}, "gap must be float", id="str-for-optional-float"),
    pytest.param({**SAMPLE_JSON, "shade": "grey"}, "shade must be one of", id="unknown-enum"),
    pytest.param(
        {**SAMPLE_JSON, "origin": [0, "o"]}, "origin must be a JSON object", id="list-for-record"
    ),
    pytest.param(
        _nested("origin", {"x": "0", "label": "o"}), "origin.x must be int", id="nested-wrong-type"
    ),
    pytest.param({**SAMPLE_JSON, "path": {"x": 1}}, "path must be a list", id="object-for-list"),
    pytest.param(
        {**SAMPLE_JSON, "path": [{"x": 1, "label": "a"}, {"x": 2}]},
        "missing field path[1].label",
        id="record-in-list",
    ),
    pytest.param({**SAMPLE_JSON, "scores": [1.0]}, "scores must be an object", id="list-for-dict"),
    pytest.param(
        {**SAMPLE_JSON, "scores": {"a": "high"}}, "scores.a must be float", id="dict-value-type"
    ),
    pytest.param(
        {**SAMPLE_JSON, "bounds": [0.0, "1"]}, "bounds[1] must be float", id="tuple-item-type"
    ),
    pytest.param({**SAMPLE_JSON, "tags": [1]}, "tags[0] must be str", id="list-item-type"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DOCUMENTS)
def test_mismatched_documents_are_refused_naming_the_field(data, message):
    with pytest.raises(RecordError) as info:
        Sample.from_json(data)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_enum_error_lists_the_valid_values():
    with pytest.raises(RecordError, match="shade must be one of 'light', 'dark', got 'grey'"):
        Sample.from_json({**SAMPLE_JSON, "shade": "grey"})


def test_top_level_must_be_an_object():
    with pytest.raises(RecordError, match="Sample must be a JSON object, got list"):
        Sample.from_json([SAMPLE_JSON])


def test_where_prefixes_every_field_name():
    with pytest.raises(RecordError, match=r"missing field attacks\.gd\.label"):
        Point.from_json({"x": 1}, where="attacks.gd")


def test_to_json_refuses_a_value_that_is_not_json():
    @dataclass(frozen=True)
    class Holder(JsonRecord):
        curve: object

    with pytest.raises(TypeError, match="Tensor is not a JSON record value"):
        Holder(torch.zeros(2)).to_json()


# ----------------------------------------------------------------------------- core's records


def _bounded_data(gen):
    xp = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    xh = torch.randn(30, 4, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 5.0, 10.0], dtype=torch.float64
    )
    return xp, xh


def test_immunization_bound_round_trip(gen):
    xp, xh = _bounded_data(gen)
    bound = ci.immunization_bound_features(xp, xh)
    assert not bound.unbounded and isinstance(bound.value, float)
    assert isinstance(bound.generalized_eigenvalues, tuple)
    assert list(bound.generalized_eigenvalues) == sorted(bound.generalized_eigenvalues)
    assert ImmunizationBound.from_json(_through_json_text(bound)) == bound


def test_unbounded_immunization_bound_round_trip_keeps_null_value(gen):
    xp, xh = _bounded_data(gen)
    xp[:, -1] = 0.0
    bound = ci.immunization_bound_features(xp, xh)
    assert bound.unbounded and bound.offending_dim == 1
    out = bound.to_json()
    assert out["value"] is None
    assert list(out) == [
        "value",
        "unbounded",
        "reason",
        "offending_dim",
        "kappa_lambda",
        "kappa_benign",
        "kappa_harmful",
        "generalized_eigenvalues",
    ]
    assert ImmunizationBound.from_json(_through_json_text(bound)) == bound


def test_condition_numbers_round_trip(gen):
    xp, xh = _bounded_data(gen)
    W = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    kappas = ci.immunization_condition_numbers(xp, xh, W)
    out = kappas.to_json()
    assert out == {
        "benign_original": kappas.benign_original,
        "benign_immunized": kappas.benign_immunized,
        "harmful_original": kappas.harmful_original,
        "harmful_immunized": kappas.harmful_immunized,
    }
    assert ConditionNumbers.from_json(_through_json_text(kappas)) == kappas


CHECK_LOSSES = [
    pytest.param({}, id="without-losses"),
    pytest.param({"benign_loss_original": 1.0, "benign_loss_immunized": 1.2}, id="with-losses"),
]


@pytest.mark.parametrize("losses", CHECK_LOSSES)
def test_immunization_check_round_trip(losses):
    check = ci.check_immunization(ConditionNumbers(10.0, 5.0, 10.0, 1000.0), **losses)
    out = check.to_json()
    assert "immunized" not in out  # derived, not a field
    assert ("utility_gap" in out) and (out["utility_gap"] is None) == (not losses)
    back = ImmunizationCheck.from_json(_through_json_text(check))
    assert back == check and back.immunized == check.immunized
