"""The Sample contract shared by all datasets: augmentation, masks, optional ground truth, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mfdepth.config import DataConfig
from mfdepth.data import DataError, build_dataset, mask_path_for
from mfdepth.data.augment import ColorJitter, apply_color_jitter, draw_augmentation, item_generator


def _seed_where(flip: bool, jitter: bool) -> int:
    for seed in range(200):
        draw = draw_augmentation(item_generator(seed, 0, 0), True, True)
        if draw.flip == flip and (draw.jitter is not None) == jitter:
            return seed
    raise AssertionError("no such seed")


def write_frames(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return folder


def test_colour_jitter_uses_the_same_factors_for_every_frame(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    root = write_frames(tmp_path / "same", [image, image, image])
    cfg = DataConfig(dataset="folder", root=str(root), height=32, width=64, focal_px=50.0)
    sample = build_dataset(cfg, "train", augment=True, seed=_seed_where(flip=False, jitter=True))[0]
    aug = sample["frames_aug"]
    assert not torch.allclose(aug[0], sample["frames"][0], atol=1e-3)
    torch.testing.assert_close(aug[1], aug[0])
    torch.testing.assert_close(aug[2], aug[0])
    plain = build_dataset(cfg, "train", augment=False)[0]
    assert plain["frames_aug"] is plain["frames"] or torch.equal(plain["frames_aug"], plain["frames"])


def test_brightness_jitter_known_answer():
    frames = torch.full((2, 3, 4, 4), 0.5)
    out = apply_color_jitter(
        frames, ColorJitter(brightness=1.1, contrast=1.0, saturation=1.0, hue=0.0, order=(0, 1, 2, 3))
    )
    torch.testing.assert_close(out, torch.full_like(frames, 0.55))


def test_augmentation_draws_depend_only_on_seed_epoch_and_index():
    draws = {
        (s, e, i): draw_augmentation(item_generator(s, e, i), True, True)
        for s in (0, 1)
        for e in (0, 1)
        for i in (0, 5)
    }
    assert draws[(0, 0, 5)] == draw_augmentation(item_generator(0, 0, 5), True, True)
    assert len({repr(d) for d in draws.values()}) > 4
    flips = [draw_augmentation(item_generator(0, 0, i), True, True).flip for i in range(400)]
    assert 0.4 < np.mean(flips) < 0.6
    # Switching flipping off leaves the colours alone.
    with_flip = draw_augmentation(item_generator(7, 0, 0), True, True)
    without = draw_augmentation(item_generator(7, 0, 0), False, True)
    assert without.flip is False and without.jitter == with_flip.jitter


def test_mask_path_for_known_answers(tmp_path):
    assert mask_path_for(tmp_path, "2011_09_26/2011_09_26_drive_0001_sync 5 l") == (
        tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync" / "5_l.png"
    )
    assert mask_path_for(tmp_path, "frames 000123 -") == tmp_path / "frames" / "000123.png"
    assert mask_path_for(tmp_path, "scene_01 1556 CAMERA_01") == tmp_path / "scene_01" / "1556_CAMERA_01.png"
    with pytest.raises(DataError, match="outside the mask directory"):
        mask_path_for(tmp_path, "../escape 1 l")


def _gradient_frames(n: int, height: int = 32, width: int = 64) -> list[np.ndarray]:
    u = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    return [np.broadcast_to(u + 10 * i, (height, width, 3)).clip(0, 255).astype(np.uint8) for i in range(n)]


def test_dynamic_mask_is_read_from_mask_path_for_and_flipped_with_the_frames(tmp_path):
    root = write_frames(tmp_path / "seq", _gradient_frames(3))
    cfg = DataConfig(dataset="folder", root=str(root), height=32, width=64, focal_px=40.0)
    masks = tmp_path / "masks"
    mask = np.zeros((32, 64), np.uint8)
    mask[:, :10] = 255
    path = mask_path_for(masks, "seq 0001 -")
    path.parent.mkdir(parents=True)
    Image.fromarray(mask).save(path)
    plain = build_dataset(cfg, "train", mask_dir=masks)[0]
    assert plain["dynamic_mask"].shape == (1, 32, 64)
    assert plain["dynamic_mask"][0, :, :10].min() == 1 and plain["dynamic_mask"][0, :, 10:].max() == 0
    flipped = build_dataset(
        cfg, "train", augment=True, mask_dir=masks, seed=_seed_where(flip=True, jitter=False)
    )[0]
    torch.testing.assert_close(flipped["dynamic_mask"], plain["dynamic_mask"].flip(-1))
    torch.testing.assert_close(flipped["frames"], plain["frames"].flip(-1))
    path.unlink()
    with pytest.raises(DataError, match=rf"depth inconsistency mask not found: {path}.*masks stage"):
        build_dataset(cfg, "train", mask_dir=masks)[0]


def write_synthetic_like_drive(root: Path) -> str:
    """The synthetic world's layout on a tiny scale: KITTI raw plus gt/depth/*.npy and gt/dynamic/*.png."""
    date, drive = "2026_01_01", "2026_01_01/2026_01_01_drive_0001_sync"
    (root / date).mkdir(parents=True)
    (root / date / "calib_cam_to_cam.txt").write_text(
        "P_rect_02: 30 0 31.5 0 0 30 15.5 0 0 0 1 0\nS_rect_02: 64 32\nR_rect_00: 1 0 0 0 1 0 0 0 1\n"
    )
    write_frames(root / drive / "image_02" / "data", [])
    for frame, image in enumerate(_gradient_frames(4)):
        Image.fromarray(image).save(root / drive / "image_02" / "data" / f"{frame:010d}.png")
        (root / drive / "gt" / "depth").mkdir(parents=True, exist_ok=True)
        (root / drive / "gt" / "dynamic").mkdir(parents=True, exist_ok=True)
        np.save(
            root / drive / "gt" / "depth" / f"{frame:010d}.npy", np.full((32, 64), 5.0 + frame, np.float32)
        )
        moving = np.zeros((32, 64), np.uint8)
        moving[4:8, 50:60] = 1
        Image.fromarray(moving).save(root / drive / "gt" / "dynamic" / f"{frame:010d}.png")
    (root / "splits" / "world").mkdir(parents=True)
    for subset in ("train", "test"):
        (root / "splits" / "world" / f"{subset}_files.txt").write_text(f"{drive} 1 l\n{drive} 2 l\n")
    return drive


