"""Exceptions and warnings raised by condimmune."""

from __future__ import annotations

import os


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
