"""Building configs: defaults, dicts, YAML files and ``--set`` overrides."""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from condimmune.core.errors import UserError
from condimmune.experiments.config.errors import (
    ConfigError,
    _echo,
    _kind,
    _one_line,
    _printable,
    _type_hint,
    _unknown,
    _valid_keys,
)
from condimmune.experiments.config.families import FAMILIES
from condimmune.experiments.config.fields import method_options_model
from condimmune.experiments.config.schema import Config, DeepExperimentConfig, ExperimentConfig
from condimmune.experiments.registry import (
    Experiment,
    ExperimentSpec,
    experiment_defaults,
    experiment_spec,
)
from condimmune.experiments.yaml_reading import BOOL_TEXT, INT_TEXT, NULL_TEXT, read_yaml
from condimmune.methods.options import _FLOAT_TEXT

_R = TypeVar("_R")
_P = ParamSpec("_P")


def _config_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Every problem with the config ``fn`` builds is a :class:`ConfigError` (the registries'
    own ``ValueError`` for an unknown experiment or method included)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    return wrapper


# -------------------------------------------------------------------------- public API
@_config_errors
def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a config (linear or deep, by its ``experiment``, default
    ``mnist-pair``); unknown keys, wrong types and bad values raise a one-line ``ValueError``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping, got {_kind(data)}")
    spec = experiment_spec(data.get("experiment", Experiment.MNIST_PAIR.value))
    return _validate(FAMILIES[spec.family].config, dict(data))


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain dicts of str/int/float/bool/None, in field order (what
    ``config.yaml`` holds; :func:`config_from_dict` reads it back)."""
    dumped: dict[str, Any] = config.model_dump(mode="python")
    return dumped


@_config_errors
def default_config(experiment: Experiment | str) -> Config:
    """The registered defaults of an experiment."""
    spec = experiment_spec(experiment)
    return config_from_dict({"experiment": spec.name.value, **experiment_defaults(spec.name)})


def _merge(base: dict[str, Any], update: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _ignored_error(spec: ExperimentSpec, dotted: str, value: object) -> ConfigError | None:
    """The error for ``value`` given to ``dotted``, a key ``spec`` does not read (``None``:
    ``value`` is the one it accepts). Every config is written with every key, so a key an
    experiment does not read is accepted at the value its defaults give it (what its
    ``config.yaml`` holds), in a file and in ``--set`` alike, and refused at any other."""
    section, name = dotted.split(".")
    default = getattr(getattr(default_config(spec.name), section), name)
    if value == default and type(value) is type(default):
        return None
    shown = "null" if default is None else repr(default)  # as a config file writes it
    return ConfigError(
        f"{dotted} is not read by experiment {spec.name.value}; remove it "
        f"(or leave it at its default {shown})"
    )


def _refuse_changed_ignored(raw: Mapping[str, Any], spec: ExperimentSpec) -> None:
    """The file's ``raw`` mapping checked for keys ``spec`` does not read, before the rest
    (as ``--set`` checks them first: "not read" says more than a type error would)."""
    for dotted in sorted(spec.ignores):
        section, name = dotted.split(".")
        values = raw.get(section)
        if isinstance(values, Mapping) and name in values:
            error = _ignored_error(spec, dotted, values[name])
            if error is not None:
                raise error


@_config_errors
def load_config(path: str | Path, experiment: Experiment | str | None = None) -> Config:
    """Load a YAML file over the experiment's defaults (the file may name the experiment).

    The file is read strictly (:mod:`~condimmune.experiments.yaml_reading`: no repeated
    keys, no anchors, size and depth limits, ``012`` is text, ``yes`` is not a boolean). A
    run's ``config.yaml`` loads as is (its ``versions`` mapping, what ran, is not part of
    the recipe). A key the experiment does not read (:attr:`ExperimentSpec.ignores`) may
    only hold its default, as in :func:`apply_overrides`.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file")
    try:
        raw = read_yaml(path, "fix the file (README.md, Config files)")
    except UserError as exc:
        raise ConfigError(str(exc)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, got {_kind(raw)}"
        )
    if isinstance(raw.get("versions"), dict):
        raw = {k: v for k, v in raw.items() if k != "versions"}
    try:
        spec = experiment_spec(raw.get("experiment", experiment or Experiment.MNIST_PAIR.value))
        base = config_to_dict(default_config(spec.name))
        train = raw.get("train")
        if (
            isinstance(train, dict)
            and train.get("method", base["train"]["method"]) != (base["train"]["method"])
        ):  # another method: its own options (and this experiment's defaults for them)
            base.pop("method")
        _refuse_changed_ignored(raw, spec)
        config = config_from_dict(_merge(base, raw))
    except ValueError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return config


