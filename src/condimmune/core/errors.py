"""Exceptions and warnings raised by condimmune."""

from __future__ import annotations


class DegenerateSpectrumError(ValueError):
    """The spectrum asked for is undefined (zero matrix, rank < 2 for R_ill, ...)."""


class RankDeficientWarning(UserWarning):
    """A regularizer was evaluated over the non-zero spectrum of a rank-deficient matrix."""
