"""``condimmune attack RUN_DIR``, for both families: read the run back, run the family's
attack suite with the run's attack options (changed with ``attack.*`` overrides), and record
the result in the run directory: ``metrics.json``, ``attack_report.md`` with its figures,
and an attack section of ``report.md`` (replaced on a re-run), all replaced together with
the run's manifest (:func:`~condimmune.experiments.manifest.update_run_files`: a kill
half-way leaves either the old files or the new ones). The run directory's lock is held
from reading the run to writing its reports: a concurrent invocation on the same run is
refused with a message, never interleaved with this one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from condimmune.core.errors import UserError
from condimmune.core.progress import ProgressCallback
from condimmune.experiments.config import ConfigError, load_config, resolve_config
from condimmune.experiments.manifest import update_run_files
from condimmune.experiments.pipeline import AttackOutcome, pipeline_for
from condimmune.experiments.report import page_markdown, replace_section, write_page
from condimmune.experiments.rundir import run_dir_lock
from condimmune.experiments.runner import metrics_json, read_run

__all__ = ["attack_run_dir", "attack_settings_note", "attack_settings_unlike_defaults"]


def attack_run_dir(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    on_progress: ProgressCallback | None = None,
) -> AttackOutcome:
    """Attack the run in ``run_dir`` (module docstring); ``overrides``: ``attack.KEY=VALUE``
    strings. Returns what was recorded and what the command prints. ``on_progress`` hears
    the suite (the attackers, at depth 1 each one's steps or trials), from after the run
    and the overrides are checked."""
    run_dir = Path(run_dir).resolve()
    with run_dir_lock(run_dir):
        loaded = read_run(run_dir, overrides)
        pipeline = pipeline_for(loaded.plan.family)
        with pipeline.named_by_config():
            outcome = pipeline.attack(loaded, on_progress=on_progress)
        section = page_markdown(outcome.page, with_title=False)

        def write(folder: Path) -> None:
            (folder / "metrics.json").write_text(metrics_json(outcome.metrics))
            write_page(folder, outcome.page, "attack_report.md")
            report = run_dir / "report.md"
            replace_section(report, pipeline.attack_section, section, into=folder / report.name)

        update_run_files(run_dir, write, unsealed=pipeline.unsealed_files)
    return outcome


def attack_settings_unlike_defaults(
    run_dir: str | Path, overrides: Sequence[str] = ()
) -> list[str]:
    """The ``attack.*`` settings of the run's ``config.yaml`` that differ from its
    experiment's defaults as they are now and that no override sets, each as
    ``"key=run's value (default now: value)"``: a run made before an experiment's defaults
    changed is attacked with its own settings, which may not be what its user expects (its
    searches then live under other study names than a new run's). Empty when the config does
    not load (reading the run then reports it)."""
    try:
        config = load_config(Path(run_dir) / "config.yaml")
        today = resolve_config(config.experiment, None, []).attack
    except (ConfigError, UserError, OSError):
        return []
    if type(today) is not type(config.attack):
        return []
    chosen = {o.split("=", 1)[0].strip().removeprefix("attack.") for o in overrides}
    now = today.model_dump(mode="json")
    return [
        f"{key}={value} (default now: {now[key]})"
        for key, value in config.attack.model_dump(mode="json").items()
        if key not in chosen and value != now[key]
    ]


def attack_settings_note(run_dir: str | Path, overrides: Sequence[str] = ()) -> str | None:
    """What ``condimmune attack`` prints before it starts when
    :func:`attack_settings_unlike_defaults` names a setting; ``None`` otherwise."""
    unlike = attack_settings_unlike_defaults(run_dir, overrides)
    if not unlike:
        return None
    return (
        f"note: the run's config.yaml sets attack.{', attack.'.join(unlike)}; the attack uses"
        " the run's settings (--set attack.KEY=VALUE to change one)"
    )
