"""``mfdepth predict`` end to end: the real pair of different sizes, a frame folder, a video, streaming."""

from __future__ import annotations

import json
import logging

import imageio_ffmpeg
import numpy as np
import torch
from inference_helpers import PAIR, make_checkpoint, to_tensor
from PIL import Image

from mfdepth.cli import main
from mfdepth.inference.predictor import DepthPredictor
from mfdepth.inference.streaming import StreamingPredictor
from mfdepth.inference.writers import PNG16_SCALE

SOURCE, TARGET = PAIR / "test_sequence_source.jpg", PAIR / "test_sequence_target.jpg"
PAIR_K = PAIR / "test_sequence_intrinsics.json"


def test_pair_of_different_sizes_writes_every_format(checkpoint, tmp_path):
    out = tmp_path / "out"
    rc = main(["predict", "--pair", str(SOURCE), str(TARGET), "--checkpoint", str(checkpoint),
               "--intrinsics", str(PAIR_K), "--out", str(out), "--formats", "all", "--quiet"])
    assert rc == 0
    width, height = Image.open(TARGET).size
    assert (width, height) == (895, 315) and Image.open(SOURCE).size == (892, 307)

    depth = np.load(out / "npy" / "test_sequence_target.npy")
    assert depth.dtype == np.float32 and depth.shape == (height, width)
    assert np.isfinite(depth).all() and (depth > 0).all()

    # Known answer: the pair predictor on the two frames, K = normalised K times the *target's* size.
    K = np.array(json.loads(PAIR_K.read_text()), dtype=np.float64)
    K[0] *= width
    K[1] *= height
    predictor = DepthPredictor(checkpoint)
    expected = predictor.predict(
        to_tensor(np.asarray(Image.open(TARGET))), to_tensor(np.asarray(Image.open(SOURCE))),
        torch.from_numpy(K).float()[None],
    )[0, 0].numpy()
    np.testing.assert_allclose(depth, expected, rtol=1e-5)

    png16 = np.asarray(Image.open(out / "png16" / "test_sequence_target.png"))
    assert png16.shape == (height, width) and png16.dtype == np.uint16
    np.testing.assert_allclose(png16 / PNG16_SCALE, depth, atol=0.5 / PNG16_SCALE + 1e-6)

    colour = np.asarray(Image.open(out / "color" / "test_sequence_target.png"))
    assert colour.shape == (height, width, 3) and colour.dtype == np.uint8 and colour.std() > 0

    from plyfile import PlyData

    vertices = PlyData.read(str(out / "ply" / "test_sequence_target.ply"))["vertex"]
    assert vertices.count == height * width  # every predicted depth is valid

    reader = imageio_ffmpeg.read_frames(str(out / "test_sequence_target.mp4"))
    meta = next(reader)
    frames = list(reader)
    assert tuple(meta["size"]) == (2 * width, height + 1)  # side by side, padded to even for H.264
    assert len(frames) == 1