def test_kitti_loader_reads_synthetic_depth_and_motion_masks_when_present(tmp_path):
    drive = write_synthetic_like_drive(tmp_path)
    cfg = DataConfig(dataset="kitti", root=str(tmp_path), split="world", height=32, width=64)
    dataset = build_dataset(cfg, "train")
    sample = dataset[1]
    assert sample["id"] == f"{drive} 2 l"
    torch.testing.assert_close(sample["depth_gt"], torch.full((1, 32, 64), 7.0))
    assert sample["motion_mask"].sum() == 40 and sample["motion_mask"][0, 4:8, 50:60].min() == 1
    flipped = build_dataset(cfg, "train", augment=True, seed=_seed_where(flip=True, jitter=False))[0]
    torch.testing.assert_close(flipped["motion_mask"], dataset[0]["motion_mask"].flip(-1))


def test_items_are_identical_with_and_without_worker_processes(tmp_path):
    write_synthetic_like_drive(tmp_path)
    cfg = DataConfig(dataset="kitti", root=str(tmp_path), split="world", height=32, width=64)
    dataset = build_dataset(cfg, "train", augment=True, seed=11)
    dataset.set_epoch(2)
    serial = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 1
    for key in ("frames", "frames_aug", "K", "depth_gt", "motion_mask"):
        torch.testing.assert_close(serial[0][key], parallel[0][key])
    assert serial[0]["id"] == parallel[0]["id"]


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)])
def test_colour_jitter_matches_torchvisions_definitions(order):
    import torchvision.transforms.functional as TF

    frames = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    frames[0, :, :4] = 0.5  # grey pixels have no hue
    jitter = ColorJitter(brightness=1.15, contrast=0.85, saturation=1.2, hue=-0.07, order=order)
    expected = frames
    steps = {
        0: lambda x: TF.adjust_brightness(x, jitter.brightness),
        1: lambda x: TF.adjust_contrast(x, jitter.contrast),
        2: lambda x: TF.adjust_saturation(x, jitter.saturation),
        3: lambda x: TF.adjust_hue(x, jitter.hue),
    }
    for step in order:
        expected = steps[step](expected)
    torch.testing.assert_close(apply_color_jitter(frames, jitter), expected, atol=1e-5, rtol=0)


