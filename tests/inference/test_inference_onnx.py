"""ONNX export and the ONNX Runtime backend: parity with PyTorch on synthetic-world inputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from inference_helpers import D_MAX, D_MIN, HEIGHT, WIDTH, make_checkpoint, to_tensor

from mfdepth.cli import main
from mfdepth.inference.onnx_backend import OnnxDepthPredictor
from mfdepth.inference.onnx_export import (
    META_KEY,
    PARITY_TOLERANCE,
    ParityError,
    compare,
    export_onnx,
    ort_session,
)
from mfdepth.inference.predictor import DepthPredictor


@pytest.fixture(scope="module")
def multi_onnx(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "multi.onnx"
    return export_onnx(checkpoint, path, network="multi")


def test_multi_frame_export_is_one_graph_with_pose_and_matches_pytorch(multi_onnx, checkpoint, synthetic_frames):
    report = multi_onnx
    assert report.max_rel_diff is not None and report.max_rel_diff <= PARITY_TOLERANCE
    model = onnx.load(str(report.path))
    assert [i.name for i in model.graph.input] == ["target", "previous", "K"]
    assert [o.name for o in model.graph.output] == ["depth"]
    description = json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])
    assert description["network"] == "multi" and (description["height"], description["width"]) == (HEIGHT, WIDTH)
    # d_min/d_max are baked in: the graph's linspace of hypotheses is a constant from the checkpoint.
    assert description["meta"]["d_min"] == D_MIN and description["meta"]["d_max"] == D_MAX

    # Independent inputs (another synthetic sequence than the export's own check), batch of two.
    images, K = synthetic_frames
    target = torch.cat([to_tensor(images[2]), to_tensor(images[4])])
    previous = torch.cat([to_tensor(images[1]), to_tensor(images[3])])
    K_batch = torch.from_numpy(K).float()[None].expand(2, 3, 3).contiguous()
    torch_depth = DepthPredictor(checkpoint).predict(target, previous, K_batch).numpy()
    session = ort_session(report.path, threads=1)
    onnx_depth = session.run(None, {"target": target.numpy(), "previous": previous.numpy(), "K": K_batch.numpy()})[0]
    assert onnx_depth.shape == (2, 1, HEIGHT, WIDTH)
    max_abs, max_rel = compare(onnx_depth, torch_depth)
    assert max_rel <= PARITY_TOLERANCE, (max_abs, max_rel)

    # The graph uses the previous frame and the pose: a different previous frame changes the depth by far
    # more than the tolerance, so the parity above is not blind to the multi-frame half.
    other = session.run(None, {"target": target.numpy(), "previous": target.numpy(), "K": K_batch.numpy()})[0]
    assert compare(other, torch_depth)[1] > 20 * PARITY_TOLERANCE


def test_half_resolution_fine_matching_exports_and_predicts_as_trained(tmp_path, synthetic_frames):
    """A checkpoint whose config matches the images at 1/2 resolution (``model.fine_matching_downsample=2``,
    the KITTI recipe's) is rebuilt that way by the predictor and exported with parity."""
    half = make_checkpoint(tmp_path / "half.ckpt", overrides=("model.fine_matching_downsample=2",))
    full = make_checkpoint(tmp_path / "full.ckpt")
    predictor = DepthPredictor(half)
    assert predictor.multi.fine_matching_downsample == 2
    images, K = synthetic_frames
    target, previous = to_tensor(images[2]), to_tensor(images[1])
    K_batch = torch.from_numpy(K).float()[None]
    torch_depth = predictor.predict(target, previous, K_batch).numpy()
    # Same weights, other matching resolution: another cost, another depth.
    assert compare(DepthPredictor(full).predict(target, previous, K_batch).numpy(), torch_depth)[1] > 1e-3
    report = export_onnx(half, tmp_path / "half.onnx", network="multi")
    assert report.max_rel_diff is not None and report.max_rel_diff <= PARITY_TOLERANCE
    onnx_depth = ort_session(report.path, threads=1).run(
        None, {"target": target.numpy(), "previous": previous.numpy(), "K": K_batch.numpy()})[0]
    assert compare(onnx_depth, torch_depth)[1] <= PARITY_TOLERANCE


def test_previous_equal_to_target_is_the_single_frame_fallback(multi_onnx, checkpoint, synthetic_frames):
    images, K = synthetic_frames
    target = to_tensor(images[0])
    K_tensor = torch.from_numpy(K).float()[None]
    onnx_predictor = OnnxDepthPredictor(multi_onnx.path, threads=1)
    expected = DepthPredictor(checkpoint).predict(target, None, K_tensor).numpy()
    assert compare(onnx_predictor.predict(target, None, K_tensor).numpy(), expected)[1] <= PARITY_TOLERANCE


def test_single_frame_export(checkpoint, tmp_path, synthetic_frames):
    report = export_onnx(checkpoint, tmp_path / "single.onnx", network="single")
    assert report.max_rel_diff <= PARITY_TOLERANCE
    image = to_tensor(synthetic_frames[0][1])
    predictor = OnnxDepthPredictor(report.path, threads=1)
    assert not predictor.is_multi_frame
    expected = DepthPredictor(checkpoint, network="single").predict(image).numpy()
    assert compare(predictor.predict(image).numpy(), expected)[1] <= PARITY_TOLERANCE


def test_predict_with_onnx_backend_matches_torch_backend(multi_onnx, checkpoint, frame_folder, tmp_path):
    common = ["--input", str(frame_folder), "--formats", "npy", "--quiet", "--threads", "1"]
    assert main(["predict", *common, "--backend", "onnx", "--onnx", str(multi_onnx.path), "--out",
                 str(tmp_path / "onnx")]) == 0
    assert main(["predict", *common, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "torch")]) == 0
    onnx_files = sorted((tmp_path / "onnx" / "npy").glob("*.npy"))
    assert len(onnx_files) == len(list(frame_folder.glob("*.png")))
    for path in onnx_files:
        _, max_rel = compare(np.load(path), np.load(tmp_path / "torch" / "npy" / path.name))
        assert max_rel <= PARITY_TOLERANCE, path.name


