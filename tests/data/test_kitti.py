"""KITTI raw: velodyne ground truth, intrinsics, augmentation, splits, `mfdepth prepare` and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mfdepth.cli import main
from mfdepth.config import DataConfig
from mfdepth.data import DataError, build_dataset, collate_samples
from mfdepth.data.calibration import load_kitti_calibration
from mfdepth.data.splits import packaged_splits_dir
from mfdepth.data.velodyne import read_velodyne_points, splat_nearest, velodyne_depth_map

DRIVE = "2011_09_26/2011_09_26_drive_0000_sync"


def kitti_cfg(root, **overrides) -> DataConfig:
    settings = dict(dataset="kitti", root=str(root), split="kitti_sample", height=192, width=640)
    settings.update(overrides)
    return DataConfig(**settings)


def p_rect_02(calib_file: Path) -> np.ndarray:
    for line in calib_file.read_text().splitlines():
        if line.startswith("P_rect_02:"):
            return np.array([float(v) for v in line.split(":")[1].split()]).reshape(3, 4)
    raise AssertionError("no P_rect_02 in the sample calibration")


# ---------------------------------------------------------------------------------------------
# Real sample


@pytest.mark.parametrize("frame", [0, 1, 2])
def test_velodyne_projection_of_the_sample_gives_15k_to_17k_pixels_within_2_8_to_80_m(samples, frame):
    root = samples / "kitti_raw_sample"
    calibration = load_kitti_calibration(root / "2011_09_26")
    points = read_velodyne_points(root / DRIVE / "velodyne_points" / "data" / f"{frame:010d}.bin")
    depth = velodyne_depth_map(points, calibration, "02")
    valid = depth[depth > 0]
    assert depth.shape == (375, 1242)
    assert 15_000 <= valid.size <= 17_000
    assert valid.min() >= 2.8 and valid.max() <= 80.0


def test_sample_intrinsics_are_p_rect_02_scaled_to_the_network_size(samples):
    root = samples / "kitti_raw_sample"
    P = p_rect_02(root / "2011_09_26" / "calib_cam_to_cam.txt")
    sample = build_dataset(kitti_cfg(root), "train")[0]
    sx, sy = 640 / 1242, 192 / 375
    expected = torch.tensor(
        [
            [P[0, 0] * sx, 0.0, (P[0, 2] + 0.5) * sx - 0.5],
            [0.0, P[1, 1] * sy, (P[1, 2] + 0.5) * sy - 0.5],
            [0, 0, 1],
        ],
        dtype=torch.float32,
    )
    assert sample["K"].shape == (4, 3, 3)
    torch.testing.assert_close(sample["K"][0], expected, rtol=1e-6, atol=1e-4)
    half = torch.tensor(
        [
            [P[0, 0] * sx / 2, 0, (P[0, 2] + 0.5) * sx / 2 - 0.5],
            [0, P[1, 1] * sy / 2, (P[1, 2] + 0.5) * sy / 2 - 0.5],
            [0, 0, 1],
        ]
    )
    torch.testing.assert_close(sample["K"][1], half.float(), rtol=1e-6, atol=1e-4)
    assert sample["frames"].shape == (3, 3, 192, 640)
    assert sample["offsets"].tolist() == [0, -1, 1]
    assert sample["id"] == f"{DRIVE} 1 l"
    assert 0.0 <= float(sample["frames"].min()) and float(sample["frames"].max()) <= 1.0


def test_average_intrinsics_reproduce_monodepth2s_matrix(samples):
    sample = build_dataset(kitti_cfg(samples / "kitti_raw_sample", average_intrinsics=True), "train")[0]
    expected = torch.tensor([[0.58 * 640, 0, 0.5 * 640], [0, 1.92 * 192, 0.5 * 192], [0, 0, 1]])
    torch.testing.assert_close(sample["K"][0], expected)


def _flip_seed(want: bool) -> int:
    from mfdepth.data.augment import draw_augmentation, item_generator

    for seed in range(100):
        if draw_augmentation(item_generator(seed, 0, 0), True, True).flip == want:
            return seed
    raise AssertionError("no seed gives the wanted flip")


def test_flipped_sample_has_mirrored_frames_and_mirrored_principal_point(samples):
    root = samples / "kitti_raw_sample"
    plain = build_dataset(kitti_cfg(root), "train")[0]
    seed = _flip_seed(want=True)
    flipped = build_dataset(kitti_cfg(root, color_jitter=False), "train", augment=True, seed=seed)[0]
    torch.testing.assert_close(flipped["frames"], plain["frames"].flip(-1))
    torch.testing.assert_close(flipped["frames_aug"], flipped["frames"])
    torch.testing.assert_close(
        flipped["K"][:, 0, 2], torch.tensor([639.0, 319.0, 159.0, 79.0]) - plain["K"][:, 0, 2]
    )
    torch.testing.assert_close(flipped["K"][:, 1], plain["K"][:, 1])
    no_flip = build_dataset(
        kitti_cfg(root, color_jitter=False, hflip=False), "train", augment=True, seed=seed
    )[0]
    torch.testing.assert_close(no_flip["frames"], plain["frames"])


def test_the_same_seed_gives_the_same_augmentation_and_the_epoch_changes_it(samples):
    root = samples / "kitti_raw_sample"
    a = build_dataset(kitti_cfg(root), "train", augment=True, seed=3)[0]
    b = build_dataset(kitti_cfg(root), "train", augment=True, seed=3)[0]
    torch.testing.assert_close(a["frames_aug"], b["frames_aug"])
    torch.testing.assert_close(a["K"], b["K"])
    dataset = build_dataset(kitti_cfg(root), "train", augment=True, seed=3)
    outputs = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        outputs.append(dataset[0]["frames_aug"])
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    dataset.set_epoch(0)
    torch.testing.assert_close(dataset[0]["frames_aug"], outputs[0])


def test_jpg_frames_are_detected_automatically(kitti_copy):
    folder = kitti_copy / DRIVE / "image_02" / "data"
    png = {}
    for path in sorted(folder.glob("*.png")):
        png[path.stem] = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(png[path.stem]).save(path.with_suffix(".jpg"), quality=95)
        path.unlink()
    sample = build_dataset(kitti_cfg(kitti_copy), "train")[0]
    reference = build_dataset(kitti_cfg(Path(__file__).parent / "samples" / "kitti_raw_sample"), "train")[0]
    assert (sample["frames"] - reference["frames"]).abs().mean() < 0.02


def test_split_files_next_to_the_data_win_over_packaged_ones(kitti_copy, write_split):
    assert (packaged_splits_dir() / "kitti_sample" / "train_files.txt").is_file()
    packaged = build_dataset(kitti_cfg(kitti_copy, frame_offsets=[0, -1]), "test")
    assert packaged.sample_ids == [f"{DRIVE} 1 l", f"{DRIVE} 2 l"]
    path = write_split(kitti_copy, "kitti_sample", "test", [f"{DRIVE} 2 l"])
    local = build_dataset(kitti_cfg(kitti_copy, frame_offsets=[0, -1]), "test")
    assert local.sample_ids == [f"{DRIVE} 2 l"] and local.source == str(path)


def test_collate_keeps_ground_truth_of_different_sizes_as_a_list():
    a = {"depth_gt": torch.zeros(1, 375, 1242), "index": 0}
    b = {"depth_gt": torch.zeros(1, 370, 1224), "index": 1}
    batch = collate_samples([a, b])
    assert isinstance(batch["depth_gt"], list) and batch["index"].tolist() == [0, 1]
    assert collate_samples([a, a])["depth_gt"].shape == (2, 1, 375, 1242)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_neighbour_inside_a_drive_names_the_file(kitti_copy, write_split):
    folder = kitti_copy / DRIVE / "image_02" / "data"
    (folder / "0000000003.png").symlink_to((folder / "0000000002.png").resolve())
    (folder / "0000000001.png").unlink()
    write_split(kitti_copy, "gap", "train", [f"{DRIVE} 2 l"])
    with pytest.raises(DataError, match=r"missing neighbour frame .*0000000001\.png \(offset -1"):
        build_dataset(kitti_cfg(kitti_copy, split="gap"), "train")


def test_neighbour_before_the_first_frame_drops_the_sample_with_a_count(kitti_copy, write_split, caplog):
    write_split(kitti_copy, "edge", "train", [f"{DRIVE} 0 l", f"{DRIVE} 1 l", f"{DRIVE} 2 l"])
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset(kitti_cfg(kitti_copy, split="edge"), "train")
    assert dataset.sample_ids == [f"{DRIVE} 1 l"]
    assert "dropped 2 of 3 samples" in caplog.text


def test_corrupt_png_names_the_file(kitti_copy):
    path = kitti_copy / DRIVE / "image_02" / "data" / "0000000002.png"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[:5000])
    dataset = build_dataset(kitti_cfg(kitti_copy), "train")
    with pytest.raises(DataError, match=r"cannot decode image .*0000000002\.png.*corrupt or truncated"):
        dataset[0]


def test_missing_calibration_names_the_file(kitti_copy):
    (kitti_copy / "2011_09_26" / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(DataError, match=r"calibration file not found: .*2011_09_26/calib_cam_to_cam\.txt"):
        build_dataset(kitti_cfg(kitti_copy), "train")


def test_unreadable_calibration_names_the_file(kitti_copy):
    (kitti_copy / "2011_09_26" / "calib_cam_to_cam.txt").write_text("P_rect_02: 1 2 3\nS_rect_02: 1242 375\n")
    with pytest.raises(DataError, match=r"calib_cam_to_cam\.txt: entry P_rect_02 must hold 12 numbers"):
        build_dataset(kitti_cfg(kitti_copy), "train")


def test_empty_split_names_the_split_file(kitti_copy, write_split):
    path = write_split(kitti_copy, "empty", "train", ["", "   "])
    with pytest.raises(DataError, match=f"split file {path} lists no samples"):
        build_dataset(kitti_cfg(kitti_copy, split="empty"), "train")


def test_unknown_split_names_both_places_looked_in(kitti_copy):
    with pytest.raises(
        DataError,
        match=r"split 'eigen_zhou' has no train list: neither .*kitti/splits/eigen_zhou/train_files\.txt",
    ):
        build_dataset(kitti_cfg(kitti_copy, split="eigen_zhou"), "train")


def test_bad_split_line_names_file_and_line(kitti_copy, write_split):
    path = write_split(kitti_copy, "bad", "train", [f"{DRIVE} 1 l", f"{DRIVE} one l"])
    with pytest.raises(DataError, match=f"line 2 of {path}: frame 'one' is not an integer"):
        build_dataset(kitti_cfg(kitti_copy, split="bad"), "train")


# ---------------------------------------------------------------------------------------------
# Ground truth: known answers on a tiny generated layout, and `mfdepth prepare`

FOCAL, CX, CY = 20.0, 19.0, 9.0


def write_tiny_kitti(root: Path, sizes: dict[str, tuple[int, int]]) -> list[str]:
    """Dates with images of different sizes, a pinhole calibration and a known velodyne scan per frame."""
    lines = []
    rng = np.random.default_rng(0)
    for date, (width, height) in sizes.items():
        (root / date).mkdir(parents=True)
        (root / date / "calib_cam_to_cam.txt").write_text(
            f"P_rect_02: {FOCAL} 0 {CX} 0 0 {FOCAL} {CY} 0 0 0 1 0\nS_rect_02: {width} {height}\n"
            "R_rect_00: 1 0 0 0 1 0 0 0 1\n"
        )
        # Velodyne x forward, y left, z up -> camera x right, y down, z forward.
        (root / date / "calib_velo_to_cam.txt").write_text("R: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 0\n")
        drive = f"{date}/{date}_drive_0001_sync"
        for frame in range(3):
            image_dir = root / drive / "image_02" / "data"
            velo_dir = root / drive / "velodyne_points" / "data"
            image_dir.mkdir(parents=True, exist_ok=True)
            velo_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
                image_dir / f"{frame:010d}.png"
            )
            points = np.array(
                [[10, 0, 0, 1], [5, 0, 0, 1], [10, -1, 0.5, 1], [-10, 0, 0, 1], [10, -30, 0, 1]],
                dtype=np.float32,
            )
            points.tofile(velo_dir / f"{frame:010d}.bin")
        lines.append(f"{drive} 1 l")
    return lines


def test_velodyne_projection_known_answer_and_nearest_return(tmp_path):
    write_tiny_kitti(tmp_path, {"2020_01_01": (40, 20)})
    calibration = load_kitti_calibration(tmp_path / "2020_01_01")
    points = read_velodyne_points(
        tmp_path / "2020_01_01/2020_01_01_drive_0001_sync/velodyne_points/data/0000000001.bin"
    )
    depth = velodyne_depth_map(points, calibration)
    expected = np.zeros((20, 40), np.float32)
    expected[9, 19] = 5.0  # two returns on the optical axis: the nearer one wins
    expected[8, 21] = 10.0  # (1 m right, 0.5 m up) at 10 m: 20 * 1 / 10 = 2 px right, 1 px up
    np.testing.assert_array_equal(depth, expected)
    legacy = velodyne_depth_map(points, calibration, monodepth2_convention=True)
    assert legacy[8, 18] == 5.0 and legacy[7, 20] == 10.0 and (legacy > 0).sum() == 2


def test_splat_nearest_keeps_the_smallest_depth_per_pixel():
    u, v = np.array([1, 1, 1, 0]), np.array([0, 0, 0, 1])
    depth = splat_nearest(u, v, np.array([7.0, 3.0, 9.0, 4.0], np.float32), (2, 2))
    np.testing.assert_array_equal(depth, [[0, 3], [4, 0]])


def test_prepare_writes_ragged_velodyne_ground_truth_and_the_test_split_reads_it(
    tmp_path, write_split, capsys
):
    lines = write_tiny_kitti(tmp_path, {"2020_01_01": (40, 20), "2020_01_02": (36, 18)})
    write_split(tmp_path, "tiny", "test", lines)
    assert main(["prepare", "kitti", "--data", str(tmp_path), "--split", "tiny", "--no-progress"]) == 0
    assert "2 frames" in capsys.readouterr().out
    with np.load(tmp_path / "splits" / "tiny" / "gt_depths.npz", allow_pickle=True) as archive:
        maps = archive["data"]
        assert str(archive["source"]) == "velodyne"
    assert maps.dtype == object and [m.shape for m in maps] == [(20, 40), (18, 36)]
    assert maps[0][9, 19] == 5.0 and maps[1][8, 21] == 10.0
    dataset = build_dataset(
        DataConfig(
            dataset="kitti", root=str(tmp_path), split="tiny", height=32, width=64, frame_offsets=[0, -1]
        ),
        "test",
    )
    batch = collate_samples([dataset[0], dataset[1]])
    assert [d.shape for d in batch["depth_gt"]] == [(1, 20, 40), (1, 18, 36)]
    np.testing.assert_array_equal(batch["depth_gt"][1][0].numpy(), maps[1])


def test_prepare_reads_improved_ground_truth_in_the_depth_completion_layout(tmp_path, write_split):
    lines = write_tiny_kitti(tmp_path / "raw", {"2020_01_01": (40, 20)})
    write_split(tmp_path / "raw", "bench", "test", lines)
    folder = (
        tmp_path
        / "annotated"
        / "val"
        / "2020_01_01_drive_0001_sync"
        / "proj_depth"
        / "groundtruth"
        / "image_02"
    )
    folder.mkdir(parents=True)
    raw = np.zeros((20, 40), np.uint16)
    raw[3, 4] = 3200  # 12.5 m
    Image.fromarray(raw).save(folder / "0000000001.png")
    args = [
        "prepare",
        "kitti",
        "--data",
        str(tmp_path / "raw"),
        "--split",
        "bench",
        "--improved",
        "--no-progress",
    ]
    assert main([*args, "--improved-dir", str(tmp_path / "annotated")]) == 0
    with np.load(tmp_path / "raw" / "splits" / "bench" / "gt_depths.npz", allow_pickle=True) as archive:
        depth = archive["data"][0]
        assert str(archive["source"]) == "improved"
    assert depth[3, 4] == 12.5 and (depth > 0).sum() == 1


def test_prepare_reports_missing_improved_ground_truth_and_missing_scans(tmp_path, write_split, capsys):
    lines = write_tiny_kitti(tmp_path, {"2020_01_01": (40, 20)})
    write_split(tmp_path, "bench", "test", lines)
    assert (
        main(["prepare", "kitti", "--data", str(tmp_path), "--split", "bench", "--improved", "--no-progress"])
        == 2
    )
    assert "eigen_benchmark" in capsys.readouterr().err
    scan = tmp_path / "2020_01_01/2020_01_01_drive_0001_sync/velodyne_points/data/0000000001.bin"
    scan.unlink()
    assert main(["prepare", "kitti", "--data", str(tmp_path), "--split", "bench", "--no-progress"]) == 2
    assert f"velodyne scan not found: {scan}" in capsys.readouterr().err


def test_prepare_on_the_real_sample_matches_the_projection(kitti_copy):
    assert (
        main(["prepare", "kitti", "--data", str(kitti_copy), "--split", "kitti_sample", "--no-progress"]) == 0
    )
    dataset = build_dataset(kitti_cfg(kitti_copy, frame_offsets=[0, -1]), "test")
    depth = dataset[1]["depth_gt"][0].numpy()
    calibration = load_kitti_calibration(kitti_copy / "2011_09_26")
    points = read_velodyne_points(kitti_copy / DRIVE / "velodyne_points" / "data" / "0000000002.bin")
    np.testing.assert_array_equal(depth, velodyne_depth_map(points, calibration))
