"""Kept importable for existing code: checkpoints live in :mod:`mfdepth.checkpoint`."""

from mfdepth.checkpoint import (  # noqa: F401
    CheckpointError,
    load_checkpoint,
    make_meta,
    non_finite_entries,
    remove_stale_temporaries,
    save_checkpoint,
)
