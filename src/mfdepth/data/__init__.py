"""Datasets producing the Sample of docs/design.md: KITTI raw, the synthetic world, Cityscapes,
DDAD (DGP scenes), and the user's own folders and videos.

The names below are imported on first use, so ``import mfdepth.data`` (and ``mfdepth --help``) stays
free of torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_dataset": "mfdepth.data.factory",
    "DATASETS": "mfdepth.data.factory",
    "DataError": "mfdepth.data.errors",
    "SequenceDataset": "mfdepth.data.base",
    "FrameRecord": "mfdepth.data.base",
    "FrameRef": "mfdepth.data.base",
    "mask_path_for": "mfdepth.data.base",
    "collate_samples": "mfdepth.data.base",
    "NUM_SCALES": "mfdepth.data.base",
    "resolve_split_file": "mfdepth.data.splits",
    "export_ground_truth": "mfdepth.data.kitti",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mfdepth.data' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
