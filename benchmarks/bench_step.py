"""Time one immunization step's regularizer + preconditioner work: ours vs the dense reference.

Ours (``PreconditionedRegularizerStep``): Gram-trick regularizers on the features and the
preconditioned gradient as ``Aᵀ M`` with ``M = X(XᵀX + ρI)⁻¹`` computed once per run
(Woodbury/SVD when n < d, Cholesky otherwise), written into a reused buffer as the trainer
does; for matrices above 256 rows only the eigenvalues in full and the one eigenvector each
regularizer needs by inverse iteration. Dense: full k × k ``eigvalsh`` (with autograd) of
ΦᵀΦ and a fresh d × d solve per step, float64, as the reference code does.

Deep cases (one training step's regularizer cost, forward + backward of
``λ_P R_well(S_P) + λ_H R_ill(S_H)`` w.r.t. the features, as in ``condimmune.deep.penalty``):
Gram path (``n × n`` eigendecomposition of ``ΦΦᵀ``) vs dense ``k × k`` path (``ΦᵀΦ``), for a
ResNet18 batch (64 × 512) and a ViT-B/16 batch (32 × 768).

    python benchmarks/bench_step.py [--repeats N]

Backend cases (issue #30): the same fast step on numpy arrays (numpy/scipy's OpenBLAS) against
torch tensors (MKL), both at the process's thread setting, printed as
``case=backend-<name> numpy_ms=<float> torch_ms=<float> ratio=<float>`` (ratio > 1: numpy
faster).

Prints one line per case: ``case=<name> ours_ms=<float> dense_ms=<float> ratio=<float>``.
``benchmarks/bench_speed.py`` runs the linear cases with their targets.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from condimmune import RankDeficientWarning
from condimmune.core.reference import _dense_r_ill, _dense_r_well, dense_regularizer_gradient
from condimmune.core.step import PreconditionedRegularizerStep
from condimmune.deep.penalty import immunization_penalty, normalized_features
from condimmune.methods.condnum import CondnumDeepOptions
from condimmune.methods.registry import configure_method

CASES = {"n64-d784": (64, 784), "n64-d2048": (64, 2048), "n1024-d784": (1024, 784)}
DEEP_CASES = {"deep-batch64-feat512": (64, 512), "deep-batch32-feat768": (32, 768)}


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after three warm-up calls (allocation, thread start)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def _random_tasks(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random benign and harmful rows (``n × d`` each) and a weight ``W`` (d × d) near I."""
    gen = torch.Generator().manual_seed(0)
    xp = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xh = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.eye(d, dtype=torch.float64) + 0.01 * torch.randn(
        d, d, generator=gen, dtype=torch.float64
    )
    return xp, xh, w


def step_case(n: int, d: int, repeats: int, *, numpy: bool = False) -> tuple[float, float]:
    """``(ours_ms, dense_ms)`` for one linear step on random ``n × d`` tasks, ``W`` d × d;
    ours on numpy arrays with ``numpy`` (the linear pipeline's backend since issue #30), else
    on tensors; the dense reference always on tensors (it differentiates with autograd)."""
    xp, xh, w = _random_tasks(n, d)
    weights = {"benign_weight": 1.0, "harmful_weight": 1.0}
    ours_rows = (xp.numpy(), xh.numpy(), w.numpy()) if numpy else (xp, xh, w)
    # Built once per training run: Alg. 1 precomputes the covariances.
    step = PreconditionedRegularizerStep(
        ours_rows[0],
        ours_rows[1],
        benign_ridge=1.0,
        harmful_ridge=1.0,
        rank_deficiency="allow",
        **weights,
    )
    weight = ours_rows[2]
    buffer = np.empty_like(weight) if numpy else torch.empty_like(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        ours = best_ms(lambda: step.gradient(weight, out=buffer), repeats)
        dense = best_ms(
            lambda: dense_regularizer_gradient(
                w, xp, xh, benign_ridge=1.0, harmful_ridge=1.0, **weights
            ),
            repeats,
        )
    return ours, dense


def backend_case(n: int, d: int, repeats: int) -> tuple[float, float]:
    """``(numpy_ms, torch_ms)`` for one fast linear step on the same random ``n × d`` tasks."""
    xp, xh, w = _random_tasks(n, d)
    options = {"benign_ridge": 1.0, "harmful_ridge": 1.0, "rank_deficiency": "allow"}
    weights = {"benign_weight": 1.0, "harmful_weight": 1.0}
    times = []
    arrays = (xp.numpy(), xh.numpy(), w.numpy(), np.empty_like(w.numpy()))
    for x_p, x_h, weight, buffer in (arrays, (xp, xh, w, torch.empty_like(w))):
        step = PreconditionedRegularizerStep(x_p, x_h, **options, **weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficientWarning)
            times.append(best_ms(lambda s=step, w=weight, b=buffer: s.gradient(w, out=b), repeats))
    return times[0], times[1]


def deep_case(n: int, k: int, repeats: int) -> tuple[float, float]:
    """``(gram_ms, dense_ms)`` for one deep step's regularizer on ``n × k`` feature batches."""
    gen = torch.Generator().manual_seed(1)
    method = configure_method("condnum", "deep", benign_weight=1e-3, harmful_weight=100.0)
    options = method.options
    assert isinstance(options, CondnumDeepOptions)
    pb = torch.randn(n, k, generator=gen, dtype=torch.float64, requires_grad=True)
    ph = torch.randn(n, k, generator=gen, dtype=torch.float64, requires_grad=True)

    def gram() -> None:
        total = immunization_penalty(method, pb, ph, normalize=True).total
        torch.autograd.grad(total, (pb, ph))

    def dense_kk() -> None:
        b, h = normalized_features(pb), normalized_features(ph)
        total = options.benign_weight * _dense_r_well(b.mT @ b)
        total = total + options.harmful_weight * _dense_r_ill(h.mT @ h)
        torch.autograd.grad(total, (pb, ph))

    return best_ms(gram, repeats), best_ms(dense_kk, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, (n, d) in CASES.items():
        _report(name, *step_case(n, d, args.repeats))
    for name, (n, k) in DEEP_CASES.items():
        _report(name, *deep_case(n, k, args.repeats))
    numpy_ms, torch_ms = backend_case(1024, 784, args.repeats)
    print(
        f"case=backend-n1024-d784 numpy_ms={numpy_ms:.2f} torch_ms={torch_ms:.2f} "
        f"ratio={torch_ms / numpy_ms:.2f}",
        flush=True,
    )


def _report(name: str, ours_ms: float, dense_ms: float) -> None:
    print(
        f"case={name} ours_ms={ours_ms:.2f} dense_ms={dense_ms:.2f} ratio={dense_ms / ours_ms:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
