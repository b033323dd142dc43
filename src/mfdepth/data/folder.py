"""The user's own data: a folder of frames, a folder of such folders, or a video file.

Frames are taken in name order (every ``stride``-th). Intrinsics come from, in order: the
``intrinsics`` file (YAML/JSON: fx, fy, cx, cy or K, pixels, or normalised with ``normalized: true``),
the ``focal_px`` focal length (principal point at the image centre), or a ``K.txt`` (9 numbers, pixels)
next to the frames; otherwise it is an error.

The layout ``images/*.png``, ``depth/*.png`` (uint16 millimetres, same names), ``poses.txt`` (one
camera-to-world 4x4 row-major matrix per line, in image order) and ``K.txt`` (3x3 pixels) - the
HoloLens sample of deep-video-mvs - is read as a folder with ground-truth depth and poses.

A folder has no splits: train, val and test all see every frame.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mfdepth.data.base import FrameRecord, FrameRef, SequenceDataset, drop_message
from mfdepth.data.calibration import Intrinsics, check_intrinsics, intrinsics_from_focal, load_intrinsics_file
from mfdepth.data.errors import DataError
from mfdepth.data.files import image_size, list_images, natural_key, read_numbers, read_uint16_png

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
DEPTH_PNG_SCALE = 1e-3
"""Metres per unit of ``depth/*.png`` (uint16 millimetres)."""
MAX_VIDEO_BYTES = 8 * 1024**3
"""Decoded video frames are kept in memory at the training size; beyond this, extract them to a folder."""


@dataclass
class FolderSequence:
    """One sequence of frames found under the root.

    Attributes:
        name: folder name used in sample ids.
        frames: frame files after the stride.
        depth: ``depth/`` files matching ``frames``, or None.
        poses: ``(T, 4, 4)`` camera-to-world poses matching ``frames``, or None.
        K_file: a ``K.txt`` found next to the frames, or None.
    """

    name: str
    frames: list[Path]
    depth: list[Path] | None = None
    poses: np.ndarray | None = None
    K_file: Path | None = None


def _read_poses(path: Path, count: int) -> np.ndarray:
    values = read_numbers(path)
    if values.size != 16 * count:
        raise DataError(
            f"{path} holds {values.size} numbers; expected one 4x4 row-major pose (16 numbers) per image, "
            f"{count} images"
        )
    return values.reshape(count, 4, 4)


def _sequence_in(folder: Path, name: str, stride: int) -> FolderSequence | None:
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    all_frames = list_images(image_dir)
    if not all_frames:
        return None
    picked = list(range(0, len(all_frames), stride))
    frames = [all_frames[i] for i in picked]
    depth = None
    if (folder / "depth").is_dir():
        # Ground truth beside the frames: depth/<stem>.npy (float metres) or depth/<name>.png (uint16 mm).
        candidates = []
        for f in frames:
            npy = folder / "depth" / f"{f.stem}.npy"
            candidates.append(npy if npy.is_file() else folder / "depth" / f"{f.stem}.png")
        if all(c.is_file() for c in candidates):
            depth = candidates
        else:
            log.warning("folder %s: depth/ lacks some frames; ground-truth depth left out", folder)
    poses = None
    if (folder / "poses.txt").is_file():
        poses = _read_poses(folder / "poses.txt", len(all_frames))[picked]
    K_file = folder / "K.txt" if (folder / "K.txt").is_file() else None
    return FolderSequence(name, frames, depth, poses, K_file)


def find_sequences(root: str | Path, stride: int = 1) -> list[FolderSequence]:
    """The frame sequences under ``root``: itself (or its ``images/``), else each sub-folder."""
    root = Path(root)
    if stride < 1:
        raise DataError(f"stride must be at least 1, got {stride}")
    if not root.is_dir():
        raise DataError(f"frame folder not found: {root}")
    single = _sequence_in(root, root.name, stride)
    if single is not None:
        return [single]
    folders = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: natural_key(d.name))
    nested = [_sequence_in(d, d.name, stride) for d in folders]
    nested = [s for s in nested if s is not None]
    if not nested:
        raise DataError(f"no image frames in {root} or its sub-folders (looked for png/jpg files)")
    return nested


def resolve_intrinsics(
    where: Path,
    intrinsics_file: str | None,
    focal_px: float | None,
    K_file: Path | None,
    size: tuple[int, int],
) -> tuple[np.ndarray, tuple[int, int] | None, bool]:
    """``(K, K_size, normalized)`` for frames of ``size`` = (width, height), from the first source given."""
    if intrinsics_file:
        found: Intrinsics = load_intrinsics_file(intrinsics_file)
        if not found.normalized and found.size is None:
            check_intrinsics(found.K, f"intrinsics file {intrinsics_file}", size)
        return found.K, None if found.normalized else (found.size or size), found.normalized
    if focal_px is not None:
        return intrinsics_from_focal(focal_px, *size), size, False
    if K_file is not None:
        found = load_intrinsics_file(K_file)
        if not found.normalized:
            check_intrinsics(found.K, f"intrinsics file {K_file}", size)
        return found.K, None if found.normalized else size, found.normalized
    raise DataError(
        f"no intrinsics for {where}: set data.intrinsics=K.yaml (fx, fy, cx, cy in pixels) or "
        "data.focal_px=PX, or put a K.txt (9 numbers) next to the frames"
    )


def _read_depth_png(path: Path) -> np.ndarray:
    """Ground-truth depth in metres (0 = none) from ``.npy`` (float metres) or ``.png`` (uint16 millimetres)."""
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"ground-truth depth {path} is not a readable .npy array ({err})") from None
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise DataError(f"ground-truth depth {path} must be a 2-D array of metres, got {depth.shape} {depth.dtype}")
        depth = depth.astype(np.float32)
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return read_uint16_png(path).astype(np.float32) * DEPTH_PNG_SCALE


def folder_records(
    root: str | Path,
    offsets: Sequence[int],
    stride: int = 1,
    intrinsics: str | None = None,
    focal_px: float | None = None,
) -> list[FrameRecord]:
    root = Path(root)
    records, candidates = [], 0
    sequences = find_sequences(root, stride)
    with_depth = all(s.depth is not None for s in sequences)
    with_poses = all(s.poses is not None for s in sequences)
    for sequence in sequences:
        size = image_size(sequence.frames[0])
        K, K_size, normalized = resolve_intrinsics(
            root if len(sequences) == 1 else root / sequence.name, intrinsics, focal_px, sequence.K_file, size
        )
        count = len(sequence.frames)
        for i, frame in enumerate(sequence.frames):
            candidates += 1
            neighbours = [i + o for o in offsets]
            if any(not 0 <= n < count for n in neighbours):
                continue
            records.append(
                FrameRecord(
                    sample_id=f"{sequence.name} {frame.stem} -",
                    frames=tuple(FrameRef(sequence.frames[n]) for n in neighbours),
                    K=K,
                    K_size=K_size,
                    K_normalized=normalized,
                    depth_gt=functools.partial(_read_depth_png, sequence.depth[i]) if with_depth else None,
                    world_poses=sequence.poses[neighbours] if with_poses else None,
                )
            )
    drop_message("folder", candidates - len(records), candidates, offsets, root)
    if not records:
        raise DataError(f"{root}: too few frames for frame offsets {list(offsets)} (stride {stride})")
    return records


# ---------------------------------------------------------------------------------------------
# Video files


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def decode_video(
    path: str | Path, height: int, width: int, stride: int = 1
) -> tuple[np.ndarray, tuple[int, int], float]:
    """Decode every ``stride``-th frame of a video, resized to ``height`` x ``width``.

    Returns:
        ``(frames (T, height, width, 3) uint8, (original width, original height), frames per second)``.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    if stride < 1:
        raise DataError(f"stride must be at least 1, got {stride}")
    frames = []
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        native_width, native_height = (int(v) for v in meta["size"])
        frame_bytes = native_width * native_height * 3
        for number, raw in enumerate(reader):
            if number % stride:
                continue
            if len(raw) != frame_bytes:
                raise DataError(f"video {path}: frame {number} is truncated")
            image = np.frombuffer(raw, dtype=np.uint8).reshape(native_height, native_width, 3)
            if (native_height, native_width) != (height, width):
                image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
            frames.append(image)
            if len(frames) * height * width * 3 > MAX_VIDEO_BYTES:
                raise DataError(
                    f"video {path} is too long to keep in memory at {height}x{width}; raise the stride or "
                    "extract its frames to a folder (ffmpeg -i VIDEO frames/%06d.png) and use that folder"
                )
    except (RuntimeError, OSError, StopIteration, KeyError) as err:
        raise DataError(f"cannot decode video {path} ({err.__class__.__name__}: {err})") from None
    if not frames:
        raise DataError(f"video {path} holds no frames")
    return np.stack(frames), (native_width, native_height), float(meta.get("fps", 0.0) or 0.0)


class VideoDataset(SequenceDataset):
    """A SequenceDataset whose frames were decoded from a video once, kept in memory at the training size."""

    def __init__(self, video_frames: np.ndarray, records, offsets, height, width, **kwargs):
        self.video_frames = video_frames
        super().__init__(records, offsets, height, width, **kwargs)

    def read_frame(self, ref: FrameRef) -> np.ndarray:
        return self.video_frames[ref.index]


def video_dataset(
    path: str | Path,
    offsets: Sequence[int],
    height: int,
    width: int,
    stride: int = 1,
    intrinsics: str | None = None,
    focal_px: float | None = None,
    **dataset_kwargs,
) -> VideoDataset:
    path = Path(path)
    frames, native_size, _ = decode_video(path, height, width, stride)
    K, K_size, normalized = resolve_intrinsics(path, intrinsics, focal_px, None, native_size)
    # Frames are stored resized, so pixel intrinsics must be scaled from the original size.
    K_size = None if normalized else K_size or native_size
    count = len(frames)
    records = []
    for i in range(count):
        neighbours = [i + o for o in offsets]
        if any(not 0 <= n < count for n in neighbours):
            continue
        records.append(
            FrameRecord(
                sample_id=f"{path.name} {i * stride} -",
                frames=tuple(FrameRef(path, index=n) for n in neighbours),
                K=K,
                K_size=K_size,
                K_normalized=normalized,
            )
        )
    drop_message("video", count - len(records), count, offsets, path)
    if not records:
        raise DataError(
            f"video {path}: {count} frames are too few for frame offsets {list(offsets)} (stride {stride})"
        )
    return VideoDataset(frames, records, offsets, height, width, name="video", source=path, **dataset_kwargs)
