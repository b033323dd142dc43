"""The synthetic world loads through the KITTI loader unchanged, plus its depth and motion ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mfdepth.config import DataConfig
from mfdepth.data import build_dataset
from mfdepth.geometry import scale_intrinsics

synth = pytest.importorskip("mfdepth.synth")
if not hasattr(synth, "ensure_world"):
    pytest.skip(
        "mfdepth.synth has no ensure_world yet (the synthetic world is written by another module)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    synth.ensure_world(root, "tiny")
    return root


def cfg(root: Path, dataset: str = "synthetic", **overrides) -> DataConfig:
    settings = dict(
        dataset=dataset, root=str(root), split="synthetic", synth_preset="tiny", height=64, width=192
    )
    settings.update(overrides)
    return DataConfig(**settings)


def _p_rect_02(path: Path) -> np.ndarray:
    for line in path.read_text().splitlines():
        if line.startswith("P_rect_02:"):
            return np.array([float(v) for v in line.split(":")[1].split()]).reshape(3, 4)
    raise AssertionError(f"no P_rect_02 in {path}")


def _s_rect_02(path: Path) -> tuple[float, float]:
    for line in path.read_text().splitlines():
        if line.startswith("S_rect_02:"):
            width, height = (float(v) for v in line.split(":")[1].split())
            return width, height
    raise AssertionError(f"no S_rect_02 in {path}")


def test_synthetic_world_is_the_kitti_loader_unchanged(world):
    synthetic = build_dataset(cfg(world), "train")
    kitti = build_dataset(cfg(world, dataset="kitti"), "train")
    assert len(synthetic) == len(kitti) > 0
    a, b = synthetic[0], kitti[0]
    torch.testing.assert_close(a["frames"], b["frames"])
    torch.testing.assert_close(a["K"], b["K"])
    date = a["id"].split("/")[0]
    calib = world / date / "calib_cam_to_cam.txt"
    P, (width, height) = _p_rect_02(calib), _s_rect_02(calib)
    expected = scale_intrinsics(torch.tensor(P[:, :3], dtype=torch.float64), 192 / width, 64 / height).float()
    torch.testing.assert_close(a["K"][0], expected)


def test_synthetic_world_carries_depth_and_motion_ground_truth(world):
    sample = build_dataset(cfg(world), "train")[0]
    folder, frame, _ = sample["id"].split()
    depth_file = world / folder / "gt" / "depth" / f"{int(frame):010d}.npy"
    if depth_file.is_file():
        np.testing.assert_array_equal(sample["depth_gt"][0].numpy(), np.load(depth_file))
    if (world / folder / "gt" / "dynamic").is_dir():
        assert sample["motion_mask"].shape == (1, 64, 192)
        assert set(torch.unique(sample["motion_mask"]).tolist()) <= {0.0, 1.0}
    test = build_dataset(cfg(world, frame_offsets=[0, -1]), "test")
    assert test.has_depth_gt
