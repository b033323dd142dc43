"""Camera calibration files: KITTI ``calib_*.txt``, user intrinsics files, DGP quaternion poses.

All intrinsics returned here are ``(3, 3)`` float64 numpy arrays in pixels of the image size they are
returned with (``(width, height)``), unless flagged as normalised (Monodepth2 convention: the first
row divided by the width and the second by the height, so the principal point of a centred camera
is 0.5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mfdepth.data.errors import DataError
from mfdepth.data.files import read_numbers

MONODEPTH2_NORMALIZED_K = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])
"""The single KITTI intrinsics of Monodepth2/ManyDepth, normalised by image width and height."""

KITTI_SIDE_TO_CAMERA = {"l": "02", "r": "03"}

log = logging.getLogger(__name__)


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """A KITTI ``key: v1 v2 ...`` calibration file as name -> float64 vector (non-numeric keys skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"calibration file not found: {path}; KITTI raw needs each date's calib_cam_to_cam.txt "
            "(from the date's *_calib.zip) next to the drive folders"
        )
    values: dict[str, np.ndarray] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read calibration file {path} ({err})") from None
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, raw = line.split(":", 1)
        try:
            values[key.strip()] = np.array([float(v) for v in raw.split()], dtype=np.float64)
        except ValueError:
            continue  # calib_time and similar text fields
    return values


