"""The synthetic world on disk: KITTI raw layout, calibration, ground truth, splits, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfdepth.cli import main
from mfdepth.data.calibration import load_kitti_calibration
from mfdepth.data.files import read_mask_png, read_rgb, read_uint16_png
from mfdepth.data.kitti import parse_split
from mfdepth.synth import DATE, PRESETS, ensure_world, intrinsics, read_poses, render_sequence, write_world
from mfdepth.synth.writer import plan_drives

SMALL = dict(sequences=3, frames=4, height=32, width=96)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return ensure_world(root, "tiny", progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_world_has_the_kitti_raw_layout_and_ground_truth(tiny):
    size = PRESETS["tiny"]
    info = json.loads((tiny / "world.json").read_text())
    assert info["seed"] == 0 and info["preset"] == "tiny" and info["frames"] == size["frames"]
    assert len(info["drives"]) == size["sequences"]
    for drive in info["drives"]:
        folder = tiny / drive["folder"]
        assert folder.parent.name == DATE and folder.name.startswith(f"{DATE}_drive_")
        images = sorted((folder / "image_02" / "data").glob("*.png"))
        assert [p.name for p in images] == [f"{i:010d}.png" for i in range(size["frames"])]
        frame = size["frames"] // 2
        rgb = read_rgb(images[frame])
        depth = np.load(folder / "gt" / "depth" / f"{frame:010d}.npy")
        dynamic = np.asarray(Image.open(folder / "gt" / "dynamic" / f"{frame:010d}.png"))
        instance = read_uint16_png(folder / "gt" / "instance" / f"{frame:010d}.png")
        assert rgb.shape == (size["height"], size["width"], 3)
        assert depth.dtype == np.float32 and depth.shape == rgb.shape[:2] and (depth == 0).any()
        assert dynamic.dtype == np.uint8 and set(np.unique(dynamic)) <= {0, 1}
        assert instance.dtype == np.uint16 and not (dynamic.astype(bool) & (instance == 0)).any()
        # The files hold exactly what the renderer produces for this drive.
        sequence = render_sequence(drive["seed"], size["frames"], size["height"], size["width"], drive["profile"])
        np.testing.assert_array_equal(rgb, sequence.images[frame])
        np.testing.assert_array_equal(depth, sequence.depth[frame])
        np.testing.assert_array_equal(read_mask_png(folder / "gt" / "dynamic" / f"{frame:010d}.png"),
                                      sequence.dynamic[frame])
        np.testing.assert_array_equal(instance, sequence.instance[frame])
        poses = read_poses(folder / "gt" / "poses.txt")
        lines = (folder / "gt" / "poses.txt").read_text().splitlines()
        assert len(lines) == size["frames"] and all(len(line.split()) == 12 for line in lines)
        np.testing.assert_allclose(poses, sequence.poses, atol=1e-9)
        break  # one drive in full detail is enough; the splits test covers them all
    assert Image.open(tiny / "contact_sheet.png").mode == "RGB"


def test_calibration_files_read_back_as_the_rendering_intrinsics(tiny):
    size = PRESETS["tiny"]
    calibration = load_kitti_calibration(tiny / DATE)
    K, (width, height) = calibration.intrinsics("02")
    assert (width, height) == (size["width"], size["height"])
    np.testing.assert_allclose(K, intrinsics(size["height"], size["width"]), rtol=1e-6)
    np.testing.assert_allclose(calibration.P_rect["02"][:, 3], 0.0)
    np.testing.assert_allclose(calibration.R_rect_00, np.eye(4))
    # The velodyne's axes (x forward, y left, z up) map onto the camera's (x right, y down, z forward).
    forward_in_camera = calibration.T_cam0_velo[:3, :3] @ np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(forward_in_camera, [0.0, 0.0, 1.0])
    text = (tiny / DATE / "calib_cam_to_cam.txt").read_text()
    for key in ("S_rect_02:", "P_rect_02:", "R_rect_00:", "K_02:", "D_02:", "calib_time:"):
        assert key in text
    assert (tiny / DATE / "calib_imu_to_velo.txt").read_text().startswith("calib_time:")


def test_splits_are_disjoint_by_sequence_and_every_frame_has_both_neighbours(tiny):
    split_dir = tiny / "splits" / "synthetic"
    parsed = {name: parse_split(split_dir / f"{name}_files.txt") for name in ("train", "val", "test")}
    folders = {name: {line.folder for line in lines} for name, lines in parsed.items()}
    assert all(parsed.values())
    assert not folders["train"] & (folders["val"] | folders["test"])
    assert not folders["val"] & folders["test"]
    for lines in parsed.values():
        for line in lines:
            assert line.side == "l"
            for offset in (-1, 0, 1):
                assert (tiny / line.folder / "image_02" / "data" / f"{line.frame + offset:010d}.png").is_file()
    # gt_depths.npz / gt_dynamic.npz: one map per test line, in the list's order.
    with np.load(split_dir / "gt_depths.npz") as archive:
        depths = archive["data"]
    with np.load(split_dir / "gt_dynamic.npz") as archive:
        dynamic = archive["data"]
    assert depths.shape[0] == dynamic.shape[0] == len(parsed["test"])
    assert dynamic.dtype == np.uint8
    for row, line in enumerate(parsed["test"]):
        gt = tiny / line.folder / "gt"
        np.testing.assert_array_equal(depths[row], np.load(gt / "depth" / f"{line.frame:010d}.npy"))
        np.testing.assert_array_equal(dynamic[row], np.asarray(Image.open(gt / "dynamic" / f"{line.frame:010d}.png")))


def test_plan_holds_out_whole_sequences_and_mixes_profiles():
    plans = plan_drives(12, seed=3)
    subsets = [p.subset for p in plans]
    assert subsets.count("test") == subsets.count("val") == 2 and subsets.count("train") == 8
    assert {p.profile for p in plans if p.subset == "train"} == {"normal", "stop", "fast"}
    assert len({p.seed for p in plans}) == 12 and len({p.folder for p in plans}) == 12


def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path):
    a = _files(write_world(tmp_path / "a", seed=5, progress=False, **SMALL))
    b = _files(write_world(tmp_path / "b", seed=5, progress=False, **SMALL))
    c = _files(write_world(tmp_path / "c", seed=6, progress=False, **SMALL))
    assert a.keys() == b.keys() and a == b
    images = [k for k in a if k.endswith(".png") and "image_02" in k]
    assert images and all(a[k] != c[k] for k in images)


def test_ensure_world_reuses_a_matching_world_and_replaces_another(tmp_path, monkeypatch):
    root = tmp_path / "world"
    write_world(root, sequences=4, frames=3, height=32, width=96, progress=False)
    old_drive = root / DATE / f"{DATE}_drive_0004_sync"
    assert old_drive.is_dir()
    ensure_world(root, "tiny", progress=False)  # differs from the world there: rendered again
    info = json.loads((root / "world.json").read_text())
    assert info["preset"] == "tiny" and info["frames"] == PRESETS["tiny"]["frames"]
    first = (root / "world.json").stat().st_mtime_ns

    import mfdepth.synth.writer as writer

    def fail(*args, **kwargs):
        raise AssertionError("a matching world must not be rendered again")

    monkeypatch.setattr(writer, "write_world", fail)
    ensure_world(root, "tiny", progress=False)
    assert (root / "world.json").stat().st_mtime_ns == first
    # A world with a missing frame is incomplete and gets rendered again.
    next(root.glob(f"{DATE}/*_sync/image_02/data/0000000000.png")).unlink()
    with pytest.raises(AssertionError, match="must not be rendered"):
        ensure_world(root, "tiny", progress=False)


def test_replacing_a_bigger_world_leaves_no_stale_drives(tmp_path):
    root = tmp_path / "world"
    write_world(root, sequences=6, frames=3, height=32, width=96, progress=False)
    write_world(root, sequences=3, frames=3, height=32, width=96, progress=False)
    drives = sorted(p.name for p in (root / DATE).glob("*_sync"))
    assert drives == [f"{DATE}_drive_{i:04d}_sync" for i in (1, 2, 3)]


def test_jpg_option_writes_jpeg_frames(tmp_path):
    root = write_world(tmp_path / "jpg", ext="jpg", progress=False, **SMALL)
    frames = sorted(root.glob(f"{DATE}/*_sync/image_02/data/*"))
    assert frames and all(p.suffix == ".jpg" for p in frames)
    assert Image.open(frames[0]).format == "JPEG"


def test_cli_renders_and_reports_bad_input_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--sequences", "3", "--frames", "3", "--height", "32", "--width", "96"]
    assert main([*argv, "--seed", "1", "--quiet"]) == 0
    assert json.loads((out / "world.json").read_text())["seed"] == 1
    assert "wrote the synthetic world" in capsys.readouterr().out

    assert main(["synth", "--out", str(out), "--sequences", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sequences must be at least 3" in err

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["synth", "--out", str(a_file), "--preset", "tiny", "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_bad_parameters_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown synth preset 'huge'"):
        write_world(tmp_path, preset="huge")
    with pytest.raises(ValueError, match="--frames must be at least 3"):
        write_world(tmp_path, frames=2)
    with pytest.raises(ValueError, match="--ext must be png or jpg"):
        write_world(tmp_path, ext="bmp")
    with pytest.raises(ValueError, match="--seed must be a non-negative integer"):
        write_world(tmp_path, seed=-1)
    assert not (tmp_path / "world.json").exists()
