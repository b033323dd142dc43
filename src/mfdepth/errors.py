"""The error types that every layer may raise for bad user input (no layer imports the command line).

The command line (:mod:`mfdepth.cli`) prints these as one line with exit code 2, no traceback, together
with :class:`mfdepth.config.ConfigError`, :class:`mfdepth.data.errors.DataError`,
:class:`mfdepth.checkpoint.CheckpointError`, ``FileNotFoundError``,
:class:`mfdepth.training.loop.NonFiniteLossError` and :class:`mfdepth.training.loop.DepthCollapseError`.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""


class DeviceError(UserError, ValueError):
    """The requested device is not available here (a ``ValueError`` too, as before it had its own type)."""
