"""Re-run the golden cases (cases.yaml) with the installed condimmune and store their metrics.

Only for an intended change of results; say in the commit which numbers changed and why.
Usage: python tests/experiments/golden/regenerate.py [--out DIR] [--only ID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
AMES = HERE.parents[3] / "shared" / "data" / "ames-house-prices" / "train.csv"


# Pinned kernels, so that the numbers are the same on every x86-64 CI machine: one thread
# (reductions run in one fixed order), MKL's "compatible" code path (MKL_CBWR: the same
# rounding whatever SIMD the CPU has), ATen's baseline kernels instead of its AVX2/AVX-512
# ones, and oneDNN off (pinned_cli.py). Unpinned, the mnist-cnn and raw-pixel cases — κ of
# 1e9 to 1e12 amplify rounding — came out differently on an AVX-512 Intel CI machine than
# on the AMD machine that wrote their files (CNN benign-probe accuracy 0.88 → 0.90).
# Linear runs compute with numpy's and scipy's OpenBLAS (issue #30), which picks its kernels
# by CPU too: OPENBLAS_CORETYPE pins them to Haswell's (AVX2, on every x86-64 CI machine);
# unpinned, mnist-pair-condnum moved by 52 numbers between Haswell's and SkylakeX's kernels.
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OPENBLAS_CORETYPE": "Haswell",
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
}
CLI = [sys.executable, str(HERE / "pinned_cli.py")]


def run_case(case: dict, workdir: Path) -> dict:
    """Run one case (and its attack suite, if any) as a user would; return its metrics."""
    out = workdir / case["id"]
    args = [a.format(ames=AMES) for a in case["args"]]
    for cmd in (
        [*CLI, *args, "--out", str(out), "--no-progress"],
        *(
            [[*CLI, "attack", str(out), "--no-progress", *case["attack"]]]
            if "attack" in case
            else []
        ),
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--only", nargs="+", metavar="ID", help="only these cases (cases.yaml ids)")
    args = parser.parse_args()
    cases = yaml.safe_load((HERE / "cases.yaml").read_text())
    unknown = set(args.only or ()) - {case["id"] for case in cases}
    if unknown:
        parser.error(f"no such case in cases.yaml: {', '.join(sorted(unknown))}")
    cases = [case for case in cases if not args.only or case["id"] in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            metrics = run_case(case, Path(tmp))
            path = args.out / f"{case['id']}.json"
            path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
            print(path)


if __name__ == "__main__":
    main()
