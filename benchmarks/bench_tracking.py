"""The regularizers' fast path for large matrices (issue 30): tracked extremes and exact-rank
rows against the dense eigen work and the previous step, one line per case.

    python benchmarks/bench_tracking.py [--cases NAME,...] [--repeats N] [--threads N]

Each line reads ``case=<name> cores=<logical CPUs> threads=<torch threads> load=<1-min load
average> <measurements> target=<condition> ok=<yes|no|->``; the exit status is 1 when a
target is missed. The timings compared in a line are taken in this process, interleaved
(one call of each per round, ``--repeats`` rounds after a warm-up round), and each is the
fastest of its rounds, as in ``benchmarks/bench_step.py``: on a shared machine that is the
closest to the work itself. ``--threads`` (default 1) sets torch's threads, as the CLI does.

Cases (rows of ``CASES``):

* ``eigen-sizes``: R_well's eigen work on random Wishart Gram matrices (p × 1.25p factors) of
  sizes 128 to 512: the dense path (``eigh`` up to 256, then ``eigvalsh`` and inverse
  iteration for v₁; the cheapest dense case) against the tracked extremes. Prints
  ``p<size>_ms=<dense>/<tracked>`` and their ratio: where it passes 1 sets
  :data:`~condimmune.core.tracking.TRACKING_MIN_SIZE`.
* ``eigen-raw-pixels``: the eigen work of one regularizer on the raw-pixel Grams
  (``mnist-pair``, ``data.pca_components=0``: 600 training rows per task, 784 pixels; ``W``
  the identity plus 1 % noise, two such ``W`` in turn): the previous step's on the 600 × 600
  Gram matrix (R_well: ``eigvalsh`` and inverse iteration for v₁; R_ill: ``eigh``, which its
  chooser took after inverse iteration refused u_k) against the tracked extremes of the
  exact-rank Gram matrix (525 × 525 benign, 571 × 571 harmful), each warm-started from the
  other ``W``'s.
* ``step-raw-pixels``, ``step-raw-pixels-benign``: one ``condnum`` regularizer step
  (``PreconditionedRegularizerStep``, ridges 1 and 1e-7, unit steps 0.5 and 0.2; R_well
  only for ``-benign``) on those tasks: the previous path (``eigenvectors="inverse-iteration"``,
  what ``"auto"`` was above 256 rows) against the fast path (``"auto"``).
* ``step-n1024-d784``: the same on random 1024 × 784 tasks (``benchmarks/bench_step.py``'s
  case), with the dense reference (``core/reference.py``) as well. Target (issue 30): the
  fast step ≥ 3.5 × the dense reference.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable

import torch
from bench_speed import Case, Outcome, run_cases

from condimmune import RankDeficientWarning
from condimmune.core.eigenpairs import EigenvectorMethod, psd_eigenpair
from condimmune.core.reference import dense_regularizer_gradient
from condimmune.core.rows import exact_rank_rows, nonzero_columns
from condimmune.core.spectral import first_nonzero
from condimmune.core.step import PreconditionedRegularizerStep
from condimmune.core.tracking import ExtremeEigenTracker
from condimmune.experiments.config import ExperimentConfig, apply_overrides, default_config
from condimmune.experiments.pipeline import resolve_plan
from condimmune.linear.data import load_task_data


def fastest_ms(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest time (ms) of each call over ``repeats`` interleaved rounds, after one
    warm-up round."""
    best = dict.fromkeys(calls, float("inf"))
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1000 * seconds for name, seconds in best.items()}


def _raw_pixel_tasks() -> tuple[torch.Tensor, torch.Tensor]:
    """The default raw-pixel rows of both tasks, as tensors (the loaders give numpy arrays;
    this benchmark compares torch's eigen kernels with the tracker's)."""
    config = apply_overrides(default_config("mnist-pair"), ["data.pca_components=0"])
    assert isinstance(config, ExperimentConfig)
    plan = resolve_plan(config)
    data = load_task_data(plan.options.source, plan.options.data, config.seed)
    return torch.from_numpy(data.benign.x_train), torch.from_numpy(data.harmful.x_train)


