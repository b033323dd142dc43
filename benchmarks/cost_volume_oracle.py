"""How much depth does a cost volume carry before any learning? (docs/convergence.md, failure 6)

With the world's TRUE relative pose and the images themselves as features (nothing learned), the
depth of each pixel's lowest-cost hypothesis is scored against the true depth on the test split,
without any scaling (the true pose is metric). Rows:

* ``quarter``: images downsampled to 1/4 and matched there (the grid of ManyDepth's cost volume);
* ``half`` / ``full``: matched at 1/2 / full resolution, on their own grid;
* ``half pooled to 1/4``: matched at 1/2 resolution, each 1/4 cell's cost the mean over its 2x2 pixels
  (``model.fine_matching_downsample=2``);
* ``full pooled to 1/4``: matched at full resolution, each 1/4 cell's cost the mean over its pixels
  (``model.fine_matching``, :func:`mfdepth.models.cost_volume.pooled_cost_volume`).

    python benchmarks/cost_volume_oracle.py [--height 64 --width 192] [--data data/synthetic]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.config import load_config
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.geometry import scale_intrinsics
from mfdepth.models.cost_volume import build_cost_volume, finish_cost_volume, pooled_cost_volume
from mfdepth.synth import ensure_world

RESULTS = Path(__file__).resolve().parent / "results"


def score(argmin_depth, reliable, gt, max_depth):
    """AbsRel, median relative error and d<1.25 of the lowest-cost depth where the ground truth exists."""
    gt = F.interpolate(gt, size=argmin_depth.shape[-2:], mode="nearest")
    usable = (gt > 1e-3) & (gt < max_depth) & (reliable > 0)
    error = ((argmin_depth - gt).abs() / gt)[usable]
    ratio = (argmin_depth / gt)[usable]
    return {
        "abs_rel": float(error.mean()), "median_rel_error": float(error.median()),
        "a1": float((torch.maximum(ratio, 1 / ratio) < 1.25).float().mean()),
        "reliable": float(usable.float().mean()),
    }


def true_pose_inputs(description: str):
    """The command line of the oracle benchmarks and the test split they use: ``(args, config, judge,
    T (N,4,4) true relative poses, gt (N,1,H,W) true depth)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--bins", type=int, default=48)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    ensure_world(args.data, preset="demo")
    config = load_config(None, [f"data.root={args.data}", f"data.height={args.height}", f"data.width={args.width}"])
    judge = ConvergenceJudge(config)
    T = torch.as_tensor(judge.true_poses, dtype=torch.float32)
    gt = torch.stack([torch.as_tensor(g) for g in judge.gts])[:, None].float()
    return args, config, judge, T, gt


def main():
    args, config, judge, T, gt = true_pose_inputs(__doc__.splitlines()[0])
    H, W = args.height, args.width
    target, previous, K = judge.target, judge.previous, judge.K
    depths = torch.linspace(2.0, config.eval.max_depth, args.bins)[None].expand(len(target), -1)
    rows = {}
    for name, div in (("quarter", 4), ("half", 2), ("full", 1)):
        size = (H // div, W // div)
        t, s = (F.interpolate(x, size=size, mode="area") for x in (target, previous))
        cost, valid = build_cost_volume(t, s, T, scale_intrinsics(K, 1 / div, 1 / div), depths)
        _, best, reliable = finish_cost_volume(cost, valid, depths)
        rows[f"{name} ({size[0]}x{size[1]})"] = score(best, reliable, gt, config.eval.max_depth)
    t, s = (F.interpolate(x, size=(H // 2, W // 2), mode="area") for x in (target, previous))
    cost, valid = pooled_cost_volume(t, s, T, scale_intrinsics(K, 0.5, 0.5), depths, 2)
    _, best, reliable = finish_cost_volume(cost, valid, depths)
    rows[f"half pooled to 1/4 ({H // 4}x{W // 4})"] = score(best, reliable, gt, config.eval.max_depth)
    cost, valid = pooled_cost_volume(target, previous, T, K, depths, 4)
    _, best, reliable = finish_cost_volume(cost, valid, depths)
    rows[f"full pooled to 1/4 ({H // 4}x{W // 4})"] = score(best, reliable, gt, config.eval.max_depth)

    name = args.name or f"cost_volume_oracle_{H}x{W}"
    payload = {"argv": vars(args), "frames": len(target), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Cost volume with the true pose and the images as features ({H}x{W}, {args.bins} bins 2-"
             f"{config.eval.max_depth:g} m, {len(target)} test frames, no scaling)", "",
             "| matching | AbsRel | median rel. error | d<1.25 | reliable |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['abs_rel']:.3f} | {v['median_rel_error']:.3f} | {v['a1']:.2f} | {v['reliable']:.2f} |"
              for k, v in rows.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