# ---------------------------------------------------------------------- --set overrides
def _parse_text(raw: str, annotation: Any, key: str) -> Any:
    """``raw`` read as the field's declared type, by the rules of a plain value in a config
    file (:mod:`~condimmune.experiments.yaml_reading`): the same text is the same value."""
    args = typing.get_args(annotation)
    if args and type(None) in args and typing.get_origin(annotation) is not Literal:
        if raw.strip() in NULL_TEXT:
            return None
        (annotation,) = (a for a in args if a is not type(None))
    if annotation is str or typing.get_origin(annotation) is Literal:
        return raw
    text = raw.strip()
    if annotation is bool:
        if text in BOOL_TEXT:
            return BOOL_TEXT[text]
        raise ConfigError(f"{key} must be of type bool, got {_echo(raw)}{_type_hint('bool', raw)}")
    if annotation is int:
        if INT_TEXT.match(text):
            try:
                return int(text, 10)
            except ValueError:  # more digits than Python converts
                raise ConfigError(
                    f"invalid value for {key}: {_echo(raw)} (too many digits)"
                ) from None
        raise ConfigError(f"{key} must be of type int, got {_echo(raw)}{_type_hint('int', raw)}")
    if annotation is float:
        if _FLOAT_TEXT.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return value
            raise ConfigError(f"invalid value for {key}: {_echo(raw)} (must be a finite number)")
        try:
            float(text)
        except ValueError:
            raise ConfigError(f"{key} must be of type float, got {_echo(raw)}") from None
        raise ConfigError(f"invalid value for {key}: {_echo(raw)} (must be a finite number)")
    raise ConfigError(f"{key} cannot be set from the command line")


def _settable(
    cls: type[BaseModel], key: str, sections: Mapping[str, type[BaseModel]]
) -> tuple[list[str], FieldInfo]:
    """The path and field of a dotted leaf key, or a ``ValueError`` listing the valid keys.
    ``sections``: the schema of a top-level section whose schema depends on the config (the
    ``method`` section is that of ``train.method``'s options)."""
    parts = key.split(".")
    owner: type[BaseModel] = cls
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        info = owner.model_fields.get(part)
        if info is None:
            return _raise_unknown(key, owner, prefix)
        nested = sections.get(part, info.annotation) if depth == 0 else info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            if depth == len(parts) - 1:
                raise ConfigError(
                    f"unknown config key: {_printable(key)} is a section, set one of its keys: "
                    f"{_valid_keys(nested, key)}"
                )
            owner = nested
        elif depth < len(parts) - 1:
            raise ConfigError(
                f"unknown config key: {_printable(key)}; "
                f"{'.'.join(parts[: depth + 1])} is a value, not a section"
            )
        else:
            return parts, info
    return _raise_unknown(key, owner, "")  # pragma: no cover - parts is never empty


def _raise_unknown(key: str, owner: type[BaseModel], prefix: str) -> typing.NoReturn:
    raise ConfigError(_unknown(prefix, [key], owner))


