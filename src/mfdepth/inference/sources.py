"""Frames to predict on: an image pair, a folder of frames (or of such folders), or a video file.

Folders are found with the data layer's :func:`mfdepth.data.folder.find_sequences` (frames in name
order, every ``stride``-th, ``K.txt`` picked up). Videos are decoded lazily, one frame at a time, so a
long video is never held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfdepth.data.errors import DataError
from mfdepth.data.files import image_size, read_rgb
from mfdepth.data.folder import find_sequences, is_video


@dataclass
class Frame:
    """One input frame: ``name`` (output file stem) and ``image`` ``(H, W, 3)`` uint8 RGB."""

    name: str
    image: np.ndarray


@dataclass
class FrameSource:
    """One sequence of frames.

    Attributes:
        name: sequence name (the MP4 file stem; the output sub-folder when there are several).
        frames: called to start reading; yields :class:`Frame` in temporal order.
        count: number of frames (for a video an estimate from its duration).
        size: ``(width, height)`` of the first frame.
        fps: frame rate for the MP4 (the video's; 10 for image folders).
        K_file: a ``K.txt`` next to the frames, or None.
        origin: the path the frames come from (for messages).
    """

    name: str
    frames: Callable[[], Iterator[Frame]]
    count: int
    size: tuple[int, int]
    fps: float
    K_file: Path | None
    origin: Path


def _image_frames(paths: list[Path]) -> Callable[[], Iterator[Frame]]:
    def frames() -> Iterator[Frame]:
        for path in paths:
            yield Frame(path.stem, read_rgb(path))

    return frames


def pair_source(previous: str | Path, target: str | Path) -> FrameSource:
    """The two frames of ``--pair PREV TARGET`` (sizes may differ); named after the target."""
    previous, target = Path(previous), Path(target)
    for path in (previous, target):
        if not path.is_file():
            raise DataError(f"image not found: {path} (--pair takes the previous frame, then the target frame)")
    return FrameSource(target.stem, _image_frames([previous, target]), 2, image_size(target), 10.0, None, target)


def _video_meta(path: Path) -> dict:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration, KeyError) as err:
        raise DataError(f"cannot decode video {path} ({err.__class__.__name__}: {err})") from None
    return meta


def _video_frames(path: Path, stride: int, width: int, height: int) -> Callable[[], Iterator[Frame]]:
    def frames() -> Iterator[Frame]:
        import imageio_ffmpeg

        frame_bytes = width * height * 3
        reader = imageio_ffmpeg.read_frames(str(path))
        try:
            next(reader)
            for number, raw in enumerate(reader):
                if number % stride:
                    continue
                if len(raw) != frame_bytes:
                    raise DataError(f"video {path}: frame {number} is truncated")
                yield Frame(f"{number:06d}", np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy())
        except (RuntimeError, OSError) as err:
            raise DataError(f"cannot decode video {path} ({err.__class__.__name__}: {err})") from None
        finally:
            reader.close()

    return frames


def video_source(path: str | Path, stride: int = 1) -> FrameSource:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    meta = _video_meta(path)
    width, height = (int(v) for v in meta["size"])
    fps = float(meta.get("fps") or 0.0) or 10.0
    duration = float(meta.get("duration") or 0.0)
    count = max(1, int(round(duration * fps)) // stride) if duration > 0 else 0
    return FrameSource(path.stem, _video_frames(path, stride, width, height), count, (width, height), fps / stride,
                       None, path)


def input_sources(path: str | Path, stride: int = 1) -> list[FrameSource]:
    """The sequences of ``--input PATH``: a video file, a folder of frames, or a folder of such folders."""
    path = Path(path)
    if stride < 1:
        raise DataError(f"stride must be at least 1, got {stride}")
    if path.is_file():
        if not is_video(path):
            raise DataError(
                f"{path} is neither a video nor a folder; give a folder of frames, a video file, or use "
                "--pair PREV TARGET for two images"
            )
        return [video_source(path, stride)]
    if not path.exists():
        raise DataError(f"input not found: {path}; give a folder of frames or a video file")
    sequences = find_sequences(path, stride)
    return [
        FrameSource(s.name, _image_frames(s.frames), len(s.frames), image_size(s.frames[0]), 10.0, s.K_file,
                    path if len(sequences) == 1 else path / s.name)
        for s in sequences
    ]
