"""The attack matrix's numbers (experiments/matrix_groups.py): how a combined value says what
kind of bound it is."""

from __future__ import annotations

import pytest

from condimmune.experiments.matrix_groups import Stat

MARKS = {
    "exact": ((0, 0), "2 ± 1.4"),
    "lower-bound": ((1, 0), "≥ 2 ± 1.4"),
    "upper-end": ((0, 1), "≤ 2 ± 1.4"),
    "both": ((1, 1), "≥/≤ 2 ± 1.4"),
}


@pytest.mark.parametrize("case", MARKS, ids=list(MARKS))
def test_a_combined_value_is_marked_as_the_bound_it_is(case):
    (unreached, upper), shown = MARKS[case]
    stat = Stat.of([1.0, 3.0], unreached, upper)
    assert stat.text() == shown
    assert Stat.from_json(stat.to_json()) == stat


def test_a_stored_stat_without_the_upper_count_reads_as_exact():
    assert Stat.from_json({"mean": 2.0, "std": 0.0, "n": 1, "unreached": 0}).text() == "2 (1 run)"