def _sequence(tmp_path: Path, frames: int = 5) -> Path:
    rng = np.random.default_rng(3)
    return write_frames(tmp_path / "seq", [rng.integers(0, 255, (48, 96, 3), dtype=np.uint8) for _ in range(frames)])


def test_frame_cache_gives_the_same_samples_as_reading_every_time(tmp_path):
    root = _sequence(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(root), height=32, width=64, focal_px=50.0, frame_cache_mb=0)
    reference = build_dataset(cfg, "train", augment=True, seed=4)
    cfg.frame_cache_mb = 16
    cached = build_dataset(cfg, "train", augment=True, seed=4)
    for _ in range(2):  # the second pass reads every frame from the cache
        for i in range(len(reference)):
            expected, got = reference[i], cached[i]
            for key in ("frames", "frames_aug", "K"):
                torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert len(cached.frame_cache.entries) == 5 and len(reference.frame_cache.entries) == 0


def test_frame_cache_reads_each_frame_once(tmp_path):
    root = _sequence(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(root), height=32, width=64, focal_px=50.0, frame_cache_mb=16)
    dataset = build_dataset(cfg, "train")
    first = [dataset[i]["frames"] for i in range(len(dataset))]
    for path in root.glob("*.png"):
        path.unlink()
    for i, frames in enumerate(first):
        torch.testing.assert_close(dataset[i]["frames"], frames, rtol=0, atol=0)


def test_frame_cache_drops_the_least_recently_used_within_its_budget():
    from mfdepth.data.base import FrameCache

    frame = np.zeros((256, 256, 4), dtype=np.uint8)  # 0.25 MiB each
    cache = FrameCache(megabytes=0.6)  # room for two
    cache.put("a", frame, (1, 1))
    cache.put("b", frame.copy(), (2, 2))
    assert cache.get("a")[1] == (1, 1)  # "a" is now the most recent
    cache.put("c", frame.copy(), (3, 3))
    assert sorted(cache.entries) == ["a", "c"] and cache.bytes == 2 * frame.nbytes
    cache.put("huge", np.zeros((1024, 1024, 3), dtype=np.uint8), (4, 4))  # larger than the budget
    assert "huge" not in cache.entries and cache.bytes == 2 * frame.nbytes
    assert FrameCache(0).budget == 0


def test_frame_cache_travels_empty_to_worker_processes():
    import pickle

    from mfdepth.data.base import FrameCache

    cache = FrameCache(megabytes=1)
    cache.put("a", np.zeros((8, 8, 3), dtype=np.uint8), (8, 8))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.budget == cache.budget and not copy.entries and copy.bytes == 0


def test_negative_frame_cache_is_refused_with_its_key(tmp_path):
    root = _sequence(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(root), height=32, width=64, focal_px=50.0, frame_cache_mb=-1)
    with pytest.raises(DataError, match="data.frame_cache_mb"):
        build_dataset(cfg, "train")
