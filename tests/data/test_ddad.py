"""DDAD-style DGP scenes: intrinsics, poses, LiDAR depth, scene lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mfdepth.config import DataConfig
from mfdepth.data import DataError, build_dataset
from mfdepth.data.calibration import quaternion_to_matrix
from mfdepth.data.ddad import Scene, lidar_depth_map, read_calibration, read_lidar_points
from mfdepth.geometry import scale_intrinsics

FX, FY, CX, CY = 2167.6926048451924, 2156.230994942208, 951.519334127026, 604.9892891421556  # CAMERA_01


def scene_dir(samples: Path) -> Path:
    return samples / "dgp_test_scene" / "scene_01"


def ddad_cfg(root, **overrides) -> DataConfig:
    settings = dict(dataset="ddad", root=str(root), height=192, width=320, frame_offsets=[0, -1])
    settings.update(overrides)
    return DataConfig(**settings)


def test_quaternion_known_answers():
    np.testing.assert_allclose(quaternion_to_matrix(1, 0, 0, 0), np.eye(3))
    half = np.sqrt(0.5)
    np.testing.assert_allclose(
        quaternion_to_matrix(half, 0, 0, half), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12
    )


def test_lidar_lands_inside_the_camera_image(samples):
    folder = scene_dir(samples)
    sensors = read_calibration(next((folder / "calibration").glob("*.json")))
    T_camera_lidar = (
        np.linalg.inv(sensors["CAMERA_01"]["T_vehicle_sensor"]) @ sensors["LIDAR"]["T_vehicle_sensor"]
    )
    points = read_lidar_points(next((folder / "point_cloud" / "LIDAR").glob("*.npz")))
    depth = lidar_depth_map(points, T_camera_lidar, sensors["CAMERA_01"]["K"], (1936, 1216))
    rows, cols = np.nonzero(depth)
    assert depth.shape == (1216, 1936) and rows.size > 4000
    assert 1.0 < depth[depth > 0].min() and depth.max() < 250.0
    # The camera looks forward from ~1.4 m: the ground fills the rows below the principal point.
    assert np.median(rows) > CY and cols.min() < 100 and cols.max() > 1836


def test_scene_samples_give_camera_intrinsics_poses_and_depth(samples):
    dataset = build_dataset(ddad_cfg(scene_dir(samples)), "test")
    assert dataset.sample_ids == [
        "scene_01 15569195939415230 CAMERA_01",
        "scene_01 15569195940415242 CAMERA_01",
    ]
    sample = dataset[0]
    expected = scale_intrinsics(
        torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1]], dtype=torch.float64), 320 / 1936, 192 / 1216
    )
    torch.testing.assert_close(sample["K"][0], expected.float())
    assert sample["frames"].shape == (2, 3, 192, 320)
    assert sample["depth_gt"].shape == (1, 1216, 1936) and (sample["depth_gt"] > 0).sum() > 4000
    poses = dataset.world_poses(0)
    assert poses.shape == (2, 4, 4)
    np.testing.assert_allclose(poses[0, :3, 3], [399.32493503224146, -258.9284779186444, 13.842220091587786])
    np.testing.assert_allclose(poses[0, :3, :3] @ poses[0, :3, :3].T, np.eye(3), atol=1e-9)


def test_training_subset_skips_the_lidar_projection(samples):
    assert "depth_gt" not in build_dataset(ddad_cfg(scene_dir(samples)), "train")[0]


def test_dataset_json_scene_splits(tmp_path, samples):
    (tmp_path / "scene_01").symlink_to(scene_dir(samples))
    scene_json = next(scene_dir(samples).glob("scene_*.json")).name
    (tmp_path / "ddad.json").write_text(
        json.dumps({"scene_splits": {"0": {"filenames": [f"scene_01/{scene_json}"]}}})
    )
    assert len(build_dataset(ddad_cfg(tmp_path), "train")) == 2
    with pytest.raises(DataError, match=r"ddad\.json has no 'val' scenes"):
        build_dataset(ddad_cfg(tmp_path), "val")


def test_unknown_camera_is_a_clear_error(samples):
    with pytest.raises(DataError, match="no CAMERA_09 images.*data.camera"):
        build_dataset(ddad_cfg(scene_dir(samples), camera="CAMERA_09"), "train")


def test_scene_orders_samples_by_time(samples):
    scene = Scene(next(scene_dir(samples).glob("scene_*.json")))
    names = [scene.camera_datum(i, "CAMERA_01")["filename"] for i in range(len(scene.samples))]
    assert names == sorted(names) and len(names) == 3
