"""Inference latency of the multi-frame model: ONNX Runtime vs PyTorch on the CPU.

The model is the exported graph (pose net + matching encoder + cost volume + depth net; ResNet-18,
MSFF, 96 hypotheses, as in ``configs/kitti.yaml``) on one frame pair at 192x640, batch 1, with the same
number of threads in both runtimes. Each runtime is warmed up, then timed ``--runs`` times; the median
is reported with the ratio PyTorch / ONNX Runtime (above 1: ONNX Runtime is faster). PyTorch's
streaming step (one encoder pass per new frame, the ``mfdepth predict`` path) is timed too.

    python benchmarks/bench_onnx.py [--checkpoint CKPT] [--height 192 --width 640] [--threads 2] [--runs 20]

Without ``--checkpoint`` the networks are randomly initialised: latency does not depend on the weights.
``--no-spin`` makes idle worker threads sleep instead of spin (OpenMP's OMP_WAIT_POLICY=PASSIVE,
ONNX Runtime's allow_spinning=0): on a machine whose cores are busy with other work, spinning threads
slow both runtimes down by an order of magnitude.

Writes ``benchmarks/results/onnx.json`` and ``onnx.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint's networks (default: random)")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bins", type=int, default=96, help="depth hypotheses (random networks only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per runtime, after --warmup")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-spin", action="store_true", help="worker threads sleep when idle (busy machines)")
    parser.add_argument("--out", default=str(HERE / "results"))
    return parser.parse_args(argv)


def random_checkpoint(path: Path, height: int, width: int, bins: int) -> Path:
    from mfdepth.checkpoint import make_meta, save_checkpoint
    from mfdepth.config import load_config, to_dict
    from mfdepth.models.factory import build_multi, build_pose, build_single

    config = load_config(overrides=[f"data.height={height}", f"data.width={width}", f"model.num_depth_bins={bins}"])
    multi = build_multi(config, msff=True)
    models = {"multi": multi.state_dict(), "pose": build_pose(config).state_dict(),
              "teacher": build_single(config).state_dict()}
    meta = make_meta(to_dict(config), "student", d_min=float(multi.d_min), d_max=float(multi.d_max), msff=True)
    return save_checkpoint(path, {"models": models, "optimizer": None, "step": 0, "stage": "student", "meta": meta})


def timed(calls: dict, warmup: int, runs: int) -> dict[str, list[float]]:
    """Milliseconds of ``runs`` calls of each function, after ``warmup`` untimed ones.

    The functions take turns (a, b, c, a, b, c, ...), so a burst of load from other processes on a
    shared machine falls on all of them alike instead of on whichever happened to run then.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(1000.0 * (time.perf_counter() - start))
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(times),
        "min_ms": ordered[0],
        "p90_ms": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
        "runs": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_spin:
        # Read by the OpenMP runtime when torch loads it, so it must be set before the import.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import onnxruntime as ort
    import torch

    from mfdepth.inference.onnx_export import MultiFrameGraph, compare, export_onnx, parity_inputs
    from mfdepth.inference.predictor import DepthPredictor
    from mfdepth.inference.streaming import StreamingPredictor

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_checkpoint(Path(tmp) / "random.ckpt", args.height, args.width, args.bins)
        report = export_onnx(checkpoint, Path(tmp) / "multi.onnx", network="multi")
        predictor = DepthPredictor(checkpoint, network="multi")
        height, width = predictor.height, predictor.width
        graph = MultiFrameGraph(predictor.multi, predictor.pose).eval()
        target, previous, K = parity_inputs(height, width, seed=1)

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        if args.no_spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
        feed = {"target": target.numpy(), "previous": previous.numpy(), "K": K.numpy()}

        def run_torch():
            with torch.inference_mode():
                return graph(target, previous, K)

        streamer = StreamingPredictor(predictor)
        with torch.inference_mode():
            streamer.step(previous, K)

        def run_streaming():
            # Each call is a new frame whose predecessor's features are cached (the same frame over and
            # over is as expensive as a real stream).
            return streamer.step(target, K)

        times = timed({"torch": run_torch, "ort": lambda: session.run(None, feed), "streaming": run_streaming},
                      args.warmup, args.runs)
        _, rel = compare(session.run(None, feed)[0], run_torch().numpy())

    torch_stats, ort_stats, streaming_stats = (summary(times[name]) for name in ("torch", "ort", "streaming"))
    ratio = torch_stats["median_ms"] / ort_stats["median_ms"]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    command = "python benchmarks/bench_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {
        "benchmark": "onnx_vs_torch_multi_frame",
        "model": "pose + multi-frame depth (ResNet-18, MSFF, cost volume) as one graph",
        "checkpoint": str(args.checkpoint) if args.checkpoint else f"random weights, {args.bins} hypotheses",
        "resolution": [height, width],
        "batch": 1,
        "threads": args.threads,
        "no_spin": args.no_spin,
        "torch": torch_stats,
        "onnxruntime": ort_stats,
        "torch_streaming_step": streaming_stats,
        "ratio_torch_over_onnxruntime": ratio,
        "parity_max_rel_diff": rel,
        "load_average_after": list(load) if load else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "command": command,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx.json").write_text(json.dumps(record, indent=2) + "\n")
    load_text = f"; load average afterwards {load[0]:.1f} on {os.cpu_count()} cores" if load else ""
    (out / "onnx.md").write_text(
        "# ONNX Runtime vs PyTorch: multi-frame model latency\n\n"
        f"{record['model']}; {record['checkpoint']}. {height}x{width}, batch 1, {args.threads} threads, "
        f"median of {args.runs} runs (runtimes taking turns) after {args.warmup} warm-up runs"
        f"{', idle threads sleeping (--no-spin)' if args.no_spin else ''}{load_text}. "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}.\n\n"
        "| runtime | median ms | min ms | p90 ms |\n|---|---|---|---|\n"
        f"| PyTorch (pair: both frames encoded) | {torch_stats['median_ms']:.1f} | {torch_stats['min_ms']:.1f} | "
        f"{torch_stats['p90_ms']:.1f} |\n"
        f"| ONNX Runtime (pair: both frames encoded) | {ort_stats['median_ms']:.1f} | {ort_stats['min_ms']:.1f} | "
        f"{ort_stats['p90_ms']:.1f} |\n"
        f"| PyTorch streaming step (one encoder pass) | {streaming_stats['median_ms']:.1f} | "
        f"{streaming_stats['min_ms']:.1f} | {streaming_stats['p90_ms']:.1f} |\n\n"
        f"PyTorch / ONNX Runtime median ratio: **{ratio:.2f}** (above 1: ONNX Runtime is faster). "
        f"Max relative depth difference between them: {rel:.2g}.\n\n"
        f"Repeat with: `{command.strip()}`\n"
    )
    print((out / "onnx.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
