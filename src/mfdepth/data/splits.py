"""Split files: where they are looked for and how they are read.

A split is a folder named after it holding ``train_files.txt``, ``val_files.txt``, ``test_files.txt``
(Monodepth2 format, one sample per line) and, once ``mfdepth prepare`` has run, ``gt_depths.npz``.
Each file is looked for first in ``<root>/splits/<name>/`` and then in the package's own
``mfdepth/splits/<name>/``, so a user can drop the official lists next to the data, or override one
packaged file, without touching the package.
"""

from __future__ import annotations

from pathlib import Path

from mfdepth.data.errors import DataError

SPLIT_FILES = {"train": "train_files.txt", "val": "val_files.txt", "test": "test_files.txt"}
"""Subset name -> file name inside a split folder."""


def packaged_splits_dir() -> Path:
    """The folder of split lists shipped with mfdepth (``mfdepth/splits``)."""
    return Path(__file__).resolve().parent.parent / "splits"


def split_file_name(subset: str) -> str:
    if subset not in SPLIT_FILES:
        raise DataError(f"unknown subset '{subset}': expected one of {', '.join(SPLIT_FILES)}")
    return SPLIT_FILES[subset]


def split_search_dirs(root: str | Path, split: str) -> list[Path]:
    """The folders searched for split ``split``, in order."""
    if not split or "/" in split or "\\" in split or split in (".", ".."):
        raise DataError(f"split name '{split}' must be a plain folder name such as eigen_zhou")
    return [Path(root) / "splits" / split, packaged_splits_dir() / split]


def find_split_file(root: str | Path, split: str, file_name: str) -> Path | None:
    """First existing ``<dir>/<file_name>`` over :func:`split_search_dirs`, or None."""
    for folder in split_search_dirs(root, split):
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    return None


def resolve_split_file(root: str | Path, split: str, subset: str) -> Path:
    """Path of the list file of ``subset`` (train/val/test) of ``split``; a clear error if none exists."""
    file_name = split_file_name(subset)
    found = find_split_file(root, split, file_name)
    if found is None:
        tried = " nor ".join(str(d / file_name) for d in split_search_dirs(root, split))
        raise DataError(
            f"split '{split}' has no {subset} list: neither {tried} exists; put the split's {file_name} in "
            f"{Path(root) / 'splits' / split} (see {packaged_splits_dir() / 'README.md'} for the official "
            "KITTI lists)"
        )
    return found


def read_split_lines(path: str | Path) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines of a split file as ``(line_number, text)`` (1-based numbers).

    Raises DataError naming the file when it holds no sample.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read split file {path} ({err})") from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise DataError(
            f"split file {path} lists no samples; fill it (one sample per line) or pick another split"
        )
    return lines
