"""Sparse ground-truth depth maps from laser scans (KITTI velodyne, DGP LiDAR).

The rule is the same for every scanner: transform the points into the camera, keep the ones in front
of it, project with the intrinsics, round to the nearest pixel (pixel centres at integer coordinates)
and keep the nearest return where several points land in one pixel. Depth is the camera z, metres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfdepth.data.calibration import KittiCalibration
from mfdepth.data.errors import DataError


def read_velodyne_points(path: str | Path) -> np.ndarray:
    """A KITTI velodyne ``.bin`` scan as ``(N, 4)`` float32: x, y, z (metres, velodyne frame), reflectance."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"velodyne scan not found: {path}; extract the drive's velodyne_points next to image_02"
        )
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 4:
        raise DataError(
            f"velodyne scan {path} has {raw.size} floats, not a multiple of 4; the file is truncated"
        )
    return raw.reshape(-1, 4)


def splat_nearest(u: np.ndarray, v: np.ndarray, z: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scatter projected points into a ``(H, W)`` float32 depth map, keeping the smallest z per pixel.

    Args:
        u, v: ``(N,)`` integer pixel columns and rows (already rounded); points outside are dropped.
        z: ``(N,)`` depths in metres, all > 0.
        size: ``(width, height)`` of the map.
    Returns:
        ``(H, W)`` float32, 0 where no point landed.
    """
    width, height = size
    inside = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    flat = v.astype(np.int64) * width + u.astype(np.int64)
    # Sort by pixel, then by depth: the first entry of each pixel's run is its nearest return.
    order = np.lexsort((z, flat))
    flat, z = flat[order], z[order]
    first = np.ones(flat.shape, dtype=bool)
    first[1:] = flat[1:] != flat[:-1]
    depth = np.zeros(height * width, dtype=np.float32)
    depth[flat[first]] = z[first]
    return depth.reshape(height, width)


def project_to_depth_map(
    points_camera: np.ndarray, K: np.ndarray, size: tuple[int, int], min_depth: float = 1e-3
) -> np.ndarray:
    """Camera-frame points ``(N, 3)`` (metres) and K ``(3, 3)`` (pixels) to a ``(H, W)`` depth map."""
    z = points_camera[:, 2]
    front = z > min_depth
    projected = points_camera[front] @ K.T
    z = projected[:, 2]
    u = np.round(projected[:, 0] / z)
    v = np.round(projected[:, 1] / z)
    return splat_nearest(u, v, z.astype(np.float32), size)


def velodyne_depth_map(
    points: np.ndarray,
    calibration: KittiCalibration,
    camera: str = "02",
    monodepth2_convention: bool = False,
) -> np.ndarray:
    """Project a velodyne scan into rectified camera ``camera`` of ``calibration``.

    Args:
        points: ``(N, 3|4)`` velodyne points (x forward, y left, z up), metres.
        calibration: the date's calibration (P_rect, R_rect_00, velodyne extrinsics, image size).
        camera: "02" (left colour) or "03" (right colour).
        monodepth2_convention: reproduce Monodepth2's ``export_gt_depth.py`` exactly (its published
            ``gt_depths.npz``): pixels shifted by -1 after rounding (a MATLAB indexing leftover) and
            depth taken as the velodyne x coordinate instead of the camera z. The default is the
            geometrically consistent map (camera z at the rounded pixel).
    Returns:
        ``(H, W)`` float32 depth in metres at the rectified image size S_rect, 0 = no return.
    """
    P = calibration.velodyne_to_image(camera)
    _, size = calibration.intrinsics(camera)
    xyz1 = np.concatenate([points[:, :3].astype(np.float64), np.ones((points.shape[0], 1))], axis=1)
    if monodepth2_convention:
        xyz1 = xyz1[xyz1[:, 0] >= 0]
    projected = xyz1 @ P.T
    z = projected[:, 2]
    front = z > 1e-3
    projected, xyz1, z = projected[front], xyz1[front], z[front]
    u = np.round(projected[:, 0] / z)
    v = np.round(projected[:, 1] / z)
    if monodepth2_convention:
        u, v, z = u - 1, v - 1, xyz1[:, 0]
    return splat_nearest(u, v, z.astype(np.float32), size)


def kitti_velodyne_path(root: str | Path, folder: str, frame: int) -> Path:
    """``<root>/<date>/<drive>_sync/velodyne_points/data/<frame:010d>.bin``."""
    return Path(root) / folder / "velodyne_points" / "data" / f"{frame:010d}.bin"


def improved_depth_candidates(
    root: str | Path, folder: str, frame: int, camera: str = "02", extra_roots=()
) -> list[Path]:
    """Where KITTI's improved ground truth (depth-completion ``proj_depth``) for a frame may live.

    Looked for (in order) merged into the raw drive folder (Monodepth2's layout,
    ``<root>/<date>/<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png``) and in the
    depth-completion layout ``<dir>/{train,val,}/<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png``
    under ``root`` and each of ``extra_roots``.
    """
    name = f"{frame:010d}.png"
    tail = Path("proj_depth") / "groundtruth" / f"image_{camera}" / name
    drive = Path(folder).name
    candidates = [Path(root) / folder / tail]
    for base in (Path(root), *map(Path, extra_roots)):
        for subset in ("train", "val", ""):
            candidates.append(base / subset / drive / tail if subset else base / drive / tail)
    return candidates


def read_improved_depth(path: str | Path) -> np.ndarray:
    """KITTI depth-completion ground truth PNG (uint16 / 256 = metres, 0 = none) as ``(H, W)`` float32."""
    from mfdepth.data.files import read_uint16_png

    return read_uint16_png(path).astype(np.float32) / 256.0
