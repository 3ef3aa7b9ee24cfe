"""Time attacking the runs of one θ0 (every method's run of a seed): θ0 searched per run
(the old path) vs once, read back from a shared storage (``original_storage``, the path
``attack.theta0_storage`` and ``benchmarks/attack_matrix.sh`` take).

The released models are synthetic and small (three Gaussian classes, ``--rows`` training
rows in ``--dims`` dimensions, a two-layer block on top; θ_I = θ0's block with its last
layer rescaled, one scale per "method"), so the ratio measures the search bookkeeping as
well as the trials; on real runs, where θ0's trials cost as much as θ_I's, the saving
approaches ``2 M / (M + 1)`` for M methods per seed (1.6× for M = 4) plus the weight-free
attackers, which are searched once per seed instead of twice per run.

    python benchmarks/bench_theta0_reuse.py [--methods M] [--rows N] [--dims D]

Prints ``methods=<M> per_run_s=<float> shared_s=<float> ratio=<float> same_numbers=<bool>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from condimmune.attacks.deep_cost import ExtractionFlops
from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import ReleasedModel, Task, run_deep_suite
from condimmune.attacks.deep_train import TaskTensors

ATTACKERS = ["linear-adam", "std-adam", "mlp-adam", "blocks-adam", "raw-adam", "scratch-adam"]
CLASSES = 3


def _task(gen: torch.Generator, rows: int, dims: int) -> TaskTensors:
    centres = 3.0 * torch.eye(dims)[:CLASSES]
    y = torch.arange(2 * rows) % CLASSES
    x = centres[y] + torch.randn(2 * rows, dims, generator=gen)
    return TaskTensors(x[:rows], y[:rows], x[rows:], y[rows:], CLASSES)


def _released(data: dict[Task, TaskTensors], scale: float, dims: int) -> ReleasedModel:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(dims, dims), nn.ReLU(), nn.Linear(dims, dims))
    with torch.no_grad():
        block[2].weight.mul_(scale)
    block.eval()
    with torch.no_grad():
        features = {
            t: TaskTensors(block(d.train_x), d.train_y, block(d.test_x), d.test_y, d.classes)
            for t, d in data.items()
        }
    flops = ExtractionFlops(0.0, 4.0 * dims * dims)
    return ReleasedModel(features, dims, data, data, data, block, block, flops)


def _untimed(suite: DeepAttackSuite) -> dict[str, object]:
    """The numbers of a suite without its wall-clock seconds."""
    return {
        name: [
            replace(a.harmful.original, seconds=0.0),
            replace(a.harmful.immunized, seconds=0.0),
        ]
        for name, a in suite.attackers.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", type=int, default=4)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--dims", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    data = {t: _task(gen, args.rows, args.dims) for t in Task}
    original = _released(data, 1.0, args.dims)
    immunized = [_released(data, 0.5 + m, args.dims) for m in range(args.methods)]
    base = DeepAttackOptions(
        trials=6, finetune_trials=2, probe_steps=40, finetune_steps=40, finetune_benign=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        timings, suites = [], []
        for shared in (False, True):
            start = time.perf_counter()
            runs = []
            for m, model in enumerate(immunized):
                options = replace(
                    base,
                    storage=f"sqlite:///{Path(tmp) / f'{shared}-{m}.db'}",
                    study_name=f"run{m}",
                    original_storage=f"sqlite:///{Path(tmp) / 'theta0.db'}" if shared else None,
                    original_study_name="theta0" if shared else None,
                )
                runs.append(run_deep_suite(ATTACKERS, original, model, options))
            timings.append(time.perf_counter() - start)
            suites.append(runs)
    same = all(_untimed(a) == _untimed(b) for a, b in zip(suites[0], suites[1], strict=True))
    print(
        f"methods={args.methods} per_run_s={timings[0]:.2f} shared_s={timings[1]:.2f} "
        f"ratio={timings[0] / timings[1]:.2f} same_numbers={same}"
    )


if __name__ == "__main__":
    main()