def test_folder_streaming_equals_pair_predictor_frame_by_frame(checkpoint, frame_folder, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = main(["predict", "--input", str(frame_folder), "--checkpoint", str(checkpoint), "--out", str(out),
                   "--formats", "npy,mp4", "--quiet"])
    assert rc == 0
    # No intrinsics were given: the checkpoint's (synthetic world) camera is used, and the log says so.
    assert "synthetic world's camera from checkpoint" in caplog.text

    frames = sorted(frame_folder.glob("*.png"))
    written = sorted((out / "npy").glob("*.npy"))
    assert [p.stem for p in written] == [p.stem for p in frames]
    mp4 = imageio_ffmpeg.read_frames(str(out / f"{frame_folder.name}.mp4"))
    next(mp4)
    assert sum(1 for _ in mp4) == len(frames)

    predictor = DepthPredictor(checkpoint)
    K = torch.from_numpy(np.array([[0.58 * 192, 0, 95.5], [0, 1.92 * 64, 31.5], [0, 0, 1]])).float()[None]
    images = [to_tensor(np.asarray(Image.open(p))) for p in frames]
    for index, path in enumerate(written):
        previous = images[index - 1] if index else None
        expected = predictor.predict(images[index], previous, K)[0, 0].numpy()
        np.testing.assert_allclose(np.load(path), expected, rtol=1e-5, atol=1e-6)

    # The comparison can fail: the depth really depends on which frame is the previous one.
    wrong_previous = predictor.predict(images[2], images[0], K)[0, 0].numpy()
    assert np.abs(np.load(written[2]) - wrong_previous).max() > 1e-3


def test_streaming_cache_runs_one_encoder_pass_per_frame(checkpoint, synthetic_frames):
    images, K = synthetic_frames
    predictor = DepthPredictor(checkpoint)
    streamer = StreamingPredictor(predictor)
    assert streamer.caches_features
    calls = []
    hook = predictor.multi.encoder.layer1.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    K_tensor = torch.from_numpy(K).float()[None]
    try:
        for image in images:
            streamer.step(to_tensor(image), K_tensor)
    finally:
        hook.remove()
    # One matching-encoder pass of one image per frame; the pair predictor runs it on two images.
    assert calls == [1] * len(images)

    streamer.reset()
    first = streamer.step(to_tensor(images[0]), K_tensor)
    np.testing.assert_allclose(first.numpy(), predictor.predict(to_tensor(images[0]), None, K_tensor).numpy(),
                               rtol=1e-6)


def test_video_input_gives_one_output_per_frame(checkpoint, synthetic_frames, tmp_path):
    images, _ = synthetic_frames
    video = tmp_path / "drive.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (images.shape[2], images.shape[1]), fps=10,
                                         macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for image in images:
        writer.send(np.ascontiguousarray(image))
    writer.close()
    out = tmp_path / "out"
    rc = main(["predict", "--input", str(video), "--checkpoint", str(checkpoint), "--out", str(out),
               "--formats", "npy,png16", "--focal", "111.36", "--quiet"])
    assert rc == 0
    names = sorted(p.stem for p in (out / "npy").glob("*.npy"))
    assert names == [f"{i:06d}" for i in range(len(images))]
    assert len(list((out / "png16").glob("*.png"))) == len(images)
    depth = np.load(out / "npy" / "000003.npy")
    assert depth.shape == images.shape[1:3] and np.isfinite(depth).all() and (depth > 0).all()


def test_single_frame_checkpoint_needs_no_intrinsics(tmp_path, frame_folder):
    from inference_helpers import make_checkpoint

    pretrain = make_checkpoint(tmp_path / "pretrain.ckpt", dataset="cityscapes", stage="pretrain")
    out = tmp_path / "out"
    rc = main(["predict", "--input", str(frame_folder), "--checkpoint", str(pretrain), "--out", str(out),
               "--formats", "npy", "--quiet"])
    assert rc == 0
    predictor = DepthPredictor(pretrain)
    assert not predictor.is_multi_frame
    first = sorted(frame_folder.glob("*.png"))[0]
    expected = predictor.predict(to_tensor(np.asarray(Image.open(first))))[0, 0].numpy()
    np.testing.assert_allclose(np.load(out / "npy" / f"{first.stem}.npy"), expected, rtol=1e-6)


def test_folder_of_folders_writes_one_subfolder_per_sequence(checkpoint, frame_folder, tmp_path):
    import shutil

    root = tmp_path / "drives"
    for name in ("a", "b"):
        shutil.copytree(frame_folder, root / name)
    out = tmp_path / "out"
    rc = main(["predict", "--input", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
               "--formats", "npy", "--stride", "2", "--quiet"])
    assert rc == 0
    for name in ("a", "b"):
        assert sorted(p.stem for p in (out / name / "npy").glob("*.npy")) == ["0000", "0002", "0004"]


def test_predictor_builds_the_fusion_its_checkpoint_records(tmp_path):
    # A residual fusion computes something else from the same weights, so the predictor must follow the
    # checkpoint; one written before the switch existed has the plain fusion.
    for name, residual, expected in (("residual", True, True), ("plain", False, False), ("old", None, False)):
        predictor = DepthPredictor(make_checkpoint(tmp_path / f"{name}.ckpt", msff_residual=residual),
                                   device="cpu")
        assert predictor.multi.msff_residual is expected
        assert predictor.multi.fusion.residual is expected
