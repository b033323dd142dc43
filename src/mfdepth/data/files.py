"""Reading images, 16-bit PNGs and small text files with errors that name the file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfdepth.data.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
"""Suffixes (lower case) treated as image frames when listing a folder."""

# PIL raises several unrelated types for unreadable files; all of them mean "this file is broken".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def _open_decoded(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        image = Image.open(path)
        image.load()
    except _DECODE_ERRORS as err:
        raise DataError(
            f"cannot decode image {path} ({err.__class__.__name__}: {err}); the file is corrupt or "
            "truncated: extract or download it again"
        ) from None
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (grey or RGBA images are converted).

    16-bit grey frames (PIL modes ``I;16*`` and ``I``) are scaled from 0-65535 to 0-255; PIL's own
    conversion would clip them to a white image. (PIL already reads 16-bit colour PNGs as 8-bit RGB.)
    """
    path = Path(path)
    image = _open_decoded(path)
    if image.mode == "I" or image.mode.startswith("I;16"):
        array = np.asarray(image)
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise DataError(
                f"{path}: {image.mode} pixel values outside the 16-bit range; save the frames as 8- or 16-bit "
                "PNG or JPEG"
            )
        grey = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        raise DataError(f"{path}: floating-point images are not frames; save them as 8- or 16-bit PNG or JPEG")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def read_uint16_png(path: str | Path) -> np.ndarray:
    """A single-channel 16-bit PNG (depth, disparity) as ``(H, W)`` uint16, values as stored."""
    path = Path(path)
    image = _open_decoded(path)
    array = np.asarray(image)
    if array.ndim != 2:
        raise DataError(f"{path}: expected a single-channel 16-bit PNG, got mode {image.mode}")
    if array.dtype != np.uint16:
        # PIL opens 16-bit greyscale PNGs as mode I (int32) or I;16; anything 8-bit is a different file.
        if (
            image.mode not in ("I", "I;16", "I;16B")
            or array.max(initial=0) > 65535
            or array.min(initial=0) < 0
        ):
            raise DataError(f"{path}: expected a 16-bit PNG, got mode {image.mode}")
        array = array.astype(np.uint16)
    return array


def read_mask_png(path: str | Path) -> np.ndarray:
    """A mask PNG as ``(H, W)`` bool: any non-zero value (1 or 255) is set."""
    image = _open_decoded(Path(path))
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0]
    return array > 0


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as err:
        raise DataError(f"cannot read image header of {path} ({err}); the file is corrupt") from None


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``frame2`` before ``frame10``."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name))


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural name order (``frame2`` before ``frame10``;
    hidden files skipped)."""
    folder = Path(folder)
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return [folder / name for name in sorted(names, key=natural_key)]


def read_numbers(path: str | Path, count: int | None = None) -> np.ndarray:
    """All numbers of a small text file (separated by spaces, commas or newlines) as float64."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    text = path.read_text().replace(",", " ")
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: expected only numbers separated by spaces or commas") from None
    if count is not None and values.size != count:
        raise DataError(f"{path}: expected {count} numbers, found {values.size}")
    return values


def save_npz_atomically(path: str | Path, arrays: dict) -> None:
    """``np.savez`` to ``path`` through a partial file renamed into place (one per process: DDP ranks may
    write the same cache at once), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)


def table_rows(table_ids, sample_ids: list[str], what: str) -> list[int]:
    """The row of a per-sample table (``table_ids``) for each of ``sample_ids``, in that order;
    a :class:`DataError` naming ``what`` when the table lacks some."""
    index = {sample_id: i for i, sample_id in enumerate(table_ids)}
    missing = [s for s in sample_ids if s not in index]
    if missing:
        raise DataError(f"{what} table lacks {len(missing)} samples, e.g. '{missing[0]}'")
    return [index[s] for s in sample_ids]
