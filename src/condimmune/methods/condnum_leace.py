"""``condnum-leace``: conditioning, then erasure (deep nets only).

The last blocks are trained exactly as ``condnum`` (Eq. 13 of the paper:
``CE + λ_P R_well(S_P) + λ_H R_ill(S_H)``); then the LEACE erasure of the harmful labels
(Eq. A6, :mod:`condimmune.methods.leace`) is fitted on the **immunized** features and folded
into the model, the benign head refitted to its logits.

Why after, not inside the training loop: LEACE's guarantee (no linear predictor of the
harmful labels beats a constant on the fitting data) holds for the features it was fitted
on; every later gradient step moves the features and brings decodable directions back, so an
erasure inside the loop would have to be refitted and differentiated at every step and would
still not hold for the released model. Fitted last, it holds exactly for the released
features, and the conditioning of the remaining directions is ``condnum``'s. On a linear
extractor the pair adds nothing measurable over ``leace`` (the same linear information is
erased), so the method is deep-only.
"""

from __future__ import annotations

from condimmune.methods.base import DeepSolver, DeepVersion, MethodSpec
from condimmune.methods.condnum import CondnumDeepOptions, condnum_penalty
from condimmune.methods.leace import leace_feature_map

__all__ = ["CONDNUM_LEACE"]

CONDNUM_LEACE = MethodSpec(
    name="condnum-leace",
    description="condnum, then the LEACE erasure of the harmful labels on the immunized "
    "features (deep only)",
    deep=DeepVersion(
        CondnumDeepOptions,
        DeepSolver.PENALTY,
        penalty=condnum_penalty,
        feature_map=leace_feature_map,
    ),
)
