"""The pose net's training cost for a sample's two source frames: one encoder pass per pair (before)
against both pairs in one pass (``PoseNet.forward_pairs``, what training does now).

Forward + backward in training mode, batch 4, the two ways interleaved in the same process so the
host's drift cancels in the ratio.

    python benchmarks/pose_pairs.py [--threads 2] [--height 64 --width 192] [--repeats 5]

Writes ``benchmarks/results/pose_pairs.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mfdepth.models import PoseNet

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of 4 steps per way")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pose = PoseNet().train()
    target, before, after = (torch.rand(args.batch, 3, args.height, args.width) for _ in range(3))

    def one_pass_per_pair():
        T = [pose(target, before, source_is_before=True), pose(target, after, source_is_before=False)]
        (T[0].sum() + T[1].sum()).backward()

    def pairs_together():
        T = pose.forward_pairs(target, [before, after], [True, False])
        (T[0].sum() + T[1].sum()).backward()

    ways = {"one pass per pair": one_pass_per_pair, "both pairs in one pass": pairs_together}
    for fn in ways.values():
        fn(), fn()
    times = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            for _ in range(4):
                fn()
            times[name].append((time.perf_counter() - start) / 4)
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians["one pass per pair"]
    command = (f"python benchmarks/pose_pairs.py --threads {args.threads} --height {args.height} "
               f"--width {args.width} --repeats {args.repeats}")
    result = {"command": command, "cpu": cpu_name(), "torch": torch.__version__,
              "seconds": medians, "speed_against_one_pass_per_pair": {n: reference / m for n, m in medians.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pose_pairs.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Pose net, two source frames, forward + backward (training mode, batch {args.batch}, "
             f"{args.height}x{args.width}, {args.threads} threads)", "",
             "| way | s per step (median) | speed against one pass per pair |", "|---|---|---|"]
    lines += [f"| {n} | {m:.3f} | {reference / m:.2f}x |" for n, m in medians.items()]
    lines += ["", f"torch {torch.__version__}, {result['cpu']}. Command: `{command}`"]
    (RESULTS / "pose_pairs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
