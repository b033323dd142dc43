"""DDAD-style scenes in TRI's DGP json format.

A scene folder holds ``scene_<hash>.json`` (samples, each a list of datum keys; datums with file names
and world poses), ``calibration/<key>.json`` (per sensor: pinhole intrinsics and the extrinsics
``T_vehicle_sensor`` as quaternion + translation), ``rgb/<CAMERA>/*.jpg`` and
``point_cloud/LIDAR/*.npz`` (key ``data``, N x (x, y, z, ...)).

``root`` may be a scene dataset json (or a folder holding one, e.g. ``ddad.json``, with
``scene_splits`` 0 = train, 1 = val, 2 = test), a scene folder, or a folder of scene folders (every
scene in every subset). A split folder ``<root>/splits/<split>/<subset>_files.txt`` listing scene json
paths relative to ``root`` overrides the dataset json.

Ground truth depth (val/test subsets): the sample's LiDAR scan moved into the camera with the
extrinsics (``T_camera_lidar = T_vehicle_camera^-1 T_vehicle_lidar``) and projected, nearest return
per pixel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfdepth.data.base import FrameRecord, FrameRef, drop_message
from mfdepth.data.calibration import pose_from_dgp
from mfdepth.data.errors import DataError
from mfdepth.data.splits import find_split_file, read_split_lines, split_file_name
from mfdepth.data.velodyne import project_to_depth_map

log = logging.getLogger(__name__)

SUBSET_KEYS = {"train": "0", "val": "1", "test": "2"}
"""DGP's DatasetSplit enum values as they appear in ``scene_splits``."""
DEFAULT_CAMERA = "CAMERA_01"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"DGP file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse DGP json {path} ({err})") from None


def _scene_json_in(folder: Path) -> Path | None:
    found = sorted(folder.glob("scene*.json"))
    return found[0] if found else None


def _dataset_json_in(folder: Path) -> Path | None:
    for candidate in sorted(folder.glob("*.json")):
        if candidate.stat().st_size > 50_000_000:
            continue
        try:
            if "scene_splits" in json.loads(candidate.read_text()):
                return candidate
        except (ValueError, UnicodeDecodeError):
            continue
    return None


