"""Time the deep attack's setup on ``mobilenet-fashion-mnist``'s shapes: what an attack of a
run with a frozen prefix computes before its first search (the images stacked, both
models' released forms with their taps), the old way against the new, in one process, one
thread.

Old (before this benchmark): the images were stacked by a pass through θ0's prefix whose
activations were thrown away, and each model's taps came from a whole forward pass of every
image. New (:mod:`condimmune.deep.surface`): the images are stacked alone
(``task_images``), θ0's taps inside the prefix come from one pass through it, θ_I reads
those from θ0's (``released_model(like=...)``, the two prefixes being equal) and passes
only the prefix activations through its own blocks. Both read the prefix activations the
run cached, as an attack does. The models are MobileNetV2 at random initialisation (the
timing does not depend on the weights) with 2 immunized blocks, θ_I's blocks perturbed;
the taps are compared.

    python benchmarks/bench_attack_setup.py [--images 500] [--size 64]

Prints ``case=attack-setup images=<n> old_s=<f> new_s=<f> ratio=<f> taps_max_abs_diff=<e>``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.utils.data import TensorDataset

from condimmune.attacks.deep_suite import Task
from condimmune.attacks.deep_train import TaskTensors
from condimmune.deep.backbones import DeepModel, build_model
from condimmune.deep.surface import TaskImages, prefix_tensors, released_model, task_images
from condimmune.deep.taps import record_taps
from condimmune.methods.tap_adversary import pool_activations


def _tasks(n: int, size: int) -> dict[Task, TaskImages]:
    gen = torch.Generator().manual_seed(0)

    def split(rows: int) -> TensorDataset:
        x = torch.rand(rows, 3, size, size, generator=gen)
        return TensorDataset(x, torch.randint(0, 10, (rows,), generator=gen))

    return {t: TaskImages(split(n), split(n // 2), 10) for t in Task}


def _whole_pass_taps(
    model: DeepModel, images: dict[Task, TaskTensors], batch: int
) -> dict[Task, TaskTensors]:
    """The old taps: every image through the whole body, each tap pooled."""

    def tapped(x: torch.Tensor) -> torch.Tensor:
        rows = []
        with torch.no_grad(), record_taps(model) as taps:
            for i in range(0, len(x), batch):
                taps.clear()
                model.body(x[i : i + batch])
                rows.append(torch.cat([pool_activations(t) for t in taps], dim=1))
        return torch.cat(rows).double()

    return {
        t: TaskTensors(tapped(d.train_x), d.train_y, tapped(d.test_x), d.test_y, d.classes)
        for t, d in images.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="training images per task")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    original = build_model("mobilenet-v2", num_classes=10, image_size=args.size, seed=0).eval()
    immunized = copy.deepcopy(original)
    with torch.no_grad():
        for p in immunized.body.features[16:].parameters():
            p.mul_(0.9)
    tasks, bs = _tasks(args.images, args.size), args.batch
    acts = prefix_tensors(original, tasks, batch_size=bs)[0]  # the run's prefix cache

    start = time.perf_counter()
    _, images = prefix_tensors(original, tasks, batch_size=bs, keep_images=True)
    assert images is not None
    old = [
        released_model(m, acts, images, batch_size=bs, taps=False) for m in (original, immunized)
    ]
    old_taps = [_whole_pass_taps(m, images, bs) for m in (original, immunized)]
    old_s = time.perf_counter() - start

    start = time.perf_counter()
    stacked = task_images(tasks, batch_size=bs)
    first = released_model(original, acts, stacked, batch_size=bs)
    second = released_model(immunized, acts, stacked, batch_size=bs, like=first)
    new_s = time.perf_counter() - start

    diff = 0.0
    for before, after in zip(old_taps, (first.taps, second.taps), strict=True):
        assert after is not None
        for t in Task:
            diff = max(diff, float((before[t].train_x - after[t].train_x).abs().max()))
    assert old[1].features[Task.HARMFUL].train_x.equal(second.features[Task.HARMFUL].train_x)
    print(
        f"case=attack-setup images={args.images} size={args.size} old_s={old_s:.2f} "
        f"new_s={new_s:.2f} ratio={old_s / new_s:.2f} taps_max_abs_diff={diff:.1e}"
    )


if __name__ == "__main__":
    main()
