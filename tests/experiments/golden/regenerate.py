"""Re-run the golden cases (cases.yaml) with the installed condimmune and store their metrics.

Only for an intended change of results; say in the commit which numbers changed and why.
Usage: python tests/experiments/golden/regenerate.py [--out DIR]
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


# One BLAS thread: reductions then run in one fixed order, so the numbers are reproducible.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_case(case: dict, workdir: Path) -> dict:
    """Run one case (and its attack suite, if any) as a user would; return its metrics."""
    out = workdir / case["id"]
    args = [a.format(ames=AMES) for a in case["args"]]
    cli = [sys.executable, "-m", "condimmune.cli"]
    for cmd in (
        [*cli, *args, "--out", str(out), "--no-progress"],
        *(
            [[*cli, "attack", str(out), "--no-progress", *case["attack"]]]
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
    args = parser.parse_args()
    cases = yaml.safe_load((HERE / "cases.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            metrics = run_case(case, Path(tmp))
            path = args.out / f"{case['id']}.json"
            path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
            print(path)


if __name__ == "__main__":
    main()
