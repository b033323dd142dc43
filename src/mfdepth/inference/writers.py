"""Depth outputs: ``.npy`` metres, KITTI-style 16-bit PNG, colourised PNG, side-by-side MP4, PLY clouds.

:class:`DepthWriter` takes one frame at a time (``add``) and writes every requested format; the MP4 is
streamed to ffmpeg as frames arrive, so a long video never sits in memory.

Layout under the output folder: ``npy/<name>.npy``, ``png16/<name>.png``, ``color/<name>.png``,
``ply/<name>.ply`` and ``<video_name>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("npy", "png16", "color", "mp4", "ply")
PNG16_SCALE = 256.0
"""16-bit PNG units per metre (KITTI's depth maps): 0 means no depth, the largest is 255.996 m."""


def parse_formats(text: str) -> tuple[str, ...]:
    """``"npy,png16"`` -> ``("npy", "png16")``; ``"all"`` -> every format. Unknown names raise ValueError."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return FORMATS
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown output format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: finite, positive depth."""
    return np.isfinite(depth) & (depth > 0)


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """``(H, W)`` metres -> ``(H, W)`` uint16 ``round(depth * 256)``, 0 where invalid, saturated at 65535."""
    scaled = np.where(valid_depth(depth), depth * PNG16_SCALE, 0.0)
    return np.clip(np.round(scaled), 0, 65535).astype(np.uint16)


def png16_to_depth(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`depth_to_png16` (to within half a unit, 2 mm): uint16 -> float32 metres."""
    return values.astype(np.float32) / PNG16_SCALE


def colourise_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """``(H, W)`` metres -> ``(H, W, 3)`` uint8: magma on log depth, ``near`` bright, ``far`` dark, invalid black.

    A fixed [near, far] keeps colours comparable across the frames of a video; log depth shows near
    structure and far facades alike.
    """
    from matplotlib import colormaps

    near = max(float(near), 1e-3)
    far = max(float(far), near * 1.01)
    valid = valid_depth(depth)
    clipped = np.clip(np.where(valid, depth, far), near, far)
    level = (np.log(clipped) - np.log(near)) / (np.log(far) - np.log(near))
    rgb = colormaps["magma"](1.0 - level)[..., :3]
    rgb[~valid] = 0.0
    return np.round(rgb * 255).astype(np.uint8)


def colour_range(depth: np.ndarray) -> tuple[float, float]:
    """A colour range ``(near, far)`` in metres from one depth map: its 2nd and 98th percentiles."""
    values = depth[valid_depth(depth)]
    if values.size == 0:
        return 1.0, 100.0
    near, far = np.percentile(values, [2.0, 98.0])
    return float(near), float(max(far, near * 1.5))


def point_cloud(depth: np.ndarray, K: np.ndarray, image: np.ndarray | None = None):
    """Back-project valid pixels to camera-frame points.

    Args:
        depth: ``(H, W)`` metres; pixels with non-finite or non-positive depth are left out.
        K: ``(3, 3)`` intrinsics in pixels of ``depth``.
        image: optional ``(H, W, 3)`` uint8 colours.
    Returns:
        ``(points (N, 3) float32 metres, colours (N, 3) uint8 or None, pixels (N, 2) int (row, col))``,
        in row-major pixel order.
    """
    import torch

    from mfdepth.geometry import backproject

    height, width = depth.shape
    valid = valid_depth(depth)
    safe = np.where(valid, depth, 0.0).astype(np.float64)
    points = backproject(torch.from_numpy(safe)[None, None], torch.as_tensor(K, dtype=torch.float64)[None])
    points = points[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    rows, cols = np.nonzero(valid)
    colours = None if image is None else image[rows, cols].astype(np.uint8)
    return points[rows, cols].astype(np.float32), colours, np.stack([rows, cols], axis=1)


def write_ply(path: str | Path, points: np.ndarray, colours: np.ndarray | None = None) -> Path:
    """Binary little-endian PLY with ``x, y, z`` float32 (metres) and optional ``red, green, blue`` uint8."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colours is not None:
        vertices["red"], vertices["green"], vertices["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    path = Path(path)
    PlyData([PlyElement.describe(vertices, "vertex")], text=False).write(str(path))
    return path


def _even(size: int) -> int:
    return size + (size % 2)


class Mp4Writer:
    """Side-by-side ``input | colourised depth`` frames streamed into an H.264 MP4 (imageio-ffmpeg).

    Frames are padded with black to even sizes (yuv420p needs them). Every frame must have the size
    of the first one; a later frame of another size is resized to it.
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 10.0
        self._writer = None
        self._size: tuple[int, int] | None = None  # (height, width) of the first side-by-side frame
        self.frames = 0

    def add(self, image: np.ndarray, coloured_depth: np.ndarray) -> None:
        """``image`` and ``coloured_depth``: ``(H, W, 3)`` uint8 of the same size."""
        frame = np.concatenate([image, coloured_depth], axis=1)
        if self._writer is None:
            import imageio_ffmpeg

            self._size = frame.shape[:2]
            self._writer = imageio_ffmpeg.write_frames(
                str(self.path), (_even(frame.shape[1]), _even(frame.shape[0])), fps=self.fps, codec="libx264",
                macro_block_size=1, ffmpeg_log_level="error",
            )
            self._writer.send(None)
        height, width = self._size
        if frame.shape[:2] != (height, width):
            frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
        padded = np.zeros((_even(height), _even(width), 3), dtype=np.uint8)
        padded[:height, :width] = frame
        self._writer.send(padded)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class DepthWriter:
    """Writes each predicted frame in the requested formats.

    Args:
        out_dir: output folder (created).
        formats: subset of :data:`FORMATS`.
        video_name: file name stem of the MP4.
        fps: MP4 frame rate (the input video's, or 10).
        colour_limits: ``(near, far)`` metres for the colour map; default: from the first frame's
            percentiles, then fixed for the rest of the sequence so colours do not flicker.
    """

    def __init__(
        self,
        out_dir: str | Path,
        formats: tuple[str, ...] | list[str],
        video_name: str = "depth",
        fps: float = 10.0,
        colour_limits: tuple[float, float] | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.formats = tuple(formats)
        self.colour_limits = colour_limits
        self.written: list[Path] = []
        for name in self.formats:
            if name in ("npy", "png16", "color", "ply"):
                (self.out_dir / name).mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._mp4 = Mp4Writer(self.out_dir / f"{video_name}.mp4", fps) if "mp4" in self.formats else None

    def add(self, name: str, image: np.ndarray, depth: np.ndarray, K: np.ndarray | None) -> None:
        """One frame: ``image`` ``(H, W, 3)`` uint8, ``depth`` ``(H, W)`` float32 metres, ``K`` (3, 3) pixels."""
        depth = depth.astype(np.float32, copy=False)
        if "npy" in self.formats:
            path = self.out_dir / "npy" / f"{name}.npy"
            np.save(path, depth)
            self.written.append(path)
        if "png16" in self.formats:
            path = self.out_dir / "png16" / f"{name}.png"
            Image.fromarray(depth_to_png16(depth)).save(path)
            self.written.append(path)
        coloured = None
        if "color" in self.formats or "mp4" in self.formats:
            if self.colour_limits is None:
                self.colour_limits = colour_range(depth)
            coloured = colourise_depth(depth, *self.colour_limits)
        if "color" in self.formats:
            path = self.out_dir / "color" / f"{name}.png"
            Image.fromarray(coloured).save(path)
            self.written.append(path)
        if self._mp4 is not None:
            self._mp4.add(image, coloured)
        if "ply" in self.formats:
            if K is None:
                raise ValueError("PLY output needs intrinsics K to back-project the depth")
            points, colours, _ = point_cloud(depth, K, image)
            self.written.append(write_ply(self.out_dir / "ply" / f"{name}.ply", points, colours))

    def close(self) -> None:
        """Finish the MP4 (if any). Safe to call twice."""
        if self._mp4 is not None:
            self._mp4.close()
            if self._mp4.frames:
                self.written.append(self._mp4.path)
            self._mp4 = None

    def __enter__(self) -> DepthWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
