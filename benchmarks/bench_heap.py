"""Time MobileNetV2 training steps (AdamW, batch 64, 64 × 64 pixels, every 10th step followed
by an evaluation pass over 1,000 images in batches of 256, as a whole-network attacker's
trial runs) with glibc's malloc at its defaults and with the heap kept
(:func:`condimmune.experiments.threads.keep_freed_memory`, what every deep process of the
CLI does), each in its own process, one thread, alternated ``--repeats`` times.

    python benchmarks/bench_heap.py [--steps 20] [--repeats 2]

Prints one line per process (CPU seconds, of them in the kernel, minor page faults) and
``case=heap default_cpu_s=<f> kept_cpu_s=<f> ratio=<f>`` over the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

STEPS = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    from condimmune.experiments.threads import keep_freed_memory
    assert keep_freed_memory()
from condimmune.deep.backbones import build_model
model = build_model("mobilenet-v2", num_classes=10, image_size=64, seed=0)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
gen = torch.Generator().manual_seed(0)
x, y = torch.rand(64, 3, 64, 64, generator=gen), torch.randint(0, 10, (64,), generator=gen)
held_out = torch.rand(1000, 3, 64, 64, generator=gen)
before = resource.getrusage(resource.RUSAGE_SELF)
for step in range(int(sys.argv[2])):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x)[1], y).backward()
    opt.step()
    if step % 10 == 9:
        model.eval()
        with torch.no_grad():
            for i in range(0, 1000, 256):
                model(held_out[i : i + 256])
        model.train()
after = resource.getrusage(resource.RUSAGE_SELF)
user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
print(user + system, system, after.ru_minflt - before.ru_minflt)
"""


def _one(mode: str, steps: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode, str(steps)], capture_output=True, text=True, check=True
    ).stdout.split()
    cpu, system, faults = float(out[0]), float(out[1]), int(out[2])
    print(f"mode={mode} cpu_s={cpu:.2f} kernel_s={system:.2f} page_faults={faults}")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"default": [], "kept": []}
    for _ in range(args.repeats):
        for mode in times:
            times[mode].append(_one(mode, args.steps))
    default, kept = (statistics.median(times[m]) for m in ("default", "kept"))
    print(f"case=heap default_cpu_s={default:.2f} kept_cpu_s={kept:.2f} ratio={default / kept:.2f}")


if __name__ == "__main__":
    main()
