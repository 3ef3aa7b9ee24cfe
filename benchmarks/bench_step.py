"""Time one immunization step's regularizer + preconditioner work: ours vs the dense reference.

Ours (``PreconditionedRegularizerStep``): Gram-trick regularizers on the features and the
preconditioned gradient as ``Aᵀ M`` with ``M = X(XᵀX + ρI)⁻¹`` computed once per run
(Woodbury/SVD when n < d, Cholesky otherwise), written into a reused buffer as the trainer
does. Dense: full k × k ``eigvalsh`` of ΦᵀΦ and a
fresh d × d solve per step, float64, as the reference code does.

Deep cases (one training step's regularizer cost, forward + backward of
``λ_P R_well(S_P) + λ_H R_ill(S_H)`` w.r.t. the features, as in ``condimmune.deep.trainer``):
Gram path (``n × n`` eigendecomposition of ``ΦΦᵀ``) vs dense ``k × k`` path (``ΦᵀΦ``), for a
ResNet18 batch (64 × 512) and a ViT-B/16 batch (32 × 768).

    python benchmarks/bench_step.py [--repeats N]

Prints one line per case: ``case=<name> ours_ms=<float> dense_ms=<float> ratio=<float>``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from condimmune import RankDeficientWarning
from condimmune.experiments.config import DeepTrainConfig
from condimmune.deep.trainer import immunization_penalty, normalized_features
from condimmune.core.reference import _dense_r_ill, _dense_r_well, dense_regularizer_gradient
from condimmune.core.step import PreconditionedRegularizerStep

CASES = {"n64-d784": (64, 784), "n64-d2048": (64, 2048), "n1024-d784": (1024, 784)}
DEEP_CASES = {"deep-batch64-feat512": (64, 512), "deep-batch32-feat768": (32, 768)}


def _best_ms(fn, repeats: int) -> float:
    for _ in range(3):  # warm-up: first calls pay for allocation and thread start-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    for name, (n, d) in CASES.items():
        xp = torch.randn(n, d, generator=gen, dtype=torch.float64)
        xh = torch.randn(n, d, generator=gen, dtype=torch.float64)
        w = torch.eye(d, dtype=torch.float64) + 0.01 * torch.randn(
            d, d, generator=gen, dtype=torch.float64
        )
        kwargs = {"benign_weight": 1.0, "harmful_weight": 1.0}
        # Built once per training run: Alg. 1 precomputes the covariances.
        step = PreconditionedRegularizerStep(
            xp, xh, benign_ridge=1.0, harmful_ridge=1.0, rank_deficiency="allow", **kwargs
        )
        buffer = torch.empty_like(w)

        def ours(w=w, step=step, buffer=buffer):
            step.gradient(w, out=buffer)

        def dense(w=w, xp=xp, xh=xh, kwargs=kwargs):
            dense_regularizer_gradient(w, xp, xh, benign_ridge=1.0, harmful_ridge=1.0, **kwargs)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficientWarning)
            ours_ms = _best_ms(ours, args.repeats)
            dense_ms = _best_ms(dense, args.repeats)
        _report(name, ours_ms, dense_ms)
    cfg = DeepTrainConfig(benign_weight=1e-3, harmful_weight=100.0, normalize_covariance=True)
    for name, (n, k) in DEEP_CASES.items():
        pb = torch.randn(n, k, generator=gen, dtype=torch.float64, requires_grad=True)
        ph = torch.randn(n, k, generator=gen, dtype=torch.float64, requires_grad=True)

        def gram(pb=pb, ph=ph):
            torch.autograd.grad(immunization_penalty("condnum", pb, ph, cfg).total, (pb, ph))

        def dense_kk(pb=pb, ph=ph):
            b, h = normalized_features(pb), normalized_features(ph)
            total = cfg.benign_weight * _dense_r_well(b.mT @ b)
            total = total + cfg.harmful_weight * _dense_r_ill(h.mT @ h)
            torch.autograd.grad(total, (pb, ph))

        _report(name, _best_ms(gram, args.repeats), _best_ms(dense_kk, args.repeats))


def _report(name: str, ours_ms: float, dense_ms: float) -> None:
    print(
        f"case={name} ours_ms={ours_ms:.2f} dense_ms={dense_ms:.2f} ratio={dense_ms / ours_ms:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