def _require(calib: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    value = calib.get(key)
    if value is None or value.size != size:
        found = "missing" if value is None else f"{value.size} numbers"
        raise DataError(
            f"{path}: entry {key} must hold {size} numbers ({found}); the file is not a KITTI calibration"
        )
    return value


@dataclass(frozen=True, eq=False)
class KittiCalibration:
    """One date's rectified camera calibration (and the velodyne extrinsics when present).

    Attributes:
        P_rect: camera ("00".."03") -> ``(3, 4)`` rectified projection matrix, pixels.
        image_size: camera -> ``(width, height)`` of the rectified images (S_rect_xx).
        R_rect_00: ``(4, 4)`` rectifying rotation of the reference camera, padded to homogeneous.
        T_cam0_velo: ``(4, 4)`` velodyne -> unrectified camera 0 transform, metres; None without the file.
        cam_to_cam_path, velo_to_cam_path: where the numbers came from (for error messages).
    """

    P_rect: dict[str, np.ndarray]
    image_size: dict[str, tuple[int, int]]
    R_rect_00: np.ndarray
    T_cam0_velo: np.ndarray | None
    cam_to_cam_path: Path
    velo_to_cam_path: Path

    def intrinsics(self, camera: str) -> tuple[np.ndarray, tuple[int, int]]:
        """``(K (3, 3), (width, height))`` of rectified camera ``camera`` ("02" or "03")."""
        if camera not in self.P_rect:
            raise DataError(f"{self.cam_to_cam_path}: no P_rect_{camera} entry for camera image_{camera}")
        return self.P_rect[camera][:, :3].copy(), self.image_size[camera]

    def velodyne_to_image(self, camera: str) -> np.ndarray:
        """``(3, 4)`` matrix P_rect_cc . R_rect_00 . [R|T]_velo_to_cam: velodyne points to image pixels."""
        if self.T_cam0_velo is None:
            raise DataError(
                f"velodyne calibration not found: {self.velo_to_cam_path}; copy the date's "
                "calib_velo_to_cam.txt next to calib_cam_to_cam.txt"
            )
        if camera not in self.P_rect:
            raise DataError(f"{self.cam_to_cam_path}: no P_rect_{camera} entry for camera image_{camera}")
        return self.P_rect[camera] @ self.R_rect_00 @ self.T_cam0_velo


def load_kitti_calibration(date_dir: str | Path) -> KittiCalibration:
    """Read ``<date_dir>/calib_cam_to_cam.txt`` (and ``calib_velo_to_cam.txt`` if present)."""
    date_dir = Path(date_dir)
    cam_path = date_dir / "calib_cam_to_cam.txt"
    velo_path = date_dir / "calib_velo_to_cam.txt"
    cam = read_calib_file(cam_path)
    P_rect, sizes = {}, {}
    for camera in ("00", "01", "02", "03"):
        if f"P_rect_{camera}" not in cam:
            continue
        P_rect[camera] = _require(cam, f"P_rect_{camera}", 12, cam_path).reshape(3, 4)
        width, height = _require(cam, f"S_rect_{camera}", 2, cam_path)
        sizes[camera] = (int(round(width)), int(round(height)))
    if "02" not in P_rect and "03" not in P_rect:
        raise DataError(
            f"{cam_path}: no P_rect_02 / P_rect_03 entries; the file is not a KITTI cam-to-cam calibration"
        )
    R_rect = np.eye(4)
    R_rect[:3, :3] = _require(cam, "R_rect_00", 9, cam_path).reshape(3, 3)
    T_cam0_velo = None
    if velo_path.is_file():
        velo = read_calib_file(velo_path)
        T_cam0_velo = np.eye(4)
        T_cam0_velo[:3, :3] = _require(velo, "R", 9, velo_path).reshape(3, 3)
        T_cam0_velo[:3, 3] = _require(velo, "T", 3, velo_path)
    return KittiCalibration(P_rect, sizes, R_rect, T_cam0_velo, cam_path, velo_path)


# ---------------------------------------------------------------------------------------------
# User-supplied intrinsics (folders and videos)


@dataclass(frozen=True, eq=False)
class Intrinsics:
    """Intrinsics read from a user file.

    Attributes:
        K: ``(3, 3)``; in pixels of ``size`` (or of the frames themselves when ``size`` is None), or
            normalised when ``normalized`` is true.
        normalized: K's first row is divided by the width and its second by the height.
        size: ``(width, height)`` the pixel values refer to, if the file says so.
    """

    K: np.ndarray
    normalized: bool = False
    size: tuple[int, int] | None = None


def check_intrinsics(
    K: np.ndarray, source: str, size: tuple[int, int] | None = None, normalized: bool = False
) -> np.ndarray:
    """The one validator of user intrinsics (YAML, JSON, text files, focal lengths), wherever they come from.

    Raises :class:`DataError` naming ``source`` unless every entry is finite, the focal lengths are
    positive and the last row is ``[0, 0, 1]``. With a known image ``size`` = (width, height) (or for
    normalised K, whose image is the unit square), warns when the principal point lies outside the image.
    Returns ``K`` as a ``(3, 3)`` float64 array.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise DataError(f"{source}: intrinsics hold a non-finite number (NaN or inf): {K.tolist()}; give real values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DataError(
            f"{source}: focal lengths must be positive pixels (fx={K[0, 0]:g}, fy={K[1, 1]:g}); "
            "fix the file (or --focal / data.focal_px)"
        )
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise DataError(f"{source}: the last row of K must be [0, 0, 1], got {K[2].tolist()}")
    width, height = (1.0, 1.0) if normalized else (size or (None, None))
    if width is not None:
        unit = 0.0 if normalized else 0.5  # pixel centres at integers: the image spans [-0.5, W - 0.5]
        cx, cy = K[0, 2], K[1, 2]
        if not (-unit <= cx <= width - unit and -unit <= cy <= height - unit):
            log.warning(
                "%s: the principal point (cx=%g, cy=%g) lies outside the %s image; check that K belongs to "
                "these frames (pixels of the frames, or 'normalized: true')",
                source, cx, cy, "normalised" if normalized else f"{width}x{height}",
            )
    return K


_INTRINSICS_HELP = (
    "expected fx, fy, cx, cy (pixels), or K as a 3x3 list, optionally with 'normalized: true' and "
    "'width'/'height'; or a plain text file with the 9 numbers of K"
)


def _matrix3(value, path: Path) -> np.ndarray:
    try:
        K = np.asarray(value, dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise DataError(f"intrinsics file {path}: K must be 3x3 numbers; {_INTRINSICS_HELP}") from None
    return K


def load_intrinsics_file(path: str | Path) -> Intrinsics:
    """Read intrinsics from YAML/JSON (mapping or bare 3x3 list) or a text file of 9 numbers.

    A bare 3x3 matrix whose principal point lies within [0, 1] is taken as normalised (no camera has a
    principal point within one pixel of the corner); a mapping says so explicitly with
    ``normalized: true``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"intrinsics file not found: {path}")
    source = f"intrinsics file {path}"
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        K = read_numbers(path, 9).reshape(3, 3)
        normalized = bool(K[0, 2] <= 1.0 and K[1, 2] <= 1.0)
        return Intrinsics(check_intrinsics(K, source, normalized=normalized), normalized=normalized)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DataError(f"intrinsics file {path} is not valid YAML/JSON ({err.__class__.__name__})") from None
    if isinstance(data, list):
        K = _matrix3(data, path)
        normalized = bool(K[0, 2] <= 1.0 and K[1, 2] <= 1.0)
        return Intrinsics(check_intrinsics(K, source, normalized=normalized), normalized=normalized)
    if not isinstance(data, dict):
        raise DataError(f"intrinsics file {path}: {_INTRINSICS_HELP}")
    normalized = bool(data.get("normalized", False))
    if "K" in data:
        K = _matrix3(data["K"], path)
    elif all(k in data for k in ("fx", "fy", "cx", "cy")):
        try:
            fx, fy, cx, cy = (float(data[k]) for k in ("fx", "fy", "cx", "cy"))
        except (TypeError, ValueError):
            raise DataError(f"intrinsics file {path}: fx, fy, cx, cy must be numbers") from None
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise DataError(f"intrinsics file {path}: {_INTRINSICS_HELP}")
    size = None
    if "width" in data or "height" in data:
        try:
            size = (int(data["width"]), int(data["height"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"intrinsics file {path}: give both 'width' and 'height' as integers") from None
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise DataError(f"intrinsics file {path}: 'width' and 'height' must be positive, got {size}")
    K = check_intrinsics(K, source, None if normalized else size, normalized)
    return Intrinsics(K, normalized=normalized, size=size)


def intrinsics_from_focal(focal_px: float, width: int, height: int) -> np.ndarray:
    """``(3, 3)`` K with focal length ``focal_px`` and the principal point at the image centre.

    The centre is ``((W - 1) / 2, (H - 1) / 2)`` because pixel centres sit at integer coordinates.
    """
    if not np.isfinite(focal_px) or focal_px <= 0:
        raise DataError(
            f"focal length must be a positive number of pixels, got {focal_px}; fix --focal or data.focal_px"
        )
    K = np.array([[focal_px, 0.0, (width - 1) / 2.0], [0.0, focal_px, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return check_intrinsics(K, f"focal length {focal_px} px", (width, height))


# ---------------------------------------------------------------------------------------------
# DGP (DDAD) poses


def quaternion_to_matrix(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """Unit quaternion (Hamilton, scalar first) to a ``(3, 3)`` rotation; normalises the input."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    norm = np.linalg.norm(q)
    if norm < 1e-12:
        raise DataError("quaternion of zero length in a pose")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose_from_dgp(pose: dict) -> np.ndarray:
    """A DGP pose ``{"rotation": {qw, qx, qy, qz}, "translation": {x, y, z}}`` as a ``(4, 4)`` transform."""
    rotation, translation = pose["rotation"], pose["translation"]
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation["qw"], rotation["qx"], rotation["qy"], rotation["qz"])
    T[:3, 3] = [translation["x"], translation["y"], translation["z"]]
    return T