@_config_errors
def apply_overrides(config: Config, assignments: Sequence[str]) -> Config:
    """A validated copy of ``config`` with ``key=value`` strings applied (dotted keys, e.g.
    ``train.epochs=5``), each value read as its field's declared type by the text rules of a
    config file (:mod:`~condimmune.experiments.yaml_reading`): ``str`` fields take the text as
    is (``null``/``~``/empty → ``None`` where allowed), ``int`` decimal digits without a
    leading zero (``012`` is refused, as in a file), ``float`` finite decimals (``1e-3``,
    ``012`` → 12.0), ``bool`` ``true``/``false`` (``yes`` and ``1`` are refused, as in a file).
    ``experiment`` is refused, and so is a key the experiment does not read unless it is
    given the value the experiment's ``config.yaml`` holds for it (its default, as
    :func:`load_config` accepts it): every key a run writes can be given back. ``method.*`` keys
    are the options of the method the config has after the other keys are applied: a new
    ``train.method`` starts from its own defaults (and this experiment's defaults for it)."""
    if isinstance(assignments, str):
        raise ConfigError(
            f"overrides must be a list of key=value strings, got {_echo(assignments)}"
        )
    cls: type[ExperimentConfig] | type[DeepExperimentConfig] = type(config)
    spec = experiment_spec(config.experiment)
    data = config_to_dict(config)
    parsed: list[tuple[str, str]] = []
    for item in assignments:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set expects key=value, got {_echo(item)}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "experiment":
            raise ConfigError(
                "the experiment is chosen by the command's EXPERIMENT argument, not --set"
            )
        parsed.append((key, raw))
    method_keys = [(k, v) for k, v in parsed if k.split(".", 1)[0] == "method"]
    for key, raw in (p for p in parsed if p not in method_keys):
        _assign(data, cls, key, raw, spec, {})
    if data["train"]["method"] != config.train.method:
        data["method"] = {}
    if method_keys:
        model = method_options_model(data["train"]["method"], spec.family)
        if model is None:  # an unknown train.method: its own error
            _validate(cls, data)
            raise ConfigError(f"train.method {data['train']['method']!r} has no options")
        for key, raw in method_keys:
            _assign(data, cls, key, raw, spec, {"method": model})
    return _validate(cls, data)


def _assign(
    data: dict[str, Any],
    cls: type[BaseModel],
    key: str,
    raw: str,
    spec: ExperimentSpec,
    sections: Mapping[str, type[BaseModel]],
) -> None:
    """Set the dotted ``key`` of ``data`` to ``raw`` read as its field's declared type."""
    parts, info = _settable(cls, key, sections)
    if key in spec.ignores:  # "not read" says more than a type error would
        try:
            given: object = _parse_text(raw, info.annotation, key)
        except ConfigError:
            given = raw
        error = _ignored_error(spec, key, given)
        if error is not None:
            raise error
    value = _parse_text(raw, info.annotation, key)
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _validate(cls: type[ExperimentConfig] | type[DeepExperimentConfig], data: Any) -> Config:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, cls)) from None


@_config_errors
def resolve_config(
    experiment: str | None,
    config_file: str | Path | None,
    sets: Sequence[str],
    *,
    seed: int | None = None,
) -> Config:
    """The command line's config: ``config_file`` (YAML over the experiment's defaults) or
    the defaults of ``experiment`` (default ``mnist-pair``), then ``seed`` and the ``--set``
    overrides; a file for another experiment than ``experiment`` is refused."""
    if config_file is not None:
        config = load_config(config_file, experiment)
        if experiment is not None and config.experiment != experiment:
            raise ConfigError(
                f"config file {config_file} is for experiment {config.experiment!r}, "
                f"not {experiment!r}; drop the EXPERIMENT argument or the --config file"
            )
    else:
        config = default_config(experiment or Experiment.MNIST_PAIR.value)
    if seed is not None:
        sets = [*sets, f"seed={seed}"]
    return apply_overrides(config, sets)
