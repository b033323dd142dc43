"""The user's own data: the HoloLens sample (depth + poses), intrinsics sources, stride and video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mfdepth.config import DataConfig
from mfdepth.data import DataError, build_dataset
from mfdepth.geometry import inverse_warp, invert_transform, scale_intrinsics


def hololens_cfg(samples: Path, **overrides) -> DataConfig:
    settings = dict(dataset="folder", root=str(samples / "hololens_indoor"), height=360, width=540)
    settings.update(overrides)
    return DataConfig(**settings)


def photometric_errors(
    sample: dict, poses: np.ndarray, depth: torch.Tensor, source: int, invert: bool = False
):
    """Mean L1 error of the warped and of the unwarped source against the target (known depth, in view)."""
    poses = torch.as_tensor(poses, dtype=torch.float32)
    T_source_target = invert_transform(poses[source]) @ poses[0]
    if invert:
        T_source_target = invert_transform(T_source_target)
    target, image = sample["frames"][:1], sample["frames"][source : source + 1]
    warped, valid = inverse_warp(image, depth[None], T_source_target[None], sample["K"][:1])
    keep = (valid > 0) & (depth[None] > 0)
    assert keep.float().mean() > 0.25
    warped_error = (warped - target).abs().mean(1, keepdim=True)[keep].mean()
    identity_error = (image - target).abs().mean(1, keepdim=True)[keep].mean()
    return float(warped_error), float(identity_error)


def test_hololens_frames_warp_onto_their_neighbours_with_depth_poses_and_K(samples):
    dataset = build_dataset(hololens_cfg(samples), "test")
    assert len(dataset) == 2 and dataset.sample_ids == ["hololens_indoor 00027 -", "hololens_indoor 00028 -"]
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["depth_gt"].shape == (1, 360, 540)
        for source in (1, 2):
            warped, identity = photometric_errors(
                sample, dataset.world_poses(index), sample["depth_gt"], source
            )
            assert warped < 0.2 * identity
            # The inverse transform must not explain the images: the poses are camera-to-world.
            wrong, _ = photometric_errors(
                sample, dataset.world_poses(index), sample["depth_gt"], source, invert=True
            )
            assert wrong > 0.5 * identity


def test_hololens_warp_still_holds_at_half_resolution_with_the_scaled_K(samples):
    dataset = build_dataset(hololens_cfg(samples, height=180, width=270), "test")
    sample = dataset[0]
    native_K = torch.tensor(np.loadtxt(samples / "hololens_indoor" / "K.txt"), dtype=torch.float32)
    torch.testing.assert_close(sample["K"][0], scale_intrinsics(native_K, 0.5, 0.5))
    depth = F.interpolate(sample["depth_gt"][None], size=(180, 270), mode="nearest")[0]
    warped, identity = photometric_errors(sample, dataset.world_poses(0), depth, source=1)
    assert warped < 0.3 * identity


def test_missing_intrinsics_is_a_clear_error(tmp_path):
    folder = tmp_path / "myframes"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 32), (i * 40, 0, 0)).save(folder / f"{i:03d}.png")
    cfg = DataConfig(dataset="folder", root=str(folder), height=32, width=64)
    with pytest.raises(
        DataError, match=rf"^no intrinsics for {folder}: set data.intrinsics=K.yaml .* or data.focal_px=PX"
    ):
        build_dataset(cfg, "train")


@pytest.fixture
def frames_100x50(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(7):
        Image.new("RGB", (100, 50), (i * 30, 100, 50)).save(folder / f"f{i:02d}.jpg")
    return folder


@pytest.mark.parametrize(
    "name, content",
    [
        ("K.yaml", "fx: 80\nfy: 70\ncx: 49.5\ncy: 24.5\n"),
        ("K.json", json.dumps({"K": [[80, 0, 49.5], [0, 70, 24.5], [0, 0, 1]]})),
        ("K.yml", "K: [80, 0, 49.5, 0, 70, 24.5, 0, 0, 1]\n"),
        ("K_half.yaml", "fx: 40\nfy: 35\ncx: 24.5\ncy: 12.0\nwidth: 50\nheight: 25\n"),
        ("Kn.yaml", "normalized: true\nK: [[0.8, 0, 0.5], [0, 1.4, 0.5], [0, 0, 1]]\n"),
        ("Kn.json", json.dumps([[0.8, 0, 0.5], [0, 1.4, 0.5], [0, 0, 1]])),
    ],
)
def test_intrinsics_files_in_pixels_or_normalised(frames_100x50, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    cfg = DataConfig(dataset="folder", root=str(frames_100x50), height=32, width=64, intrinsics=str(path))
    K = build_dataset(cfg, "train")[0]["K"][0]
    if name.startswith("Kn"):
        expected = torch.tensor([[0.8 * 64, 0, 0.5 * 64], [0, 1.4 * 32, 0.5 * 32], [0, 0, 1]])
    else:
        expected = scale_intrinsics(
            torch.tensor([[80.0, 0, 49.5], [0, 70.0, 24.5], [0, 0, 1]]), 64 / 100, 32 / 50
        )
    torch.testing.assert_close(K, expected, rtol=1e-5, atol=1e-4)


def test_focal_length_puts_the_principal_point_at_the_image_centre_and_stride_skips_frames(frames_100x50):
    cfg = DataConfig(dataset="folder", root=str(frames_100x50), height=32, width=64, focal_px=90.0, stride=2)
    dataset = build_dataset(cfg, "train")
    assert dataset.sample_ids == ["frames f02 -", "frames f04 -"]
    K = dataset[0]["K"][0]
    torch.testing.assert_close(
        K, scale_intrinsics(torch.tensor([[90.0, 0, 49.5], [0, 90.0, 24.5], [0, 0, 1]]), 0.64, 0.64)
    )
    # Neighbours of f02 with stride 2 are f00 and f04: their red channels tell them apart.
    reds = dataset[0]["frames"][:, 0, 16, 32] * 255
    torch.testing.assert_close(reds, torch.tensor([60.0, 0.0, 120.0]), atol=3.0, rtol=0)


def test_bad_intrinsics_file_names_the_file(frames_100x50, tmp_path):
    path = tmp_path / "K.yaml"
    path.write_text("focal: 80\n")
    cfg = DataConfig(dataset="folder", root=str(frames_100x50), height=32, width=64, intrinsics=str(path))
    with pytest.raises(DataError, match=rf"intrinsics file {path}: expected fx, fy, cx, cy"):
        build_dataset(cfg, "train")


def test_video_file_is_read_with_stride_and_scaled_intrinsics(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "clip.mp4"
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250), (250, 10, 250)]
    writer = imageio_ffmpeg.write_frames(str(path), (96, 64), fps=10, macro_block_size=16, quality=9)
    writer.send(None)
    for colour in colours:
        writer.send(np.ascontiguousarray(np.broadcast_to(np.array(colour, np.uint8), (64, 96, 3))))
    writer.close()
    cfg = DataConfig(
        dataset="folder", root=str(path), height=32, width=64, focal_px=100.0, frame_offsets=[0, -1]
    )
    dataset = build_dataset(cfg, "train")
    assert len(dataset) == 5 and dataset.sample_ids[0] == "clip.mp4 1 -"
    sample = dataset[0]
    means = sample["frames"].mean(dim=(2, 3)) * 255
    torch.testing.assert_close(
        means, torch.tensor([colours[1], colours[0]], dtype=torch.float32), atol=12.0, rtol=0
    )
    torch.testing.assert_close(
        sample["K"][0],
        scale_intrinsics(torch.tensor([[100.0, 0, 47.5], [0, 100.0, 31.5], [0, 0, 1]]), 64 / 96, 0.5),
    )
    strided = build_dataset(DataConfig(**{**cfg.__dict__, "stride": 2}), "train")
    assert strided.sample_ids == ["clip.mp4 2 -", "clip.mp4 4 -"]


def test_unreadable_video_names_the_file(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all")
    cfg = DataConfig(dataset="folder", root=str(path), height=32, width=64, focal_px=100.0)
    with pytest.raises(DataError, match=rf"cannot decode video {path}"):
        build_dataset(cfg, "train")


def test_ground_truth_beside_the_frames_as_npy_metres_or_png_millimetres(samples, tmp_path):
    source = samples / "hololens_indoor"
    root = tmp_path / "own_video"
    (root / "depth").mkdir(parents=True)
    names = sorted(p.name for p in (source / "images").iterdir())
    for name in names:  # frames directly in the folder this time, ground truth in depth/
        (root / name).write_bytes((source / "images" / name).read_bytes())
    (root / "K.txt").write_bytes((source / "K.txt").read_bytes())
    millimetres = [np.asarray(Image.open(source / "depth" / n), dtype=np.float64) for n in names]
    np.save(root / "depth" / f"{Path(names[0]).stem}.npy", (millimetres[0] / 1000.0).astype(np.float32))
    for name in names[1:]:
        (root / "depth" / name).write_bytes((source / "depth" / name).read_bytes())
    dataset = build_dataset(DataConfig(dataset="folder", root=str(root), height=360, width=540,
                                       frame_offsets=[0]), "test")
    assert dataset.has_depth_gt
    for index, mm in enumerate(millimetres):
        assert np.allclose(dataset[index]["depth_gt"][0].numpy(), mm / 1000.0, atol=1e-6)
    np.save(root / "depth" / f"{Path(names[0]).stem}.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="2-D array"):
        build_dataset(DataConfig(dataset="folder", root=str(root), height=360, width=540, frame_offsets=[0]),
                      "test")[0]
