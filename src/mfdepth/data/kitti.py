"""KITTI raw (and the synthetic world, which writes the same layout).

Layout read: ``<root>/<date>/calib_cam_to_cam.txt`` (+ ``calib_velo_to_cam.txt``) and
``<root>/<date>/<date>_drive_<NNNN>_sync/image_02|03/data/<10-digit frame>.png|jpg``. Split lines are
Monodepth2's ``<date>/<drive>_sync <frame> l|r`` (the side may be left out: ``camera`` decides).

Intrinsics are each date's P_rect_02/03 for the rectified size S_rect_02/03, scaled to the training
resolution; ``average_intrinsics`` uses Monodepth2's single normalised matrix instead.

Optional ground truth, added to every sample or to none:
* ``test`` subset with ``gt_depths.npz`` in the split folder (written by ``mfdepth prepare``): that file,
  entry i for the i-th line of ``test_files.txt``;
* else per-drive ``gt/depth/<frame>.npy`` (float32 metres, the synthetic world), any subset;
* else, for ``val``/``test``, the velodyne scans projected on the fly.
Per-drive ``gt/dynamic/<frame>.png`` (synthetic world) becomes ``motion_mask``.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfdepth.data.base import FrameRecord, FrameRef, drop_message
from mfdepth.data.calibration import (
    KITTI_SIDE_TO_CAMERA,
    MONODEPTH2_NORMALIZED_K,
    KittiCalibration,
    load_kitti_calibration,
)
from mfdepth.data.errors import DataError
from mfdepth.data.splits import find_split_file, read_split_lines
from mfdepth.data.velodyne import (
    improved_depth_candidates,
    kitti_velodyne_path,
    read_improved_depth,
    read_velodyne_points,
    velodyne_depth_map,
)

log = logging.getLogger(__name__)

GT_DEPTHS_FILE = "gt_depths.npz"
_AUTO_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CAMERA_TO_SIDE = {"image_02": "l", "image_03": "r"}


@dataclass(frozen=True)
class KittiLine:
    """One parsed split line."""

    folder: str
    frame: int
    side: str
    line_number: int
    order: int
    """Position among the split file's sample lines (0-based): the row of gt_depths.npz."""

    @property
    def camera(self) -> str:
        return KITTI_SIDE_TO_CAMERA[self.side]

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]

    @property
    def sample_id(self) -> str:
        return f"{self.folder} {self.frame} {self.side}"


def parse_split(split_file: str | Path, camera: str = "image_02") -> list[KittiLine]:
    """Parse a Monodepth2-format split file; bad lines raise DataError with file and line number."""
    default_side = _CAMERA_TO_SIDE.get(camera)
    parsed = []
    for order, (number, text) in enumerate(read_split_lines(split_file)):
        tokens = text.split()
        where = f"line {number} of {split_file}"
        if len(tokens) not in (2, 3):
            raise DataError(f"{where}: expected '<date>/<drive>_sync <frame> l|r', got '{text}'")
        folder = tokens[0].strip("/")
        if "/" not in folder or ".." in folder.split("/"):
            raise DataError(f"{where}: '{tokens[0]}' is not a '<date>/<drive>_sync' folder")
        try:
            frame = int(tokens[1])
        except ValueError:
            raise DataError(f"{where}: frame '{tokens[1]}' is not an integer") from None
        side = tokens[2] if len(tokens) == 3 else default_side
        if side not in KITTI_SIDE_TO_CAMERA:
            raise DataError(
                f"{where}: side '{side}' must be l (image_02) or r (image_03)"
                if len(tokens) == 3
                else f"{where}: no side given and data.camera '{camera}' is not image_02 or image_03"
            )
        parsed.append(KittiLine(folder, frame, side, number, order))
    return parsed


