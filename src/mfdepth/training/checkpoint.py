"""Kept importable for existing code: checkpoints live in :mod:`mfdepth.checkpoint`."""

from mfdepth.checkpoint import *  # noqa: F403
from mfdepth.checkpoint import __all__  # noqa: F401
