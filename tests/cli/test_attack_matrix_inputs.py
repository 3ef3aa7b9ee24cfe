"""`condimmune attack-matrix` refuses runs that do not mix (issue 26 §3): a seed twice,
different attack settings or attackers, different configs, files that do not belong to
their run, non-finite numbers; each with exit code 2, an error naming the run and the
setting, and no output directory. Built from the kept MobileNetV2 metrics (real records),
given a config.yaml and a manifest where a case needs a full run directory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from _cli_support import error_line, invoke, reseal

from condimmune.experiments.config import apply_overrides, config_to_dict, default_config

KEPT = Path(__file__).resolve().parents[2] / "docs/data/attack-matrix/mobilenet-fashion-mnist"
EXPERIMENT = "mobilenet-fashion-mnist"


def kept(method: str, seed: int, into: Path, name: str | None = None) -> Path:
    """A copy of a kept run's metrics.json in ``into/<name>``."""
    target = into / (name or f"{method}-s{seed}")
    target.mkdir(parents=True)
    shutil.copyfile(
        KEPT / f"{EXPERIMENT}-{method}-s{seed}" / "metrics.json", target / "metrics.json"
    )
    return target


def sealed(method: str, seed: int, into: Path, *sets: str) -> Path:
    """A kept run made a full run directory: its config (with ``sets``) and a manifest."""
    run = kept(method, seed, into)
    config = apply_overrides(
        default_config(EXPERIMENT), [f"train.method={method}", f"seed={seed}", *sets]
    )
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    reseal(run)
    return run


def edit_metrics(run: Path, change: Callable[[dict], object]) -> None:
    document = json.loads((run / "metrics.json").read_text())
    change(document)
    (run / "metrics.json").write_text(json.dumps(document))


def duplicate_seed(tmp: Path) -> str:
    kept("condnum", 0, tmp)
    kept("condnum", 0, tmp, name="condnum-s0-again")
    return "seed 0"


def other_trials(tmp: Path) -> str:
    kept("condnum", 0, tmp)
    run = kept("condnum", 1, tmp)
    edit_metrics(run, lambda d: d["attack_suite"]["settings"].update(trials=5))
    return "attack.trials=5"


def fewer_attackers(tmp: Path) -> str:
    kept("none", 0, tmp)
    run = kept("none", 1, tmp)
    edit_metrics(run, lambda d: d["attack_suite"]["attackers"].pop("linear-gd"))
    return "linear-gd"


def not_finite(tmp: Path) -> str:
    # an attacker's slowdown: the stored worst case is recomputed from these (rescored)
    run = kept("imma", 0, tmp)
    edit_metrics(
        run,
        lambda d: d["attack_suite"]["attackers"]["linear-gd"]["harmful"].update(
            slowdown=float("nan")
        ),
    )
    return "attack_suite.attackers.linear-gd.harmful.slowdown"


def other_config(tmp: Path) -> str:
    sealed("condnum", 0, tmp)
    sealed("none", 1, tmp, "data.test_per_class=50")
    return "data.test_per_class=50"


def changed_after_the_run(tmp: Path) -> str:
    run = sealed("condnum", 0, tmp)
    edit_metrics(run, lambda d: d.update(wall_seconds=1.0))
    return "metrics.json"


CASES: dict[str, Callable[[Path], str]] = {
    "seed-twice": duplicate_seed,
    "other-attack-trials": other_trials,
    "other-attackers": fewer_attackers,
    "non-finite-slowdown": not_finite,
    "other-config": other_config,
    "metrics-changed-after-the-run": changed_after_the_run,
}


