"""Fixtures of the data-layer tests: paths of the real samples and cheap writable copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent / "samples"
KITTI_DRIVE = "2011_09_26/2011_09_26_drive_0000_sync"


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def kitti_copy(tmp_path) -> Path:
    """A writable KITTI root: calibration copied, frames and scans symlinked to the sample."""
    source = SAMPLES / "kitti_raw_sample"
    root = tmp_path / "kitti"
    for path in source.rglob("*"):
        target = root / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".txt":
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return root


def _write_split(root: Path, split: str, subset: str, lines: list[str]) -> Path:
    folder = root / "splits" / split
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{subset}_files.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def write_split():
    """``write_split(root, split, subset, lines) -> path`` of ``<root>/splits/<split>/<subset>_files.txt``."""
    return _write_split
