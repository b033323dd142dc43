"""The prediction pipeline behind ``mfdepth predict``: load a backend, find the camera, stream frames to writers.

Each sequence is streamed: frame t is paired with frame t-1 (the first frame gets the single-frame
fallback), and with the PyTorch backend the previous frame's matching features are reused, so each new
frame costs one encoder pass. Outputs are written per frame as they come (see
:mod:`mfdepth.inference.writers`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mfdepth.checkpoint import CheckpointError, default_network, load_checkpoint
from mfdepth.data.calibration import Intrinsics
from mfdepth.devices import resolve_device
from mfdepth.errors import UserError
from mfdepth.inference.intrinsics import checkpoint_intrinsics, intrinsics_at_size, user_intrinsics
from mfdepth.inference.predictor import DepthPredictor
from mfdepth.inference.sources import FrameSource, input_sources, pair_source
from mfdepth.inference.streaming import StreamingPredictor
from mfdepth.inference.writers import DepthWriter

log = logging.getLogger(__name__)


@dataclass
class PredictionSummary:
    """What one call of :func:`predict_source` did."""

    name: str
    out_dir: Path
    frames: int = 0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    # torch.tensor copies: images read by PIL are read-only arrays.
    return torch.tensor(image).permute(2, 0, 1)[None].float().div_(255.0)


def load_predictor(
    checkpoint: str | Path | None,
    network: str = "auto",
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    export_dir: str | Path | None = None,
):
    """A :class:`DepthPredictor` (``torch``) or :class:`OnnxDepthPredictor` (``onnx``).

    With ``backend="onnx"`` and no ``onnx_path`` the checkpoint is exported (with its parity check) into
    ``export_dir``, which the caller owns.
    """
    if backend == "onnx" and onnx_path is not None:
        from mfdepth.inference.onnx_backend import OnnxDepthPredictor

        predictor = OnnxDepthPredictor(onnx_path, threads=threads)
        if network != "auto" and network != predictor.network:
            raise UserError(f"{onnx_path} holds the {predictor.network}-frame network, not --network {network}")
        return predictor
    if checkpoint is None:
        raise UserError("--checkpoint PATH is required (or --backend onnx --onnx MODEL.onnx)")
    if not Path(checkpoint).is_file():
        raise CheckpointError(
            f"checkpoint not found: {checkpoint}; give a file written by mfdepth train "
            "(RUN_DIR/checkpoints/<stage>.ckpt)"
        )
    if backend == "torch":
        if threads:
            torch.set_num_threads(threads)
        return DepthPredictor(checkpoint, network=network, device=resolve_device(device))
    from mfdepth.inference.onnx_backend import OnnxDepthPredictor
    from mfdepth.inference.onnx_export import export_onnx

    if network == "auto":
        network = default_network(load_checkpoint(checkpoint)["models"])
    if export_dir is None:
        raise ValueError("export_dir is needed to export the checkpoint for the onnx backend")
    report = export_onnx(checkpoint, Path(export_dir) / f"{Path(checkpoint).stem}-{network}.onnx", network=network)
    log.info("exported for ONNX Runtime: %s", report.summary())
    return OnnxDepthPredictor(report.path, threads=threads)


def source_intrinsics(source: FrameSource, predictor, intrinsics_file, focal_px, needed: bool) -> Intrinsics | None:
    """The user's intrinsics for ``source``, else (when ``needed``) the checkpoint's camera; logs which."""
    given = user_intrinsics(intrinsics_file, focal_px, source.K_file, source.size)
    if given is not None:
        return given
    if not needed:
        return None
    found, where = checkpoint_intrinsics(predictor.meta, predictor.config, predictor.checkpoint)
    K = intrinsics_at_size(found, *source.size)
    log.info(
        "intrinsics: none given for %s; using %s from checkpoint %s, rescaled to %dx%d "
        "(fx=%.1f fy=%.1f cx=%.1f cy=%.1f px); pass --intrinsics or --focal for your camera",
        source.origin, where, predictor.checkpoint, *source.size, K[0, 0], K[1, 1], K[0, 2], K[1, 2],
    )
    return found


def predict_source(
    predictor,
    source: FrameSource,
    out_dir: str | Path,
    formats: tuple[str, ...],
    intrinsics: Intrinsics | None,
    pair: bool = False,
    progress: bool = True,
) -> PredictionSummary:
    """Predict every frame of ``source`` (or, with ``pair``, only its second frame) and write the outputs.

    Args:
        predictor: :class:`DepthPredictor` or :class:`OnnxDepthPredictor`.
        intrinsics: the camera of the frames (None only for a single-frame network without PLY output).
        pair: the source is ``(previous, target)``; only the target's depth is written, from the pair
            predictor (each frame resized to the network size on its own, K from the target's size).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    summary = PredictionSummary(source.name, out_dir)
    streamer = StreamingPredictor(predictor)
    K_by_size: dict[tuple[int, int], np.ndarray] = {}
    previous = None
    start = time.perf_counter()
    total = 1 if pair else (source.count or None)
    with DepthWriter(out_dir, formats, video_name=source.name, fps=source.fps) as writer, tqdm(
        total=total, desc=f"predict {source.name}", unit="frame", disable=not progress, dynamic_ncols=True
    ) as bar:
        for frame in source.frames():
            height, width = frame.image.shape[:2]
            K = None
            if intrinsics is not None:
                if (width, height) not in K_by_size:
                    K_by_size[(width, height)] = intrinsics_at_size(intrinsics, width, height)
                K = K_by_size[(width, height)]
            image = _to_tensor(frame.image)
            K_tensor = None if K is None else torch.from_numpy(K).float()[None]
            if pair:
                if previous is None:
                    previous = image
                    continue
                depth = predictor.predict(image, previous if predictor.is_multi_frame else None, K_tensor)
            else:
                depth = streamer.step(image, K_tensor)
            writer.add(frame.name, frame.image, depth[0, 0].float().cpu().numpy(), K)
            summary.frames += 1
            bar.update(1)
    summary.seconds = time.perf_counter() - start
    summary.written = list(writer.written)
    return summary


def predict(
    checkpoint: str | Path | None,
    out: str | Path,
    formats: tuple[str, ...],
    pair: tuple[str | Path, str | Path] | None = None,
    input_path: str | Path | None = None,
    stride: int = 1,
    intrinsics_file: str | Path | None = None,
    focal_px: float | None = None,
    network: str = "auto",
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> list[PredictionSummary]:
    """What ``mfdepth predict`` does: depth for ``pair`` (previous, target) or every sequence of ``input_path``
    (a video, a folder of frames or a folder of such folders) with one predictor, written under ``out``
    (one subfolder per sequence when there are several). ``report`` gets one line per sequence."""
    sources = [pair_source(*pair)] if pair else input_sources(input_path, stride)
    summaries = []
    with tempfile.TemporaryDirectory(prefix="mfdepth-onnx-") as export_dir:
        predictor = load_predictor(checkpoint, network, backend, onnx_path, device, threads, export_dir)
        needed = predictor.is_multi_frame or "ply" in formats
        out = Path(out)
        for source in sources:
            intrinsics = source_intrinsics(source, predictor, intrinsics_file, focal_px, needed)
            out_dir = out if len(sources) == 1 else out / source.name
            summary = predict_source(
                predictor, source, out_dir, formats, intrinsics, pair=bool(pair), progress=progress
            )
            summaries.append(summary)
            if report is not None:
                per_frame = 1000.0 * summary.seconds / max(summary.frames, 1)
                report(
                    f"{source.name}: {summary.frames} frame(s) -> {out_dir} ({', '.join(formats)}); "
                    f"{predictor.network}-frame network, {backend} backend, {per_frame:.0f} ms/frame"
                )
    return summaries
