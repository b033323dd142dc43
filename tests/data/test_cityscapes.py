"""Cityscapes on tiny generated files: preprocessed triplets and the raw evaluation layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfdepth.config import DataConfig
from mfdepth.data import DataError, build_dataset
from mfdepth.geometry import scale_intrinsics

TILE_COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]  # frames -1, 0, +1


def write_triplets(root: Path, write_split) -> None:
    city = root / "ulm"
    city.mkdir(parents=True)
    image = np.concatenate(
        [np.broadcast_to(np.array(c, np.uint8), (24, 40, 3)) for c in TILE_COLOURS], axis=1
    )
    Image.fromarray(np.ascontiguousarray(image)).save(city / "ulm_000064_000012.jpg", quality=95)
    (city / "ulm_000064_000012_cam.txt").write_text("30.0,0.0,19.5,0.0,31.0,11.5,0.0,0.0,1.0\n")
    write_split(root, "cs", "train", ["ulm ulm_000064_000012"])


def test_triplet_tiles_become_frames_in_offset_order_with_the_cam_txt_intrinsics(tmp_path, write_split):
    write_triplets(tmp_path, write_split)
    cfg = DataConfig(dataset="cityscapes", root=str(tmp_path), split="cs", height=32, width=64)
    sample = build_dataset(cfg, "train")[0]
    assert sample["id"] == "ulm ulm_000064_000012 l"
    means = sample["frames"].mean(dim=(2, 3)) * 255
    expected = torch.tensor([TILE_COLOURS[1], TILE_COLOURS[0], TILE_COLOURS[2]], dtype=torch.float32)
    torch.testing.assert_close(means, expected, atol=6.0, rtol=0)
    K = torch.tensor([[30.0, 0, 19.5], [0, 31.0, 11.5], [0, 0, 1]])
    torch.testing.assert_close(sample["K"][0], scale_intrinsics(K, 64 / 40, 32 / 24))


def test_triplets_cannot_serve_offsets_beyond_one(tmp_path, write_split):
    write_triplets(tmp_path, write_split)
    cfg = DataConfig(
        dataset="cityscapes", root=str(tmp_path), split="cs", height=32, width=64, frame_offsets=[0, -2]
    )
    with pytest.raises(DataError, match=r"triplets hold frames -1, 0, \+1 only"):
        build_dataset(cfg, "train")


BASELINE, FX = 0.2, 50.0


def write_raw(root: Path, write_split, with_neighbour: bool = True) -> None:
    name = "berlin_000000_000019"
    for folder in (
        "leftImg8bit/test/berlin",
        "leftImg8bit_sequence/test/berlin",
        "camera/test/berlin",
        "disparity/test/berlin",
    ):
        (root / folder).mkdir(parents=True)
    target = np.zeros((32, 64, 3), np.uint8)
    target[24:] = 255  # the ego car: cropped away
    Image.fromarray(target).save(root / "leftImg8bit/test/berlin" / f"{name}_leftImg8bit.png")
    if with_neighbour:
        Image.fromarray(np.full((32, 64, 3), 90, np.uint8)).save(
            root / "leftImg8bit_sequence/test/berlin/berlin_000000_000018_leftImg8bit.png"
        )
    camera = {
        "extrinsic": {"baseline": BASELINE},
        "intrinsic": {"fx": FX, "fy": 52.0, "u0": 31.5, "v0": 15.5},
    }
    (root / "camera/test/berlin" / f"{name}_camera.json").write_text(json.dumps(camera))
    disparity = np.zeros((32, 64), np.uint16)
    disparity[2, 3] = 1 + 256 * 4  # d = 4 px -> 0.2 * 50 / 4 = 2.5 m
    disparity[5, 6] = 1  # d = 0: infinitely far, unusable
    disparity[30, 30] = 1 + 256 * 2  # in the cropped-away bottom quarter
    Image.fromarray(disparity).save(root / "disparity/test/berlin" / f"{name}_disparity.png")
    write_split(root, "cityscapes", "test", [f"berlin {name}"])


def test_raw_layout_crops_the_ego_car_and_turns_disparity_into_depth(tmp_path, write_split):
    write_raw(tmp_path, write_split)
    cfg = DataConfig(
        dataset="cityscapes",
        root=str(tmp_path),
        split="cityscapes",
        height=24,
        width=64,
        frame_offsets=[0, -1],
    )
    sample = build_dataset(cfg, "test")[0]
    assert sample["frames"][0].max() == 0.0  # the white bottom quarter is gone
    torch.testing.assert_close(sample["frames"][1], torch.full((3, 24, 64), 90 / 255))
    depth = sample["depth_gt"][0]
    assert depth.shape == (24, 64)
    assert depth[2, 3] == pytest.approx(BASELINE * FX / 4.0) and (depth > 0).sum() == 1
    torch.testing.assert_close(sample["K"][0], torch.tensor([[FX, 0, 31.5], [0, 52.0, 15.5], [0, 0, 1]]))


def test_test_root_serves_the_raw_layout_while_root_holds_triplets(tmp_path, write_split):
    write_triplets(tmp_path / "pre", write_split)
    write_raw(tmp_path / "raw", write_split)
    cfg = DataConfig(
        dataset="cityscapes",
        root=str(tmp_path / "pre"),
        test_root=str(tmp_path / "raw"),
        split="cityscapes",
        height=24,
        width=64,
        frame_offsets=[0, -1],
    )
    assert "depth_gt" in build_dataset(cfg, "test")[0]


def test_raw_layout_missing_sequence_frame_names_the_file(tmp_path, write_split):
    write_raw(tmp_path, write_split, with_neighbour=False)
    cfg = DataConfig(
        dataset="cityscapes",
        root=str(tmp_path),
        split="cityscapes",
        height=24,
        width=64,
        frame_offsets=[0, -1],
    )
    with pytest.raises(DataError, match=r"missing neighbour frame .*berlin_000000_000018_leftImg8bit\.png"):
        build_dataset(cfg, "test")
