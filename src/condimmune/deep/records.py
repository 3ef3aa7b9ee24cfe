"""The deep evaluation's record that ``metrics.json`` holds, apart from the torch code that
computes it (:func:`condimmune.deep.evaluate.group_immunization_ratios`): reading or writing
a linear run's metrics never imports torch (issue #30)."""

from __future__ import annotations

from dataclasses import dataclass

from condimmune.core.records import JsonRecord

__all__ = ["GroupRatios"]


@dataclass(frozen=True)
class GroupRatios(JsonRecord):
    """Mean ± std over the groups of (i) the harmful κ ratio, (ii) the benign κ ratio, RIR."""

    harmful_ratio_mean: float
    harmful_ratio_std: float
    benign_ratio_mean: float
    benign_ratio_std: float
    rir_mean: float
    rir_std: float
    log_rir_mean: float
    groups: int
    group_size: int
