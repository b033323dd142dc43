"""Intrinsics resolution and bad input: clear one-line messages naming the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import PAIR, make_checkpoint

from mfdepth.cli import main
from mfdepth.config import load_config
from mfdepth.data.calibration import MONODEPTH2_NORMALIZED_K, Intrinsics
from mfdepth.geometry import scale_intrinsics
from mfdepth.inference.intrinsics import checkpoint_intrinsics, intrinsics_at_size, user_intrinsics


def test_intrinsics_at_size():
    normalised = Intrinsics(np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1.0]]), normalized=True)
    np.testing.assert_allclose(intrinsics_at_size(normalised, 895, 315),
                               [[519.1, 0, 447.5], [0, 604.8, 157.5], [0, 0, 1]])
    pixels = Intrinsics(np.array([[100.0, 0, 63.5], [0, 90.0, 31.5], [0, 0, 1.0]]), size=(128, 64))
    # Half the size: f halves, and the pixel-centre convention puts c at (c + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(intrinsics_at_size(pixels, 64, 32), [[50, 0, 31.5], [0, 45, 15.5], [0, 0, 1]])
    np.testing.assert_allclose(intrinsics_at_size(pixels, 64, 32),
                               scale_intrinsics(torch.from_numpy(pixels.K), 0.5, 0.5).numpy())
    given = user_intrinsics(None, 300.0, None, (640, 480))
    np.testing.assert_allclose(intrinsics_at_size(given, 320, 240), [[150, 0, 159.5], [0, 150, 119.5], [0, 0, 1]])


def test_checkpoint_camera_by_dataset(tmp_path):
    synthetic = load_config(overrides=["data.height=64", "data.width=192"])
    found, where = checkpoint_intrinsics({}, synthetic, "x.ckpt")
    assert "synthetic" in where
    # The synthetic camera (fx = 0.58 W, fy = 1.92 H, centred) at any size.
    np.testing.assert_allclose(intrinsics_at_size(found, 895, 315),
                               [[0.58 * 895, 0, 447.0], [0, 1.92 * 315, 157.0], [0, 0, 1]], atol=1e-9)
    kitti = load_config(overrides=["data.dataset=kitti", f"data.root={tmp_path / 'nowhere'}"])
    found, where = checkpoint_intrinsics({}, kitti, "x.ckpt")
    assert found.normalized and np.array_equal(found.K, MONODEPTH2_NORMALIZED_K) and "Monodepth2" in where
    stored = {"intrinsics": {"K": [[0.6, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]], "normalized": True}}
    found, where = checkpoint_intrinsics(stored, kitti, "x.ckpt")
    assert found.K[1, 1] == 2.0 and "stored" in where


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    return message


def test_missing_checkpoint(capsys, tmp_path):
    missing = tmp_path / "none.ckpt"
    message = _error(capsys, ["predict", "--pair", str(PAIR / "test_sequence_source.jpg"),
                              str(PAIR / "test_sequence_target.jpg"), "--checkpoint", str(missing), "--quiet"])
    assert str(missing) in message and "checkpoint not found" in message and "mfdepth train" in message
    message = _error(capsys, ["export", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")])
    assert str(missing) in message


def test_folder_without_images(capsys, tmp_path, checkpoint):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no frames here")
    message = _error(capsys, ["predict", "--input", str(empty), "--checkpoint", str(checkpoint), "--quiet"])
    assert "no image frames in" in message and str(empty) in message
    message = _error(capsys, ["predict", "--input", str(tmp_path / "absent"), "--checkpoint", str(checkpoint)])
    assert "input not found" in message and "folder of frames or a video" in message


def test_missing_intrinsics_when_the_checkpoint_has_none(capsys, tmp_path, frame_folder):
    cityscapes = make_checkpoint(tmp_path / "cityscapes.ckpt", dataset="cityscapes")
    message = _error(capsys, ["predict", "--input", str(frame_folder), "--checkpoint", str(cityscapes),
                              "--out", str(tmp_path / "out"), "--quiet"])
    assert str(cityscapes) in message and "names no camera" in message and "--intrinsics" in message
    assert "--focal" in message
    assert not (tmp_path / "out" / "npy").exists() or not any((tmp_path / "out" / "npy").iterdir())


def test_other_bad_input(capsys, tmp_path, checkpoint):
    pair = [str(PAIR / "test_sequence_source.jpg"), str(tmp_path / "missing.png")]
    message = _error(capsys, ["predict", "--pair", *pair, "--checkpoint", str(checkpoint)])
    assert "missing.png" in message and "--pair takes" in message
    message = _error(capsys, ["predict", "--input", str(PAIR / "test_sequence_intrinsics.json"),
                              "--checkpoint", str(checkpoint)])
    assert "neither a video nor a folder" in message
    message = _error(capsys, ["predict", "--pair", *pair[:1], pair[0], "--checkpoint", str(checkpoint),
                              "--formats", "npy,gif"])
    assert "gif" in message
    bad_k = tmp_path / "K.json"
    bad_k.write_text("[[1, 2], [3]]")
    message = _error(capsys, ["predict", "--pair", pair[0], pair[0], "--checkpoint", str(checkpoint),
                              "--intrinsics", str(bad_k)])
    assert str(bad_k) in message
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a model")
    message = _error(capsys, ["predict", "--pair", pair[0], pair[0], "--backend", "onnx", "--onnx", str(not_onnx)])
    assert str(not_onnx) in message
    with pytest.raises(SystemExit):  # argparse: one of --pair / --input is required
        main(["predict", "--checkpoint", str(checkpoint)])


def test_checkpoint_of_another_architecture(capsys, tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    state["models"]["multi"] = {k: v for k, v in state["models"]["multi"].items() if not k.startswith("reduce.")}
    torch.save(state, tmp_path / "old.ckpt")
    message = _error(capsys, ["export", "--checkpoint", str(tmp_path / "old.ckpt"), "--out", str(tmp_path / "m.onnx")])
    assert "old.ckpt" in message and "missing reduce." in message and "retrain" in message


def test_out_naming_a_file(capsys, tmp_path, checkpoint):
    blocker = tmp_path / "depth.png"
    blocker.write_text("not a folder")
    message = _error(capsys, ["predict", "--pair", str(PAIR / "test_sequence_source.jpg"),
                              str(PAIR / "test_sequence_target.jpg"), "--checkpoint", str(checkpoint), "--quiet",
                              "--out", str(blocker)])
    assert str(blocker) in message and "another path" in message
    assert blocker.read_text() == "not a folder"


def test_exporting_a_single_frame_checkpoint_suggests_network_single(capsys, tmp_path):
    teacher = make_checkpoint(tmp_path / "pretrain.ckpt", stage="pretrain")
    message = _error(capsys, ["export", "--checkpoint", str(teacher), "--out", str(tmp_path / "m.onnx")])
    assert str(teacher) in message and "no multi-frame network" in message and "--network single" in message
