"""``mfdepth bench``: speed, memory, size and FLOPs of the networks, written as JSON + Markdown.

Every measurement runs in its own fresh process (so its peak memory is its own) with the same thread
count. Latency is the median of ``runs`` timed calls after warm-up. Speed is reported against a
reference measured in the same run: the ManyDepth-shaped path (single-scale matching, both frames
encoded for every prediction).
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import resource
import statistics
import time
from pathlib import Path

NAME = "bench"
HELP = "Measure inference latency, training-step time, peak memory, parameters and FLOPs (JSON + Markdown)."


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch


def _intrinsics(torch, height: int, width: int):
    return torch.tensor([[0.58 * width, 0.0, (width - 1) / 2], [0.0, 1.92 * height, (height - 1) / 2], [0.0, 0.0, 1.0]])[None]


def _time(fn, runs: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": runs}


def pretrain_step(height: int, width: int, overrides=(), batch_size: int = 4, lr: float = 1e-4):
    """``(step, stage)``: one pretrain training step (S0 + M0 + pose, 4-scale losses) on a fixed batch of
    random frames, as a callable to time, and the stage module it trains."""
    import torch

    from mfdepth.config import load_config
    from mfdepth.geometry import intrinsics_pyramid
    from mfdepth.training.stages import PretrainStage

    stage = PretrainStage(load_config(None, [f"data.height={height}", f"data.width={width}", *overrides])).train()
    optimizer = torch.optim.Adam(stage.parameters(), lr=lr)
    K = _intrinsics(torch, height, width)
    frames = torch.rand(batch_size, 3, 3, height, width)
    batch = {
        "frames": frames,
        "frames_aug": frames,
        "offsets": torch.tensor([[0, -1, 1]] * batch_size),
        "K": intrinsics_pyramid(K.expand(batch_size, 3, 3), 4),
    }

    def step():
        loss, _, _ = stage(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, stage


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(kind: str, threads: int, height: int, width: int, bins: int, runs: int) -> dict:
    """One measurement; runs in a child process."""
    torch = _setup(threads)
    from torch.utils.flop_counter import FlopCounterMode

    from mfdepth.models import (
        MultiFrameDepthNet,
        PoseNet,
        SingleFrameDepthNet,
        StreamingDepth,
        prepare_for_inference,
    )

    K = _intrinsics(torch, height, width)
    frames = torch.rand(2, 1, 3, height, width)
    result: dict = {"kind": kind}
    if kind == "single":
        net = SingleFrameDepthNet()
        prepare_for_inference(net)
        with torch.inference_mode():
            result.update(_time(lambda: net(frames[0]), runs))
        nets = [net]
        flop_fn = lambda: net(frames[0])  # noqa: E731
    elif kind in ("multi", "multi_fine_half", "manydepth_reference"):
        reference = kind == "manydepth_reference"
        # The reference matches the full 64-channel single-scale features, as ManyDepth does.
        multi = MultiFrameDepthNet(num_depth_bins=bins, msff=not reference,
                                   matching_channels=0 if reference else 16, fine_matching=not reference,
                                   fine_matching_downsample=2 if kind == "multi_fine_half" else 1).eval()
        pose = PoseNet().eval()
        if not reference:  # the reference runs as ManyDepth's code does: plain NCHW
            prepare_for_inference(multi, pose)

        def pair():
            T = pose(frames[1], frames[0], source_is_before=True)
            return multi(frames[1], frames[0], T, K)

        with torch.inference_mode():
            result.update(_time(pair, runs))
        nets = [multi, pose]
        flop_fn = pair
    elif kind in ("streaming", "streaming_pose_half", "streaming_fine_half"):
        multi = MultiFrameDepthNet(num_depth_bins=bins, msff=True, fine_matching=True,
                                   fine_matching_downsample=2 if kind == "streaming_fine_half" else 1)
        pose = PoseNet(input_downsample=2 if kind == "streaming_pose_half" else 1)
        prepare_for_inference(multi, pose)
        stream = StreamingDepth(multi, pose)
        stream.step(frames[0], K)
        result.update(_time(lambda: stream.step(frames[1], K), runs))
        nets = [multi, pose]
        flop_fn = lambda: stream.step(frames[1], K)  # noqa: E731
    elif kind == "train_step":
        step, stage = pretrain_step(height, width, [f"model.num_depth_bins={bins}"])
        batch_size = 4
        result.update(_time(step, runs, warmup=1))
        result["batch_size"] = batch_size
        nets = [stage.single, stage.multi, stage.pose]
        flop_fn = None
    else:
        raise ValueError(kind)
    result["parameters"] = sum(p.numel() for net in nets for p in net.parameters())
    if flop_fn is not None:
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            flop_fn()
        result["gflops"] = counter.get_total_flops() / 1e9
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def run_benchmarks(out_dir: str | Path = "benchmarks/results", threads: int = 2, height: int = 192, width: int = 640,
                   train_height: int = 96, train_width: int = 320, bins: int = 96, runs: int = 10) -> dict:
    """Run every measurement in its own process; write ``bench.json`` and ``bench.md`` to ``out_dir``."""
    import torch

    context = multiprocessing.get_context("spawn")
    plan = [
        ("manydepth_reference", height, width),
        ("multi", height, width),
        ("multi_fine_half", height, width),
        ("streaming", height, width),
        ("streaming_fine_half", height, width),
        ("streaming_pose_half", height, width),
        ("single", height, width),
        ("train_step", train_height, train_width),
    ]
    results = {}
    for kind, h, w in plan:
        with context.Pool(1) as pool:
            results[kind] = pool.apply(_measure, (kind, threads, h, w, bins, max(runs if kind != "train_step" else 3, 1)))
        results[kind]["size"] = f"{h}x{w}"
    reference = results["manydepth_reference"]["median_s"]
    for kind in ("multi", "multi_fine_half", "streaming", "streaming_fine_half", "streaming_pose_half", "single"):
        results[kind]["speedup_vs_reference"] = reference / results[kind]["median_s"]
    payload = {
        "results": results,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": threads,
                    "torch": torch.__version__},
        "depth_bins": bins,
        "command": f"mfdepth bench --threads {threads} --height {height} --width {width} --runs {runs}",
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(payload, indent=2))
    names = {
        "manydepth_reference": "reference: 64-ch single-scale matching, both frames encoded (ManyDepth-shaped)",
        "multi": "multi-frame + pose, MSFF, fine matching at full resolution (pair of frames)",
        "multi_fine_half": "the same, fine matching at 1/2 resolution (model.fine_matching_downsample=2: KITTI, "
                           "Cityscapes recipes)",
        "streaming": "multi-frame streaming step (one new frame)",
        "streaming_fine_half": "streaming step, fine matching at 1/2 resolution (the KITTI recipe's network)",
        "streaming_pose_half": "streaming step, pose net on 1/2-resolution frames (model.pose_downsample=2)",
        "single": "single-frame net",
        "train_step": "training step (pretrain: S0 + M0 + pose, 4-scale losses), batch 4",
    }
    lines = [
        "# mfdepth bench",
        "",
        f"{platform.machine()} CPU, {threads} threads, torch {torch.__version__}, {bins} depth hypotheses. "
        f"Median of {runs} runs after warm-up (training step: 3).",
        "",
        "| what | size | median s | vs reference | params (M) | GFLOPs | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, row in results.items():
        speed = f"{row['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in row else "-"
        gflops = f"{row['gflops']:.1f}" if "gflops" in row else "-"
        lines.append(
            f"| {names[kind]} | {row['size']} | {row['median_s']:.3f} | {speed} | {row['parameters'] / 1e6:.1f} | "
            f"{gflops} | {row['peak_rss_mb']:.0f} |"
        )
    lines += ["", f"Command: `{payload['command']}`", ""]
    (out / "bench.md").write_text("\n".join(lines))
    return payload


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="benchmarks/results", help="folder for bench.json and bench.md")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--bins", type=int, default=96, help="depth hypotheses")
    parser.add_argument("--runs", type=int, default=10)


def run(args) -> int:
    run_benchmarks(args.out, args.threads, args.height, args.width, bins=args.bins, runs=args.runs)
    print((Path(args.out) / "bench.md").read_text())
    return 0