def _weight(d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return torch.eye(d, dtype=torch.float64) + 0.01 * noise


def _eigen_raw_pixels(args: argparse.Namespace) -> Outcome:
    values: dict[str, str] = {}
    xp, xh = _raw_pixel_tasks()
    weights = (_weight(xp.shape[1]), _weight(xp.shape[1], seed=1))
    k = xp.shape[1]
    rtol = k * torch.finfo(torch.float64).eps
    for name, x in (("benign", xp), ("harmful", xh)):
        columns = nonzero_columns(x)
        x_live = x if columns is None else x[:, columns]
        reduced_rows, _ = exact_rank_rows(x_live)
        grams, reduced = [], []
        for w in weights:
            w_live = w if columns is None else w[:, columns]
            phi, psi = x_live @ w_live.mT, reduced_rows @ w_live.mT
            grams.append(phi @ phi.mT)  # the previous Gram matrix: n × n
            reduced.append(psi @ psi.mT)  # the exact-rank one: r × r
        if name == "benign":  # R_well: v₁ by inverse iteration after eigvalsh
            method, index, top, low = EigenvectorMethod.INVERSE_ITERATION, None, True, False
        else:  # R_ill: u_k refused by inverse iteration, so eigh (the previous chooser)
            method, index, top, low = EigenvectorMethod.DENSE, k, False, True
        tracker = ExtremeEigenTracker()

        def previous(grams: list[torch.Tensor] = grams, m=method, i=index) -> None:
            for gram in grams:
                psd_eigenpair(
                    gram,
                    m,
                    lambda v: (
                        len(v) - 1 if i is None else first_nonzero(v, size=i, dtype=torch.float64)
                    ),
                )

        def tracked(g: list[torch.Tensor] = reduced, t=tracker, a=top, b=low) -> None:
            for gram in g:  # each warm-started from the other, a step apart
                assert t.track(gram, rtol=rtol, top_vector=a, low_vector=b) is not None

        times = fastest_ms({"previous": previous, "tracked": tracked}, args.repeats)
        values |= {
            f"{name}_gram": f"{grams[0].shape[0]}->{reduced[0].shape[0]}",
            f"{name}_previous_ms": f"{times['previous'] / 2:.1f}",
            f"{name}_tracked_ms": f"{times['tracked'] / 2:.2f}",
            f"{name}_ratio": f"{times['previous'] / times['tracked']:.1f}",
        }
    return Outcome(values, None)


def _eigen_sizes(args: argparse.Namespace) -> Outcome:
    values: dict[str, str] = {}
    for size in SIZES:
        gen = torch.Generator().manual_seed(size)
        grams = []
        for _ in range(2):  # two nearby matrices: each warm start is from the other
            psi = torch.randn(size, size + size // 4, generator=gen, dtype=torch.float64)
            grams.append(psi @ psi.mT)
        grams[1] = grams[0] + 1e-3 * grams[1]
        rtol = size * torch.finfo(torch.float64).eps
        tracker = ExtremeEigenTracker()

        def previous(grams: list[torch.Tensor] = grams) -> None:
            for gram in grams:  # R_well's pair: eigh up to 256, eigvalsh + inverse iteration
                psd_eigenpair(gram, EigenvectorMethod.AUTO, lambda v: len(v) - 1)

        def tracked(
            grams: list[torch.Tensor] = grams, t: ExtremeEigenTracker = tracker, r: float = rtol
        ) -> None:
            for gram in grams:
                assert t.track(gram, rtol=r, top_vector=True, low_vector=False) is not None

        times = fastest_ms({"previous": previous, "tracked": tracked}, args.repeats)
        values[f"p{size}_ms"] = f"{times['previous'] / 2:.2f}/{times['tracked'] / 2:.2f}"
        values[f"p{size}_ratio"] = f"{times['previous'] / times['tracked']:.2f}"
    return Outcome(values, None)


SIZES = (128, 192, 256, 320, 384, 512)
"""The sizes of ``eigen-sizes``: around :data:`~condimmune.core.tracking.TRACKING_MIN_SIZE`."""


def _steps(
    xp: torch.Tensor, xh: torch.Tensor, **kwargs: float | str
) -> dict[str, PreconditionedRegularizerStep]:
    return {
        method: PreconditionedRegularizerStep(
            xp, xh, rank_deficiency="allow", eigenvectors=method, **kwargs
        )
        for method in ("inverse-iteration", "auto")
    }


def _step_outcome(
    steps: dict[str, PreconditionedRegularizerStep],
    w: torch.Tensor,
    repeats: int,
    extra: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    buffer = torch.empty_like(w)
    calls: dict[str, Callable[[], object]] = {
        ("previous" if method == "inverse-iteration" else "fast"): (
            lambda s=step: s.gradient(w, out=buffer)
        )
        for method, step in steps.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        return fastest_ms(calls | (extra or {}), repeats)


def _step_raw_pixels(benign_only: bool, args: argparse.Namespace) -> Outcome:
    xp, xh = _raw_pixel_tasks()
    steps = _steps(
        xp,
        xh,
        benign_ridge=1.0,
        harmful_ridge=1e-7,
        benign_weight=0.5,
        harmful_weight=0.0 if benign_only else 0.2,
        weighting="unit",
    )
    times = _step_outcome(steps, _weight(xp.shape[1]), args.repeats)
    ratio = times["previous"] / times["fast"]
    values = {
        "previous_ms": f"{times['previous']:.1f}",
        "fast_ms": f"{times['fast']:.1f}",
        "ratio": f"{ratio:.2f}",
    }
    return Outcome(values, None)


def _step_n1024(args: argparse.Namespace) -> Outcome:
    n, d = 1024, 784
    gen = torch.Generator().manual_seed(0)
    xp = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xh = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = _weight(d)
    weights = {"benign_weight": 1.0, "harmful_weight": 1.0}
    steps = _steps(xp, xh, benign_ridge=1.0, harmful_ridge=1.0, **weights)

    def dense() -> object:
        return dense_regularizer_gradient(w, xp, xh, benign_ridge=1.0, harmful_ridge=1.0, **weights)

    times = _step_outcome(steps, w, args.repeats, {"dense": dense})
    ratio = times["dense"] / times["fast"]
    values = {
        "previous_ms": f"{times['previous']:.1f}",
        "fast_ms": f"{times['fast']:.1f}",
        "dense_ms": f"{times['dense']:.1f}",
        "ratio_previous": f"{times['previous'] / times['fast']:.2f}",
        "ratio_dense": f"{ratio:.2f}",
        "ratio_dense_previous": f"{times['dense'] / times['previous']:.2f}",
    }
    return Outcome(values, ratio >= 3.5)


CASES: dict[str, Case] = {
    "eigen-sizes": Case("-", _eigen_sizes),
    "eigen-raw-pixels": Case("-", _eigen_raw_pixels),
    "step-raw-pixels": Case("-", lambda args: _step_raw_pixels(False, args)),
    "step-raw-pixels-benign": Case("-", lambda args: _step_raw_pixels(True, args)),
    "step-n1024-d784": Case("ratio_dense>=3.5", _step_n1024),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_cases(parser, CASES, args, no_outcome="-")


if __name__ == "__main__":
    sys.exit(main())
