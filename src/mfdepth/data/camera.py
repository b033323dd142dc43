"""The camera a training config's data was recorded with, when the data has one camera.

Training stores it in every checkpoint (``meta["intrinsics"]``, see :func:`camera_meta`), so prediction
only reads it; :func:`training_camera` is also the fallback for checkpoints written before that. The
synthetic world's camera, Monodepth2's KITTI camera (or the first date's ``P_rect_02`` when the KITTI root
is reachable), or a folder's intrinsics file / focal length. Cityscapes and DDAD have one camera file per
frame, so they name no camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfdepth.data.calibration import (
    MONODEPTH2_NORMALIZED_K,
    Intrinsics,
    intrinsics_from_focal,
    load_intrinsics_file,
    load_kitti_calibration,
)
from mfdepth.data.files import image_size, list_images


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


def training_camera(data) -> tuple[Intrinsics, str] | None:
    """``(intrinsics, phrase saying where they came from)`` of a :class:`mfdepth.config.DataConfig`'s
    camera, or None when the data has per-frame or unreachable intrinsics."""
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
    return None


def camera_meta(data) -> dict:
    """``{"intrinsics": {"K", "normalized", "width", "height", "source"}}`` for a checkpoint's metadata
    (plain lists and numbers, so it loads with ``weights_only``), or ``{}`` when the data names no camera."""
    found = training_camera(data)
    if found is None:
        return {}
    intrinsics, source = found
    stored = {"K": np.asarray(intrinsics.K, dtype=np.float64).tolist(), "normalized": bool(intrinsics.normalized),
              "source": source}
    if intrinsics.size is not None:
        stored["width"], stored["height"] = int(intrinsics.size[0]), int(intrinsics.size[1])
    return {"intrinsics": stored}
