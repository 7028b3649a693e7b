"""Errors raised by datadistill.

Every error a user can cause by bad input derives from :class:`DatadistillError`; the command
line prints its message (which says what to do) and exits with status 2, without a traceback.
"""

from __future__ import annotations


class DatadistillError(Exception):
    """Base class of the errors caused by bad input or bad files; the message says what to do."""


class UnknownNameError(DatadistillError, KeyError):
    """A dataset, network, method, protocol or preset name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(DatadistillError, ValueError):
    """An invalid parameter value (IPC out of range, bad shape, bad option combination)."""


class DataError(DatadistillError, ValueError):
    """A dataset that is missing, truncated or corrupt."""


class ArtifactError(DatadistillError, ValueError):
    """A synthetic-set file that is corrupt, from another version, or holds invalid values."""
