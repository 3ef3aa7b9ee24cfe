"""Re-run the golden cases (cases.yaml) with the installed condimmune and store their metrics.

Only for an intended change of results; say in the commit which numbers changed and why.
Usage: python tests/experiments/golden/regenerate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
AMES = HERE.parents[3] / "shared" / "data" / "ames-house-prices" / "train.csv"


def run_case(case: dict, workdir: Path) -> dict:
    out = workdir / case["id"]
    args = [a.format(ames=AMES) for a in case["args"]]
    cmd = [sys.executable, "-m", "condimmune.cli", *args, "--out", str(out), "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
    if "attack" in case:
        attack = [sys.executable, "-m", "condimmune.cli", "attack", str(out), "--no-progress"]
        subprocess.run([*attack, *case["attack"]], check=True, capture_output=True)
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
