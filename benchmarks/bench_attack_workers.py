"""Time ``condimmune attack`` on one deep run: every search in this process on torch's
default threads (the path before ``attack.workers``, ``attack.workers=1``) against the
searches shared out among worker processes of one thread each (``--workers``, default one
per core), each on its own copy of the run (its own ``attack_studies.db``: nothing is read
back from the run's earlier attacks). ``--set`` goes to both attacks, e.g. a θ0 storage
that already holds θ0's searches, so that only θ_I's are timed, as in a matrix:

    python benchmarks/bench_attack_workers.py RUN_DIR [--workers N] [--out DIR] \\
        [--set attack.theta0_storage=sqlite:////path/theta0_studies.db ...]

``--out DIR`` keeps both attacked copies (``DIR/one-process``, ``DIR/workers``; default: a
temporary folder, removed).

Prints one line per attack and ``case=attack-workers cores=<n> workers=<n>
one_process_s=<f> workers_s=<f> ratio=<f> same_numbers=<bool>``. The numbers are the same
when both attacks compute with one thread (``--one-thread``); on more threads torch's
reductions round differently, and a search that follows other roundings may try other
settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from condimmune.attacks.registry import DeepAttacker
from condimmune.experiments.attack import attack_run_dir
from condimmune.experiments.pipelines.deep.attack_workers import attack_workers
from condimmune.experiments.threads import keep_freed_memory

_APART = {"storage", "original_storage", "wall_seconds", "seconds"}


def _numbers(document: Any) -> Any:
    """A suite's record without where its searches live and how long they took."""
    if isinstance(document, dict):
        return {k: _numbers(v) for k, v in document.items() if k not in _APART}
    if isinstance(document, list):
        return [_numbers(v) for v in document]
    return document


def _attack(run: Path, where: Path, sets: list[str], workers: int) -> tuple[float, Any]:
    shutil.copytree(run, where, ignore=shutil.ignore_patterns("attack_studies.db*"))
    start = time.perf_counter()
    attack_run_dir(where, [*sets, f"attack.workers={workers}"])
    seconds = time.perf_counter() - start
    suite = json.loads((where / "metrics.json").read_text())["attack_suite"]
    print(f"workers={workers} threads={torch.get_num_threads()} attack_s={seconds:.1f}")
    return seconds, _numbers(suite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--one-thread", action="store_true")
    parser.add_argument("--out", type=Path, help="keep the attacked copies here (a new folder)")
    args = parser.parse_args()
    keep_freed_memory()  # as `condimmune attack` does
    if args.one_thread:
        torch.set_num_threads(1)
    workers = attack_workers(args.workers, len(DeepAttacker))  # the attack caps it at its own
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        alone, first = _attack(args.run, out / "one-process", args.sets, 1)
        shared, second = _attack(args.run, out / "workers", args.sets, workers)
    cores = len(os.sched_getaffinity(0))
    print(
        f"case=attack-workers cores={cores} workers={workers} one_process_s={alone:.1f} "
        f"workers_s={shared:.1f} ratio={alone / shared:.2f} same_numbers={first == second}"
    )


if __name__ == "__main__":
    main()