def scene_files(root: str | Path, subset: str, split: str | None = None) -> list[Path]:
    """Scene json files of ``subset`` under ``root`` (see the module docstring for the accepted layouts)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"DDAD root not found: {root}")
    base = root.parent if root.is_file() else root
    if split:
        listed = find_split_file(base, split, split_file_name(subset))
        if listed is not None:
            return [base / text for _, text in read_split_lines(listed)]
    dataset_json = root if root.is_file() else _dataset_json_in(root)
    if dataset_json is not None:
        splits = _read_json(dataset_json).get("scene_splits", {})
        key = SUBSET_KEYS[subset]
        if key not in splits and subset == "test" and SUBSET_KEYS["val"] in splits:
            # DDAD publishes no test labels; the field reports on its validation scenes.
            log.info("ddad: %s has no test scenes; using the validation scenes", dataset_json)
            key = SUBSET_KEYS["val"]
        if key not in splits:
            raise DataError(f"{dataset_json} has no '{subset}' scenes (scene_splits key {key})")
        files = [dataset_json.parent / name for name in splits[key].get("filenames", [])]
        if not files:
            raise DataError(f"{dataset_json} lists no scenes for '{subset}'")
        return files
    single = _scene_json_in(root)
    if single is not None:
        return [single]
    nested = [s for s in (_scene_json_in(d) for d in sorted(root.iterdir()) if d.is_dir()) if s is not None]
    if not nested:
        raise DataError(f"no DGP scene under {root}: expected scene_*.json in it or in its sub-folders")
    return nested


def _pinhole(entry: dict) -> np.ndarray:
    return np.array(
        [
            [entry["fx"], entry.get("skew", 0.0), entry["cx"]],
            [0.0, entry["fy"], entry["cy"]],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


def read_calibration(path: Path) -> dict[str, dict]:
    """``calibration/<key>.json`` -> sensor name -> ``{"K": (3, 3) or None, "T_vehicle_sensor": (4, 4)}``."""
    data = _read_json(path)
    try:
        names, extrinsics, intrinsics = data["names"], data["extrinsics"], data["intrinsics"]
        sensors = {}
        for name, extrinsic, intrinsic in zip(names, extrinsics, intrinsics):
            K = _pinhole(intrinsic) if intrinsic.get("fx", 0.0) > 0 else None
            sensors[name] = {"K": K, "T_vehicle_sensor": pose_from_dgp(extrinsic)}
    except (KeyError, TypeError) as err:
        raise DataError(f"calibration {path} is not DGP calibration json (missing {err})") from None
    return sensors


def read_lidar_points(path: str | Path) -> np.ndarray:
    """``(N, 3)`` float64 LiDAR points (sensor frame, metres) from a DGP ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"LiDAR scan not found: {path}")
    try:
        with np.load(path) as archive:
            data = archive["data"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot read LiDAR scan {path} ({err})") from None
    if data.dtype.names:
        return np.stack([data[k] for k in ("X", "Y", "Z")], axis=1).astype(np.float64)
    return np.asarray(data[:, :3], dtype=np.float64)


def lidar_depth_map(
    points_lidar: np.ndarray, T_camera_lidar: np.ndarray, K: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """LiDAR points ``(N, 3)`` -> ``(H, W)`` float32 depth of the camera (metres, 0 = none)."""
    points_camera = points_lidar @ T_camera_lidar[:3, :3].T + T_camera_lidar[:3, 3]
    return project_to_depth_map(points_camera, K, size)


def _lidar_depth(path: Path, T_camera_lidar: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return lidar_depth_map(read_lidar_points(path), T_camera_lidar, K, size)


class Scene:
    """One DGP scene: per sample (time-ordered), the camera and LiDAR datums and the calibration."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.folder = self.path.parent
        scene = _read_json(self.path)
        try:
            datums = {d["key"]: d for d in scene["data"]}
            samples = sorted(
                scene["samples"], key=lambda s: (s["id"].get("timestamp", ""), int(s["id"].get("index", 0)))
            )
        except (KeyError, TypeError) as err:
            raise DataError(f"{self.path} is not a DGP scene (missing {err})") from None
        self.samples = []
        for sample in samples:
            by_name = {}
            for key in sample.get("datum_keys", []):
                datum = datums.get(key)
                if datum is None:
                    raise DataError(
                        f"{self.path}: sample {sample['id']} names datum {key}, which the scene lacks"
                    )
                by_name[datum["id"]["name"]] = datum["datum"]
            self.samples.append({"datums": by_name, "calibration_key": sample.get("calibration_key")})
        self._calibrations: dict[str, dict] = {}

    def calibration(self, key: str) -> dict[str, dict]:
        if key not in self._calibrations:
            self._calibrations[key] = read_calibration(self.folder / "calibration" / f"{key}.json")
        return self._calibrations[key]

    def camera_datum(self, index: int, camera: str) -> dict | None:
        datum = self.samples[index]["datums"].get(camera)
        return datum.get("image") if datum else None

    def lidar_datum(self, index: int) -> tuple[str, dict] | None:
        for name, datum in self.samples[index]["datums"].items():
            if "point_cloud" in datum:
                return name, datum["point_cloud"]
        return None


def ddad_records(
    root: str | Path,
    subset: str,
    offsets: Sequence[int],
    camera: str = DEFAULT_CAMERA,
    split: str | None = None,
    with_depth: bool | None = None,
) -> list[FrameRecord]:
    """Records of one camera over the scenes of ``subset``.

    Samples whose neighbours fall outside their scene are dropped (and counted in the log).

    ``with_depth`` defaults to true for val/test (LiDAR projection costs time per item).
    """
    with_depth = subset != "train" if with_depth is None else with_depth
    records, candidates = [], 0
    for scene_path in scene_files(root, subset, split):
        scene = Scene(scene_path)
        count = len(scene.samples)
        for index in range(count):
            target = scene.camera_datum(index, camera)
            if target is None:
                continue
            candidates += 1
            neighbours = [index + o for o in offsets]
            if any(not 0 <= n < count or scene.camera_datum(n, camera) is None for n in neighbours):
                continue
            images = [scene.camera_datum(n, camera) for n in neighbours]
            paths = [scene.folder / image["filename"] for image in images]
            for path in paths:
                if not path.is_file():
                    raise DataError(f"frame not found: {path} (named in {scene_path})")
            sensors = scene.calibration(scene.samples[index]["calibration_key"])
            if camera not in sensors or sensors[camera]["K"] is None:
                raise DataError(f"calibration of {scene_path} has no pinhole intrinsics for {camera}")
            K = sensors[camera]["K"]
            size = (int(target["width"]), int(target["height"]))
            depth = None
            lidar = scene.lidar_datum(index)
            if with_depth and lidar is not None and lidar[0] in sensors:
                T_camera_lidar = (
                    np.linalg.inv(sensors[camera]["T_vehicle_sensor"]) @ sensors[lidar[0]]["T_vehicle_sensor"]
                )
                depth = functools.partial(
                    _lidar_depth, scene.folder / lidar[1]["filename"], T_camera_lidar, K, size
                )
            records.append(
                FrameRecord(
                    sample_id=f"{scene.folder.name} {Path(target['filename']).stem} {camera}",
                    frames=tuple(FrameRef(p) for p in paths),
                    K=K,
                    K_size=size,
                    depth_gt=depth,
                    world_poses=np.stack([pose_from_dgp(image["pose"]) for image in images]),
                )
            )
    if candidates == 0:
        raise DataError(
            f"no {camera} images in the {subset} scenes of {root}; check data.camera (e.g. CAMERA_01)"
        )
    drop_message(f"ddad {subset}", candidates - len(records), candidates, offsets, root)
    if with_depth and any(r.depth_gt is None for r in records):
        log.warning("ddad: some samples have no LiDAR scan; ground-truth depth left out for all")
        records = [dataclasses.replace(r, depth_gt=None) for r in records]
    return records
