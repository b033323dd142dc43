"""ONNX export of a checkpoint's networks, with a parity check against PyTorch.

The multi-frame graph is one ONNX model holding the pose network, the matching encoder, the plane-sweep
cost volume and the depth network::

    inputs:  target (B,3,H,W), previous (B,3,H,W)  float32 in [0,1] at the network resolution,
             K (B,3,3) float32 intrinsics in pixels of that resolution
    output:  depth (B,1,H,W) float32 metres

The cost volume's depth range (``d_min``/``d_max``) is baked in as constants from the checkpoint. A
``previous`` equal to ``target`` means "no previous frame": the graph then zeroes the cost volume, the
single-frame fallback that the PyTorch predictor uses for the first frame of a video.

The single-frame graph maps ``image`` (B,3,H,W) to ``depth`` (B,1,H,W). Both have a dynamic batch axis.

The legacy TorchScript exporter is used (``dynamo=False``): it needs no ``onnxscript``. ONNX has no
matrix inverse, so while exporting ``aten::linalg_inv`` (used on the 3x3 K of the cost volume) is
translated into the closed-form adjugate / determinant inverse.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mfdepth.inference.predictor import DepthPredictor

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-3
"""Largest accepted relative difference ``|onnx - torch| / |torch|`` of any depth pixel."""
META_KEY = "mfdepth"
"""ONNX ``metadata_props`` key holding the JSON description of the graph (network, size, checkpoint meta)."""


class ParityError(RuntimeError):
    """The exported graph's depth differs from PyTorch's by more than the tolerance."""


class MultiFrameGraph(nn.Module):
    """Pose net + multi-frame depth net as one module: ``(target, previous, K) -> depth (B,1,H,W)``."""

    def __init__(self, multi: nn.Module, pose: nn.Module):
        super().__init__()
        self.multi, self.pose = multi, pose

    def forward(self, target: torch.Tensor, previous: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        no_previous = (target == previous).flatten(1).all(dim=1)
        pose = self.pose(target, previous, source_is_before=True)
        identity = torch.eye(4, dtype=pose.dtype, device=pose.device).expand_as(pose)
        # The zeroed cost volume ignores the pose; identity keeps it finite for a frame paired with itself.
        pose = torch.where(no_previous[:, None, None], identity, pose)
        return self.multi(target, previous, pose, K, zero_cost_volume=no_previous)["depth"][0]


class SingleFrameGraph(nn.Module):
    """Single-frame depth net: ``image -> depth (B,1,H,W)``."""

    def __init__(self, single: nn.Module):
        super().__init__()
        self.single = single

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.single(image)["depth"][0]


def _int64(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _inverse_3x3_symbolic(g, matrix):
    """ONNX nodes for the inverse of ``(..., 3, 3)`` matrices: adjugate (transposed cofactors) / determinant."""
    def entry(i: int, j: int):
        return g.op("Gather", g.op("Gather", matrix, _int64(g, i), axis_i=-2), _int64(g, j), axis_i=-1)

    a = [[entry(i, j) for j in range(3)] for i in range(3)]
    others = ((1, 2), (0, 2), (0, 1))  # the rows (or columns) left when one is struck out

    def cofactor(i: int, j: int):
        (r0, r1), (c0, c1) = others[i], others[j]
        minor = g.op("Sub", g.op("Mul", a[r0][c0], a[r1][c1]), g.op("Mul", a[r0][c1], a[r1][c0]))
        return minor if (i + j) % 2 == 0 else g.op("Neg", minor)

    cof = [[cofactor(i, j) for j in range(3)] for i in range(3)]
    det = g.op("Add", g.op("Add", g.op("Mul", a[0][0], cof[0][0]), g.op("Mul", a[0][1], cof[0][1])),
               g.op("Mul", a[0][2], cof[0][2]))
    last = _int64(g, [-1])
    rows = [g.op("Concat", *[g.op("Unsqueeze", cof[j][i], last) for j in range(3)], axis_i=-1) for i in range(3)]
    adjugate = g.op("Concat", *[g.op("Unsqueeze", row, _int64(g, [-2])) for row in rows], axis_i=-2)
    return g.op("Div", adjugate, g.op("Unsqueeze", det, _int64(g, [-1, -2])))


@contextlib.contextmanager
def _matrix_inverse_symbolic(opset: int):
    """Translate ``aten::linalg_inv`` for the duration of one export, then restore the registry."""
    torch.onnx.register_custom_op_symbolic("aten::linalg_inv", _inverse_3x3_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::linalg_inv", opset)


def parity_inputs(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(target, previous, K)`` at ``height`` x ``width``: two consecutive frames of the synthetic world.

    Real-looking structure (road, cars, facades) exercises the cost volume as real data does; random
    noise would not. ``target``/``previous`` ``(1,3,H,W)`` in [0,1], ``K`` ``(1,3,3)`` pixels.
    """
    from mfdepth.synth import render_sequence

    sequence = render_sequence(seed, 2, height, width, "normal")
    images = torch.from_numpy(sequence.images).permute(0, 3, 1, 2).float() / 255.0
    K = torch.from_numpy(sequence.K).float()[None]
    return images[1:2].contiguous(), images[0:1].contiguous(), K


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well it agrees with PyTorch.

    ``max_abs_diff`` (metres) and ``max_rel_diff`` are over every depth pixel of the parity inputs
    (for the multi-frame graph: a frame pair and a first frame); None when the check was skipped.
    """

    path: Path
    network: str
    height: int
    width: int
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None

    def summary(self) -> str:
        if self.max_abs_diff is None:
            return f"{self.path}: {self.network}-frame graph at {self.height}x{self.width} (parity not checked)"
        return (
            f"{self.path}: {self.network}-frame graph at {self.height}x{self.width}; parity with PyTorch: "
            f"max abs diff {self.max_abs_diff:.3g} m, max relative diff {self.max_rel_diff:.3g}"
        )


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in ONNX metadata")


def graph_description(predictor: DepthPredictor) -> dict:
    """The JSON stored in the ONNX file: enough to run it with no checkpoint at hand."""
    return {
        "network": predictor.network,
        "height": predictor.height,
        "width": predictor.width,
        "checkpoint": str(predictor.checkpoint),
        "meta": predictor.meta,
    }


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session; ``threads`` caps intra-op threads (None = ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(onnx_depth: np.ndarray, torch_depth: np.ndarray) -> tuple[float, float]:
    """``(max |a - b|, max |a - b| / |b|)`` over all pixels (depth is positive, so the ratio is defined)."""
    diff = np.abs(onnx_depth.astype(np.float64) - torch_depth.astype(np.float64))
    return float(diff.max()), float((diff / np.maximum(np.abs(torch_depth), 1e-12)).max())


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    network: str = "multi",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export a checkpoint's multi-frame (with pose) or single-frame network to ONNX.

    Args:
        checkpoint: mfdepth checkpoint.
        out_path: the ``.onnx`` file to write (parent folders are created).
        network: ``multi`` or ``single``.
        opset: ONNX opset version.
        check: run the graph in ONNX Runtime on synthetic-world inputs and compare with PyTorch.
        tolerance: largest accepted relative difference; beyond it the file is removed and
            :class:`ParityError` raised.
    """
    import onnx

    if network not in ("multi", "single"):
        raise ValueError(f"network '{network}' is not one of multi, single")
    predictor = DepthPredictor(checkpoint, network=network, device="cpu")
    if network == "multi":
        module = MultiFrameGraph(predictor.multi, predictor.pose).eval()
        input_names = ["target", "previous", "K"]
    else:
        module = SingleFrameGraph(predictor.single).eval()
        input_names = ["image"]
    target, previous, K = parity_inputs(predictor.height, predictor.width)
    example = (target, previous, K) if network == "multi" else (target,)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {name: {0: "batch"} for name in [*input_names, "depth"]}
    with warnings.catch_warnings(), _matrix_inverse_symbolic(opset), torch.no_grad():
        # The tracer warns about Python-side shape checks; they hold for the fixed network size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, str(out_path), dynamo=False, opset_version=opset, input_names=input_names,
            output_names=["depth"], dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    model = onnx.load(str(out_path))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(graph_description(predictor), default=_jsonable)
    model.producer_name = "mfdepth"
    onnx.save(model, str(out_path))
    report = ExportReport(out_path, network, predictor.height, predictor.width)
    if not check:
        return report
    cases = [example, (target, target, K)] if network == "multi" else [example]
    session = ort_session(out_path)
    worst_abs = worst_rel = 0.0
    for case in cases:
        with torch.no_grad():
            expected = module(*case).numpy()
        got = session.run(None, {name: tensor.numpy() for name, tensor in zip(input_names, case)})[0]
        max_abs, max_rel = compare(got, expected)
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
    report.max_abs_diff, report.max_rel_diff = worst_abs, worst_rel
    if not worst_rel <= tolerance:  # also catches NaN
        out_path.unlink(missing_ok=True)
        raise ParityError(
            f"{out_path}: ONNX Runtime and PyTorch disagree (max relative diff {worst_rel:.3g} > {tolerance:g}); "
            "the file was removed. Try another --opset or report the checkpoint"
        )
    return report