@pytest.mark.parametrize("setup", CASES.values(), ids=CASES.keys())
def test_runs_that_do_not_mix_are_refused(setup: Callable[[Path], str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    named = setup(runs)
    result = invoke("attack-matrix", runs, "--out", tmp_path / "report")
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert named in line and str(runs) in line, line
    assert not (tmp_path / "report").exists()


def test_runs_that_differ_only_in_where_and_how_fast_are_combined(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sealed("condnum", 0, runs, "model.cache_dir=/somewhere", "threads=2")
    sealed("condnum", 1, runs, "data.num_workers=3")
    kept("condnum", 2, runs)
    result = invoke("attack-matrix", runs, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "3 runs, 1 a bare metrics.json" in result.output  # the bare metrics.json, said so
    text = (tmp_path / "report" / "attack_matrix.md").read_text()
    assert "| runs (seeds) | 3 (0, 1, 2) |" in text


def test_a_single_run_cell_says_so_instead_of_plus_minus_zero(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    kept("condnum", 0, runs)
    assert invoke("attack-matrix", runs, "--out", tmp_path / "report").exit_code == 0
    text = (tmp_path / "report" / "attack_matrix.md").read_text()
    assert "(1 run)" in text and "± 0 |" not in text


def test_variants_of_a_method_are_combined_apart(tmp_path: Path) -> None:
    """Runs whose metrics.json record other method options (``--set method.*``) are another
    column, not more seeds of the same one, and the same seed of each is no duplicate."""
    runs = tmp_path / "runs"
    kept("condnum", 0, runs)
    kept("condnum", 1, runs)
    for seed in (0, 1):
        variant = kept("condnum", seed, runs, name=f"heavier-s{seed}")
        edit_metrics(variant, lambda d: d.update(method_options={"harmful_weight": 3.0}))
    result = invoke("attack-matrix", runs, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "attack_matrix.md").read_text()
    assert "| attacker | condnum | condnum (harmful_weight=3) |" in text
    assert "| runs (seeds) | 2 (0, 1) | 2 (0, 1) |" in text


CLUTTERED = KEPT.parent / "mnist-cnn-cluttered"


def test_the_prefix_ceilings_are_combined_per_tap_where_runs_measured_them(tmp_path: Path) -> None:
    """Eq. Y6 from runs attacked with attack.prefix_curve beside a run without it (the
    option changes no other number, so the runs mix); unreached points are lower bounds."""
    runs = tmp_path / "runs"
    points = {
        0: [(2.0, True), (6.0, True)],
        1: [(4.0, True), (8.0, False)],
    }
    for seed, values in points.items():
        run = runs / f"s{seed}"
        run.mkdir(parents=True)
        source = CLUTTERED / f"mnist-cnn-cluttered-none-s{seed}" / "metrics.json"
        document = json.loads(source.read_text())
        stick = document["attack_suite"]["yardstick"]
        base = stick["cheapest_original"]["flops"]
        stick["prefix_curve"] = [
            {
                "tap": tap,
                "cost": {
                    "attacker": f"keep-{tap}",
                    "flops": ratio * base,
                    "steps": 100 if reached else None,
                    "reached": reached,
                    "budget_steps": 800,
                },
                "ceiling": ratio,
            }
            for tap, (ratio, reached) in zip(("block1", "block2"), values, strict=True)
        ]
        document["attack_suite"]["settings"]["prefix_curve"] = True
        (run / "metrics.json").write_text(json.dumps(document))
    run = runs / "s2"
    run.mkdir()
    shutil.copyfile(
        CLUTTERED / "mnist-cnn-cluttered-none-s2" / "metrics.json", run / "metrics.json"
    )
    result = invoke("attack-matrix", runs, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "attack_matrix.md").read_text()
    row = "| C(k): θ0 kept through tap k, re-initialised after it |"
    assert f"{row} block1 3 ± 1.4; block2 ≥ 7 ± 1.4 |" in text
    plain = invoke("attack-matrix", run, "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    assert "C(k)" not in (tmp_path / "plain" / "attack_matrix.md").read_text()


def test_an_attack_with_the_prefix_curve_keeps_the_earlier_attackers() -> None:
    """Measuring the prefix ceilings changes no attacker's numbers: an attack that adds them
    merges with the earlier one as an attack under the same settings would; another trial
    budget does not."""
    from dataclasses import replace

    from condimmune.attacks.deep_headline import DeepAttackSuite
    from condimmune.experiments.pipelines.deep.attack import _merged

    source = CLUTTERED / "mnist-cnn-cluttered-none-s0" / "metrics.json"
    earlier = DeepAttackSuite.from_json(json.loads(source.read_text())["attack_suite"])
    some = dict(list(earlier.attackers.items())[:3])
    with_curve = replace(
        earlier, attackers=some, settings=replace(earlier.settings, prefix_curve=True)
    )
    merged, dropped = _merged(earlier, with_curve)
    assert dropped == [] and set(merged.attackers) == set(earlier.attackers)
    other = replace(with_curve, settings=replace(with_curve.settings, trials=3))
    assert _merged(earlier, other)[1] == sorted(set(earlier.attackers) - set(some))