def test_export_command_prints_parity_and_fails_beyond_tolerance(checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--network", "single"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "max relative diff" in printed and out.is_file()

    # A graph that disagrees with PyTorch is reported and not left behind.
    import mfdepth.inference.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "compare", lambda a, b: (1.0, 0.5))
    with pytest.raises(ParityError, match="disagree"):
        export_onnx(checkpoint, tmp_path / "bad.onnx", network="single")
    assert not (tmp_path / "bad.onnx").exists()
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "bad2.onnx"),
                 "--network", "single"]) == 1
    assert "parity check failed" in capsys.readouterr().err


def test_matrix_inverse_translation_is_exact(tmp_path):
    """The adjugate inverse used for ``aten::linalg_inv`` agrees with torch on general 3x3 matrices."""
    from mfdepth.inference.onnx_export import _matrix_inverse_symbolic

    class Inverse(torch.nn.Module):
        def forward(self, matrix):
            return torch.linalg.inv(matrix)

    matrices = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(1)) + 2 * torch.eye(3)
    path = tmp_path / "inverse.onnx"
    with _matrix_inverse_symbolic(17):
        torch.onnx.export(Inverse(), (matrices,), str(path), dynamo=False, opset_version=17,
                          input_names=["m"], output_names=["inv"])
    got = ort_session(path, threads=1).run(None, {"m": matrices.numpy()})[0]
    np.testing.assert_allclose(got, torch.linalg.inv(matrices).numpy(), rtol=1e-4, atol=1e-5)
    # The translation is registered only during the export (torch then reports the operator as unsupported,
    # or, having kept an empty entry for it, fails to look it up).
    with pytest.raises((torch.onnx.errors.UnsupportedOperatorError, ValueError)):
        torch.onnx.export(Inverse(), (matrices,), str(tmp_path / "again.onnx"), dynamo=False, opset_version=17)


def test_onnx_backend_without_a_model_exports_the_checkpoint(checkpoint, synthetic_frames, tmp_path, caplog):
    import logging

    from PIL import Image

    images, _ = synthetic_frames
    Image.fromarray(images[0]).save(tmp_path / "prev.png")
    Image.fromarray(images[1]).save(tmp_path / "target.png")
    pair = [str(tmp_path / "prev.png"), str(tmp_path / "target.png")]
    with caplog.at_level(logging.INFO):
        assert main(["predict", "--pair", *pair, "--checkpoint", str(checkpoint), "--backend", "onnx",
                     "--network", "single", "--out", str(tmp_path / "onnx"), "--formats", "npy", "--quiet"]) == 0
    assert "exported for ONNX Runtime" in caplog.text and "single-frame graph" in caplog.text
    expected = DepthPredictor(checkpoint, network="single").predict(to_tensor(images[1]))[0, 0].numpy()
    assert compare(np.load(tmp_path / "onnx" / "npy" / "target.npy"), expected)[1] <= PARITY_TOLERANCE
