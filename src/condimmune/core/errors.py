"""Exceptions and warnings raised by condimmune."""

from __future__ import annotations

import os
import string
from collections.abc import Mapping


class DegenerateSpectrumError(ValueError):
    """The spectrum asked for is undefined (zero matrix, rank < 2 for R_ill, ...)."""


class RankDeficientWarning(UserWarning):
    """A regularizer was evaluated over the non-zero spectrum of a rank-deficient matrix."""


class UserError(ValueError):
    """A problem the user can fix: what is wrong, where (a file or a config key), how to fix it.

    ``str(error)`` is ``"<what>: <where>; <fix>"``; the command line prints it as
    ``error: ...`` with exit code 2. Loaders raise it for a file they cannot use (wrong kind,
    damaged, truncated, non-finite values), naming the file and the config key that points
    at it.
    """

    def __init__(self, what: str, where: str | os.PathLike[str], fix: str = "") -> None:
        self.what, self.where, self.fix = what, os.fspath(where), fix
        super().__init__(f"{what}: {self.where}" + (f"; {fix}" if fix else ""))

    def __reduce__(self) -> tuple[type[UserError], tuple[str, str, str]]:  # picklable
        return (type(self), (self.what, self.where, self.fix))


class StaleFilesWarning(UserWarning):
    """Temporary files or directories left by an interrupted run were found and removed."""


class DamagedCacheWarning(UserWarning):
    """A cache file could not be read or failed its content checksum; it is rebuilt."""


class UncheckedInputWarning(UserWarning):
    """An input written before the record that would let it be checked (a ``sweep.csv``
    without its settings columns) was used as it is."""


class ArgumentError(ValueError):
    """An argument of a library function that the data (or the other arguments) rule out.

    Its message is a template: the ``{placeholders}`` that ``values`` does not fill are the
    names of the arguments at fault. ``str(error)`` shows those names as they are (a Python
    caller passed them), :meth:`naming` with other names: the command line shows the config
    keys that set them (:func:`condimmune.experiments.errors.config_keys`). ``arguments``
    lists them, in order.
    """

    def __init__(self, template: str, /, **values: object) -> None:
        self.template, self.values = template, values
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        self.arguments = tuple(dict.fromkeys(f for f in fields if f not in values))
        super().__init__(self.naming({}))

    def naming(self, names: Mapping[str, str]) -> str:
        """The message with each argument called ``names.get(argument, argument)``."""
        called = {a: names.get(a, a) for a in self.arguments}
        return self.template.format(**called, **self.values)

    def __reduce__(self) -> tuple[object, ...]:  # picklable (worker processes)
        return (_rebuild_argument_error, (self.template, self.values))


def _rebuild_argument_error(template: str, values: dict[str, object]) -> ArgumentError:
    return ArgumentError(template, **values)