class _ImageFolder:
    """Frame numbers -> file names of one ``image_0X/data`` folder, listed once."""

    def __init__(self, folder: Path, image_ext: str):
        self.folder = folder
        if not folder.is_dir():
            raise DataError(
                f"image folder not found: {folder}; data.root must be the KITTI raw root holding the date "
                "folders, with each drive's image_02/data extracted"
            )
        wanted = _AUTO_EXTENSIONS if image_ext == "auto" else ("." + image_ext.lower().lstrip("."),)
        self.files: dict[int, str] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() in wanted and stem.isdigit():
                    self.files[int(stem)] = entry.name
        if not self.files:
            kinds = "png/jpg" if image_ext == "auto" else image_ext
            raise DataError(f"image folder {folder} holds no {kinds} frames named <10-digit number>.<ext>")
        self.first, self.last = min(self.files), max(self.files)
        suffixes = sorted({os.path.splitext(n)[1] for n in self.files.values()})
        self.extension = suffixes[0]

    def path(self, frame: int) -> Path:
        name = self.files.get(frame)
        return self.folder / (name if name is not None else f"{frame:010d}{self.extension}")

    def has(self, frame: int) -> bool:
        return frame in self.files

    def within(self, frame: int) -> bool:
        return self.first <= frame <= self.last


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and lists of them) only: any other class or function is refused, so a crafted
    ``gt_depths.npz`` cannot run code, while Monodepth2's object-array files (maps of different sizes) load."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric",
                       "numpy")
        for name in ("_reconstruct", "_frombuffer", "scalar", "ndarray", "dtype")
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def load_depth_maps_npz(path: Path, key: str = "data"):
    """``archive[key]`` of an ``.npz`` without ``allow_pickle``: plain arrays load as numpy does, object arrays
    (one depth map per frame) through :class:`_ArrayUnpickler`, which admits numpy arrays only."""
    with zipfile.ZipFile(path) as archive:
        with archive.open(f"{key}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(handle)
            if not dtype.hasobject:
                with np.load(path, allow_pickle=False) as plain:
                    return plain[key]
            data = _ArrayUnpickler(handle, encoding="latin1").load()
    if not all(isinstance(item, np.ndarray) and item.dtype != object for item in data):
        raise ValueError("entries must be numeric depth maps")
    return data


class NpzDepthTable:
    """``gt_depths.npz`` (key ``data``: one depth map per test line), loaded on first use in each process."""

    def __init__(self, path: str | Path, expected: int):
        self.path = Path(path)
        self.expected = expected
        self._data = None

    def __getstate__(self):
        # Workers started by spawn load their own copy instead of receiving a pickled gigabyte.
        return {"path": self.path, "expected": self.expected, "_data": None}

    def _load(self):
        try:
            data = load_depth_maps_npz(self.path)
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
            raise DataError(f"cannot read {self.path} ({err}); write it again with mfdepth prepare") from None
        if len(data) != self.expected:
            raise DataError(
                f"{self.path} holds {len(data)} depth maps but its split lists {self.expected} test frames; "
                "write it again with mfdepth prepare"
            )
        return data

    def entry(self, row: int) -> np.ndarray:
        if self._data is None:
            self._data = self._load()
        return np.asarray(self._data[row], dtype=np.float32)


def _load_npy_depth(path: Path) -> np.ndarray:
    try:
        depth = np.load(path)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read depth file {path} ({err}); the file is corrupt") from None
    if depth.ndim != 2:
        raise DataError(f"depth file {path} must hold one (H, W) array, found shape {depth.shape}")
    return depth.astype(np.float32, copy=False)


def _velodyne_depth(path: Path, calibration: KittiCalibration, camera: str) -> np.ndarray:
    return velodyne_depth_map(read_velodyne_points(path), calibration, camera)


def _calibration_for(root: Path, date: str, cache: dict) -> KittiCalibration:
    if date not in cache:
        cache[date] = load_kitti_calibration(root / date)
    return cache[date]


def kitti_records(
    root: str | Path,
    split_file: str | Path,
    offsets: Sequence[int],
    subset: str,
    split: str,
    camera: str = "image_02",
    image_ext: str = "auto",
    average_intrinsics: bool = False,
) -> list[FrameRecord]:
    """Records of one KITTI-layout split file.

    Samples whose neighbours fall before the first or after the last frame of their drive are
    dropped (and counted in the log); a neighbour missing inside the drive is an error.
    """
    root = Path(root)
    lines = parse_split(split_file, camera)
    folders: dict[tuple[str, str], _ImageFolder] = {}
    calibrations: dict[str, KittiCalibration] = {}
    kept: list[tuple[KittiLine, list[Path]]] = []
    for line in lines:
        key = (line.folder, line.camera)
        if key not in folders:
            folders[key] = _ImageFolder(root / line.folder / f"image_{line.camera}" / "data", image_ext)
        images = folders[key]
        if not images.has(line.frame):
            raise DataError(
                f"frame not found: {images.path(line.frame)} (line {line.line_number} of {split_file})"
            )
        paths = []
        for offset in offsets:
            frame = line.frame + offset
            if not images.within(frame):
                paths = None
                break
            if not images.has(frame):
                raise DataError(
                    f"missing neighbour frame {images.path(frame)} (offset {offset:+d} of sample "
                    f"'{line.sample_id}', line {line.line_number} of {split_file}); the drive's frames "
                    "must be contiguous: extract it again"
                )
            paths.append(images.path(frame))
        if paths is not None:
            kept.append((line, paths))
    drop_message(f"kitti {split}/{subset}", len(lines) - len(kept), len(lines), offsets, split_file)
    if not kept:
        raise DataError(
            f"no usable samples in {split_file}: every line needs frames at offsets {list(offsets)} "
            "inside its drive"
        )

    depth_for = _depth_sources(root, split, subset, kept, calibrations, len(lines))
    motion_paths = [root / line.folder / "gt" / "dynamic" / f"{line.frame:010d}.png" for line, _ in kept]
    use_motion = all(line.side == "l" for line, _ in kept) and all(p.is_file() for p in motion_paths)

    records = []
    for i, (line, paths) in enumerate(kept):
        if average_intrinsics:
            K, K_size, normalized = MONODEPTH2_NORMALIZED_K, None, True
        else:
            K, K_size = _calibration_for(root, line.date, calibrations).intrinsics(line.camera)
            normalized = False
        records.append(
            FrameRecord(
                sample_id=line.sample_id,
                frames=tuple(FrameRef(p) for p in paths),
                K=K,
                K_size=K_size,
                K_normalized=normalized,
                depth_gt=depth_for[i] if depth_for is not None else None,
                motion_mask=motion_paths[i] if use_motion else None,
            )
        )
    return records


def _depth_sources(root, split, subset, kept, calibrations, line_count):
    """One depth loader per kept sample, or None when no source covers all of them."""
    if subset == "test":
        npz = find_split_file(root, split, GT_DEPTHS_FILE)
        if npz is not None:
            table = NpzDepthTable(npz, line_count)
            return [functools.partial(table.entry, line.order) for line, _ in kept]
    if all(line.side == "l" for line, _ in kept):
        npy = [root / line.folder / "gt" / "depth" / f"{line.frame:010d}.npy" for line, _ in kept]
        if all(p.is_file() for p in npy):
            return [functools.partial(_load_npy_depth, p) for p in npy]
    if subset != "train":
        scans = [kitti_velodyne_path(root, line.folder, line.frame) for line, _ in kept]
        if all(p.is_file() for p in scans):
            return [
                functools.partial(
                    _velodyne_depth, p, _calibration_for(root, line.date, calibrations), line.camera
                )
                for p, (line, _) in zip(scans, kept)
            ]
    return None


# ---------------------------------------------------------------------------------------------
# Ground truth export (mfdepth prepare kitti)


def ground_truth_for_line(
    root: Path,
    line: KittiLine,
    calibrations: dict,
    improved: bool = False,
    improved_dirs: Sequence[str | Path] = (),
    monodepth2_convention: bool = False,
) -> np.ndarray:
    """``(H, W)`` float32 ground-truth depth of one split line, metres, 0 = none."""
    if improved:
        candidates = improved_depth_candidates(root, line.folder, line.frame, line.camera, improved_dirs)
        for path in candidates:
            if path.is_file():
                return read_improved_depth(path)
        raise DataError(
            f"improved ground truth not found for '{line.sample_id}' (looked for {candidates[0]} and the "
            "depth-completion layout <dir>/{train,val}/<drive>_sync/proj_depth/groundtruth/); "
            "it covers 652 of "
            "the 697 Eigen test frames: use Monodepth2's eigen_benchmark split, and pass --improved-dir"
        )
    calibration = _calibration_for(root, line.date, calibrations)
    points = read_velodyne_points(kitti_velodyne_path(root, line.folder, line.frame))
    return velodyne_depth_map(points, calibration, line.camera, monodepth2_convention)


def export_ground_truth(
    root: str | Path,
    split: str,
    improved: bool = False,
    improved_dirs: Sequence[str | Path] = (),
    monodepth2_convention: bool = False,
    output: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Write the test split's ground truth as ``<root>/splits/<split>/gt_depths.npz``.

    The file holds key ``data``: a 1-D object array with one ``(H, W)`` float32 map per line of
    ``test_files.txt`` (Monodepth2's format; maps may differ in size between dates), and key ``source``
    (``velodyne`` or ``improved``).

    Returns:
        ``(path, summary)`` with the frame count and the mean number of valid pixels per frame.
    """
    from tqdm.auto import tqdm

    from mfdepth.data.splits import resolve_split_file

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"KITTI root not found: {root}; pass the folder holding the date folders with --data")
    split_file = resolve_split_file(root, split, "test")
    lines = parse_split(split_file)
    calibrations: dict[str, KittiCalibration] = {}
    maps = np.empty(len(lines), dtype=object)
    valid_counts = []
    for i, line in enumerate(tqdm(lines, desc=f"gt depth {split}", disable=not progress, dynamic_ncols=True)):
        depth = ground_truth_for_line(
            root, line, calibrations, improved, improved_dirs, monodepth2_convention
        )
        maps[i] = depth
        valid_counts.append(int((depth > 0).sum()))
    output = Path(output) if output is not None else root / "splits" / split / GT_DEPTHS_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial.npz")
    np.savez_compressed(partial, data=maps, source=np.array("improved" if improved else "velodyne"))
    os.replace(partial, output)
    sizes = sorted({m.shape for m in maps})
    summary = {
        "frames": len(lines),
        "split_file": str(split_file),
        "output": str(output),
        "source": "improved" if improved else "velodyne",
        "mean_valid_pixels": float(np.mean(valid_counts)),
        "sizes": [list(s) for s in sizes],
    }
    return output, summary
