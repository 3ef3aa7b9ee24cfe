"""Wall time of the closed-form immunizer vs condnum training, each to reach its own RIR.

    python benchmarks/bench_closed_form.py [--ames PATH/train.csv]

Cases: house price (Ames, default settings: collinear columns dropped) and MNIST 1 → 7
(packaged subset, 64 joint principal components). Prints one line per case:
``case=<name> closed_form_ms=<float> closed_form_rir=<float> condnum_ms=<float>
condnum_rir=<float> ratio=<float>`` with ratio = condnum time / closed-form time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from condimmune import closed_form_immunizer, immunization_condition_numbers
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.experiments.pipeline import resolve_plan
from condimmune.linear.data import load_task_data
from condimmune.linear.train import train_linear

DEFAULT_AMES = Path(__file__).resolve().parents[2] / "shared/data/ames-house-prices/train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ames", type=Path, default=DEFAULT_AMES)
    args = parser.parse_args()
    cases = {"mnist-1-7": default_config("mnist-pair")}
    if args.ames.is_file():
        cases["house-price"] = apply_overrides(
            default_config("house-price"), [f"data.root={args.ames}"]
        )
    else:
        print(f"# house price skipped: {args.ames} not found (pass --ames)")
    for name, cfg in cases.items():
        plan = resolve_plan(cfg)
        data = load_task_data(plan.options.source, plan.options.data, cfg.seed)
        xp, xh = data.benign.x_train, data.harmful.x_train
        start = time.perf_counter()
        weight = closed_form_immunizer(xp, xh)
        closed_ms = 1000 * (time.perf_counter() - start)
        closed_rir = immunization_condition_numbers(xp, xh, weight).rir
        start = time.perf_counter()
        options = plan.options.train
        model, _ = train_linear(data, options, seed=cfg.seed, progress=False)
        condnum_ms = 1000 * (time.perf_counter() - start)
        condnum_rir = immunization_condition_numbers(xp, xh, model.weight).rir
        print(
            f"case={name} closed_form_ms={closed_ms:.1f} closed_form_rir={closed_rir:.2f} "
            f"condnum_ms={condnum_ms:.1f} condnum_rir={condnum_rir:.2f} "
            f"ratio={condnum_ms / closed_ms:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
