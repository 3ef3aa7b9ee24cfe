"""Matrices with a prescribed spectrum, built from explicit generators (shared by tests)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def random_orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def matrix_with_spectrum(eigenvalues, gen: torch.Generator) -> torch.Tensor:
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    q = random_orthogonal(lam.numel(), gen)
    s = (q * lam) @ q.mT
    return (s + s.mT) / 2


def features_with_singular_values(n: int, singular_values, gen: torch.Generator) -> torch.Tensor:
    """Φ (n × k) with prescribed singular values (k = len, zeros allowed, n ≥ nonzero count)."""
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    k = s.numel()
    r = min(n, k)
    u = random_orthogonal(n, gen)[:, :r]
    v = random_orthogonal(k, gen)[:, :r]
    return (u * s[:r]) @ v.mT


def numpy_log_kappa(S: np.ndarray, rtol: float) -> float:
    """Independent dense float64 reference: log κ over eigenvalues above rtol·σ_max."""
    lam = np.linalg.eigvalsh(S)
    nz = lam[lam > rtol * lam[-1]]
    return float(np.log(nz[-1]) - np.log(nz[0]))


def make_folder(root, splits, classes=("a", "b"), per_class=3, size=12):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(d / f"{i}.jpg")
    return root


def separated_classes(
    gen: torch.Generator, n: int = 150, dims: int = 6, classes: int = 3, dtype=torch.float64
):
    """A task of ``classes`` well-separated Gaussian classes in ``dims`` dimensions (Bayes
    accuracy ≈ 1): ``n`` training and ``n`` held-out rows, drawn in float64, given in
    ``dtype``."""
    from condimmune.attacks.deep_train import TaskTensors

    centres = 4.0 * torch.eye(dims, dtype=torch.float64)[:classes]
    y = torch.arange(2 * n) % classes
    x = (centres[y] + torch.randn(2 * n, dims, generator=gen, dtype=torch.float64)).to(dtype)
    return TaskTensors(x[:n], y[:n], x[n:], y[n:], classes)


STEP_RIDGES = {"benign_ridge": 0.5, "harmful_ridge": 2.0}
"""The ridges of the step tests' problems (``regularizer_step`` and ``dense_step_gradient``
share them, so the fast path and its reference solve the same problem)."""


def regularizer_step(xp, xh, wp, wh, **kwargs):
    """The preconditioned regularizer step on ``xp``, ``xh`` with :data:`STEP_RIDGES`."""
    from condimmune.core.step import PreconditionedRegularizerStep

    return PreconditionedRegularizerStep(
        xp,
        xh,
        **STEP_RIDGES,
        benign_weight=wp,
        harmful_weight=wh,
        rank_deficiency="allow",
        **kwargs,
    )


def dense_step_gradient(w, xp, xh, wp, wh, weighting):
    """The dense float64 reference of :func:`regularizer_step`'s direction."""
    from condimmune.core.reference import dense_regularizer_gradient

    return dense_regularizer_gradient(
        w, xp, xh, **STEP_RIDGES, benign_weight=wp, harmful_weight=wh, weighting=weighting
    )


def assert_close_to_scale(actual, expected, rtol):
    """``actual`` equals ``expected`` to ``rtol``, relative to each entry and to the largest."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def torch_modules_after(code: str, *args: str, cwd: Path | None = None) -> list[str]:
    """The torch modules a fresh interpreter has loaded after running ``code`` (``args``: its
    ``sys.argv[1:]``); ``code`` failing fails the calling test with its stderr."""
    probe = "\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    done = subprocess.run(
        [sys.executable, "-c", code + probe, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    return loaded


def blas_threads() -> int:
    """The threads of numpy's and scipy's BLAS (each wheel ships its own): their common
    count, or -1 when they differ (a limit that reached only one of them)."""
    from threadpoolctl import threadpool_info

    threads = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    return threads.pop() if len(threads) == 1 else -1
