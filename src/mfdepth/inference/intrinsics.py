"""Camera intrinsics for prediction: from the user's file or focal length, else from the checkpoint.

Every source ends up as a :class:`mfdepth.data.calibration.Intrinsics` (normalised, or pixels of a known
size), turned into pixels of each input frame by :func:`intrinsics_at_size`.

A checkpoint carries its training config, and through it the camera it was trained with: the synthetic
world's camera, Monodepth2's KITTI camera (or the first date's ``P_rect_02`` when the KITTI root is
reachable), or a folder's intrinsics file / focal length. Cityscapes and DDAD have one camera file per
frame, so their checkpoints name no camera and the user must give one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mfdepth.config import Config
from mfdepth.data.calibration import (
    MONODEPTH2_NORMALIZED_K,
    Intrinsics,
    check_intrinsics,
    intrinsics_from_focal,
    load_intrinsics_file,
    load_kitti_calibration,
)
from mfdepth.data.errors import DataError
from mfdepth.data.files import image_size, list_images
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


def _first_frame_size(root: Path) -> tuple[int, int] | None:
    """``(width, height)`` of the first frame of a training folder, when it is reachable."""
    if not root.is_dir():
        return None
    for folder in (root / "images", root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if folder.is_dir():
            frames = list_images(folder)
            if frames:
                return image_size(frames[0])
    return None


def _kitti_intrinsics(root: Path) -> tuple[Intrinsics, str]:
    dates = sorted(p for p in root.glob("*") if (p / "calib_cam_to_cam.txt").is_file()) if root.is_dir() else []
    if dates:
        K, size = load_kitti_calibration(dates[0]).intrinsics("02")
        return Intrinsics(K, False, size), f"KITTI P_rect_02 of {dates[0] / 'calib_cam_to_cam.txt'}"
    return Intrinsics(MONODEPTH2_NORMALIZED_K, True), "Monodepth2's average KITTI camera (normalised)"


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
        return Intrinsics(K, normalized, size), "the checkpoint's stored camera"
    data = config.data
    if data.dataset == "synthetic":
        from mfdepth.synth.world import intrinsics as synthetic_camera

        K = synthetic_camera(data.height, data.width)
        return Intrinsics(K, False, (data.width, data.height)), "the synthetic world's camera"
    if data.dataset == "kitti":
        if data.average_intrinsics:
            return Intrinsics(MONODEPTH2_NORMALIZED_K, True), "Monodepth2's average KITTI camera (normalised)"
        return _kitti_intrinsics(Path(data.root))
    if data.dataset == "folder" and (data.intrinsics or data.focal_px is not None):
        if data.intrinsics and Path(data.intrinsics).is_file():
            found = load_intrinsics_file(data.intrinsics)
            size = found.size or _first_frame_size(Path(data.root))
            if found.normalized or size is not None:
                return Intrinsics(found.K, found.normalized, size), f"the training intrinsics file {data.intrinsics}"
        if data.focal_px is not None:
            size = _first_frame_size(Path(data.root))
            if size is not None:
                return (
                    Intrinsics(intrinsics_from_focal(data.focal_px, *size), False, size),
                    f"the training focal length {data.focal_px} px",
                )
    raise DataError(
        f"checkpoint {checkpoint} names no camera (trained on '{data.dataset}' data with per-frame or "
        "unreachable intrinsics): pass --intrinsics K.yaml|K.json or --focal PX"
    )
