"""Camera intrinsics for prediction: from the user's file or focal length, else from the checkpoint.

Every source ends up as a :class:`mfdepth.data.calibration.Intrinsics` (normalised, or pixels of a known
size), turned into pixels of each input frame by :func:`intrinsics_at_size`.

A checkpoint stores the camera it was trained with (``meta["intrinsics"]``, written by training from
:func:`mfdepth.data.camera.training_camera`); for a checkpoint written before that, the same function is
asked about its training config. Cityscapes and DDAD have one camera file per frame, so their checkpoints
name no camera and the user must give one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mfdepth.config import Config
from mfdepth.data.calibration import (
    Intrinsics,
    check_intrinsics,
    intrinsics_from_focal,
    load_intrinsics_file,
)
from mfdepth.data.camera import training_camera
from mfdepth.data.errors import DataError
from mfdepth.geometry import scale_intrinsics

log = logging.getLogger(__name__)


def intrinsics_at_size(intrinsics: Intrinsics, width: int, height: int) -> np.ndarray:
    """``(3, 3)`` float64 K in pixels of a ``width`` x ``height`` image.

    Normalised K is scaled row-wise (Monodepth2 convention, as the data layer reads it); pixel K of a
    known size is rescaled with the pixel-centre convention of :func:`mfdepth.geometry.scale_intrinsics`;
    pixel K of no stated size is taken to be in pixels of the image itself.
    """
    K = np.asarray(intrinsics.K, dtype=np.float64)
    if intrinsics.normalized:
        K = K.copy()
        K[0] *= width
        K[1] *= height
        return K
    if intrinsics.size is None or tuple(intrinsics.size) == (width, height):
        return K.copy()
    ref_width, ref_height = intrinsics.size
    return scale_intrinsics(torch.from_numpy(K), width / ref_width, height / ref_height).numpy()


def user_intrinsics(
    intrinsics_file: str | Path | None, focal_px: float | None, K_file: Path | None, size: tuple[int, int]
) -> Intrinsics | None:
    """Intrinsics the user gave, in order: a YAML/JSON/text file, a focal length, a ``K.txt`` by the frames.

    ``size`` = (width, height) of the frames, the size a focal length or a size-less pixel K refers to.
    Returns None when the user gave none.
    """
    if intrinsics_file:
        return _file_intrinsics(intrinsics_file, size)
    if focal_px is not None:
        return Intrinsics(intrinsics_from_focal(focal_px, *size), False, size)
    if K_file is not None:
        return _file_intrinsics(K_file, size)
    return None


def _file_intrinsics(path: str | Path, size: tuple[int, int]) -> Intrinsics:
    """An intrinsics file's K; pixel K of no stated size is checked against, and refers to, ``size``."""
    found = load_intrinsics_file(path)
    if found.normalized:
        return found
    if found.size is None:
        check_intrinsics(found.K, f"intrinsics file {path}", size)
    return Intrinsics(found.K, False, found.size or size)


def checkpoint_intrinsics(meta: dict, config: Config, checkpoint: str | Path) -> tuple[Intrinsics, str]:
    """The camera a checkpoint was trained with, and a phrase saying where it came from.

    Looks at ``meta["intrinsics"]`` (``{"K", "normalized", "width", "height"}``) first, then at the
    training config's data section. Raises :class:`DataError` when the checkpoint names no camera.
    """
    stored = meta.get("intrinsics")
    if isinstance(stored, dict) and "K" in stored:
        size = (int(stored["width"]), int(stored["height"])) if "width" in stored and "height" in stored else None
        normalized = bool(stored.get("normalized", False))
        K = check_intrinsics(stored["K"], f"the camera stored in checkpoint {checkpoint}", size, normalized)
        return Intrinsics(K, normalized, size), str(stored.get("source", "the checkpoint's stored camera"))
    found = training_camera(config.data)  # a checkpoint written before training stored its camera
    if found is not None:
        return found
    data = config.data
    raise DataError(
        f"checkpoint {checkpoint} names no camera (trained on '{data.dataset}' data with per-frame or "
        "unreachable intrinsics): pass --intrinsics K.yaml|K.json or --focal PX"
    )
