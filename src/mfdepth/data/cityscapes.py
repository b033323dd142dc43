"""Cityscapes, in the two layouts the field uses.

* Preprocessed triplets (training): ``<root>/<city>/<frame_name>.jpg|png`` holding frames -1, 0, +1 side
  by side (ego car already cropped away) and ``<root>/<city>/<frame_name>_cam.txt`` with the 9 numbers of
  K in pixels of one tile. Split lines: ``<city> <frame_name>``.
* Raw (evaluation): ``<root>/leftImg8bit/<subset>/<city>/<frame_name>_leftImg8bit.png`` for the target,
  ``<root>/leftImg8bit_sequence/<subset>/<city>/<city>_<seq>_<frame+o>_leftImg8bit.png`` for neighbours,
  ``<root>/camera/<subset>/<city>/<frame_name>_camera.json`` for K and the stereo baseline, and optionally
  ``<root>/disparity/<subset>/<city>/<frame_name>_disparity.png`` for ground truth
  (``d = (p - 1) / 256`` for ``p > 0``, depth = baseline * fx / d). As in ManyDepth's evaluation, the bottom
  quarter of image and depth (the ego car) is cropped away.

The layout is detected from the root: a ``leftImg8bit`` folder means raw.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfdepth.data.base import FrameRecord, FrameRef
from mfdepth.data.errors import DataError
from mfdepth.data.files import read_numbers, read_uint16_png
from mfdepth.data.splits import read_split_lines

KEEP_TOP = 0.75
"""Fraction of raw Cityscapes rows kept (the bottom quarter shows the ego car)."""
SUBSETS = ("test", "val", "train", "train_extra")
_TRIPLET_EXTENSIONS = (".jpg", ".png", ".jpeg")


def is_raw_layout(root: str | Path) -> bool:
    return (Path(root) / "leftImg8bit").is_dir()


def _parse(split_file) -> list[tuple[int, str, str]]:
    parsed = []
    for number, text in read_split_lines(split_file):
        tokens = text.split()
        if len(tokens) < 2:
            raise DataError(f"line {number} of {split_file}: expected '<city> <frame_name>', got '{text}'")
        parsed.append((number, tokens[0], tokens[1]))
    return parsed


def read_camera_json(path: str | Path) -> dict:
    """Cityscapes ``*_camera.json``: returns ``{"K": (3, 3), "baseline": metres}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"camera file not found: {path}; Cityscapes evaluation needs camera_trainvaltest")
    try:
        data = json.loads(path.read_text())
        intrinsic = data["intrinsic"]
        K = np.array(
            [
                [intrinsic["fx"], 0.0, intrinsic["u0"]],
                [0.0, intrinsic["fy"], intrinsic["v0"]],
                [0.0, 0.0, 1.0],
            ],
            dtype=np.float64,
        )
        baseline = float(data["extrinsic"]["baseline"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read camera file {path} ({err.__class__.__name__}: {err})") from None
    return {"K": K, "baseline": baseline}


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values ``(H, W)`` uint16 to depth ``(H, W)`` float32 metres (0 = none).

    ``p = 0`` is invalid; otherwise ``d = (p - 1) / 256`` pixels, and ``d = 0`` (``p = 1``) is infinitely far,
    which no metric can use, so it is marked invalid too.
    """
    disparity = (raw.astype(np.float32) - 1.0) / 256.0
    depth = np.zeros(raw.shape, dtype=np.float32)
    valid = (raw > 0) & (disparity > 0)
    depth[valid] = baseline * fx / disparity[valid]
    return depth


def _disparity_depth(disparity_path: Path, camera_path: Path) -> np.ndarray:
    camera = read_camera_json(camera_path)
    depth = disparity_to_depth(read_uint16_png(disparity_path), camera["baseline"], camera["K"][0, 0])
    return depth[: int(round(depth.shape[0] * KEEP_TOP))]


def _read_cam_txt(path: Path) -> np.ndarray:
    return read_numbers(path, 9).reshape(3, 3)


def triplet_records(root: str | Path, split_file, offsets: Sequence[int]) -> list[FrameRecord]:
    root = Path(root)
    if any(o not in (-1, 0, 1) for o in offsets):
        raise DataError(
            f"Cityscapes triplets hold frames -1, 0, +1 only, but data.frame_offsets is {list(offsets)}; "
            "use [0, -1, 1] or [0, -1]"
        )
    records = []
    for number, city, frame_name in _parse(split_file):
        candidates = [root / city / f"{frame_name}{extension}" for extension in _TRIPLET_EXTENSIONS]
        image = next((path for path in candidates if path.is_file()), None)
        if image is None:
            raise DataError(
                f"triplet image not found: {root / city / frame_name}.jpg (or .png), "
                f"line {number} of {split_file}"
            )
        camera = root / city / f"{frame_name}_cam.txt"
        if not camera.is_file():
            raise DataError(f"intrinsics file not found: {camera} (line {number} of {split_file})")
        records.append(
            FrameRecord(
                sample_id=f"{city} {frame_name} l",
                frames=tuple(FrameRef(image, tile=o + 1, tiles=3) for o in offsets),
                K=functools.partial(_read_cam_txt, camera),
            )
        )
    return records


def _find_subset(root: Path, city: str, frame_name: str, cache: dict) -> str | None:
    if city in cache:
        return cache[city]
    for subset in SUBSETS:
        if (root / "leftImg8bit" / subset / city / f"{frame_name}_leftImg8bit.png").is_file():
            cache[city] = subset
            return subset
    return None


def raw_records(root: str | Path, split_file, offsets: Sequence[int]) -> list[FrameRecord]:
    root = Path(root)
    subsets: dict[str, str] = {}
    parsed = []
    for number, city, frame_name in _parse(split_file):
        subset = _find_subset(root, city, frame_name, subsets)
        target = root / "leftImg8bit" / (subset or "test") / city / f"{frame_name}_leftImg8bit.png"
        if subset is None or not target.is_file():
            raise DataError(f"frame not found: {target} (line {number} of {split_file})")
        try:
            city_part, sequence, frame = frame_name.rsplit("_", 2)
            frame_number = int(frame)
        except ValueError:
            raise DataError(
                f"line {number} of {split_file}: '{frame_name}' is not <city>_<seq>_<frame>"
            ) from None
        frames = []
        for offset in offsets:
            if offset == 0:
                frames.append(FrameRef(target, keep_top=KEEP_TOP))
                continue
            neighbour = (
                root
                / "leftImg8bit_sequence"
                / subset
                / city
                / f"{city_part}_{sequence}_{frame_number + offset:06d}_leftImg8bit.png"
            )
            if not neighbour.is_file():
                raise DataError(
                    f"missing neighbour frame {neighbour} (offset {offset:+d} of {frame_name}, "
                    f"line {number} of {split_file}); extract leftImg8bit_sequence_trainvaltest into {root}"
                )
            frames.append(FrameRef(neighbour, keep_top=KEEP_TOP))
        camera = root / "camera" / subset / city / f"{frame_name}_camera.json"
        disparity = root / "disparity" / subset / city / f"{frame_name}_disparity.png"
        parsed.append((city, frame_name, tuple(frames), camera, disparity))

    with_gt = all(disparity.is_file() for *_, disparity in parsed)
    records = []
    for city, frame_name, frames, camera, disparity in parsed:
        records.append(
            FrameRecord(
                sample_id=f"{city} {frame_name} l",
                frames=frames,
                # Cropping the bottom rows leaves the pixel coordinates of the kept rows, and so K, unchanged.
                K=read_camera_json(camera)["K"],
                depth_gt=functools.partial(_disparity_depth, disparity, camera) if with_gt else None,
            )
        )
    return records


def cityscapes_records(root: str | Path, split_file, offsets: Sequence[int]) -> list[FrameRecord]:
    """Records of a Cityscapes split in whichever layout ``root`` holds."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Cityscapes root not found: {root}")
    if is_raw_layout(root):
        return raw_records(root, split_file, offsets)
    return triplet_records(root, split_file, offsets)
