"""Where a pretrain stage's M0 and S0 err on static pixels of the test split.

When M0 is pulled toward its cost volume's match to over-fit the moving cars (failure 18 in
docs/convergence.md), its static pixels get worse too. This script splits each network's static-pixel
AbsRel (per-image median scaling, at the network's resolution, ground truth resized by nearest neighbour)
into the share of pixels within 4 px of a moving object and the rest, and into true-depth bands, as sums
that add up to the static AbsRel; and counts the static pixels where M0's depth is over twice S0's.

    python benchmarks/static_error_where.py --data /tmp/world --name NAME RUN_DIR [RUN_DIR ...]

Writes ``benchmarks/results/static_error_where_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.config import load_config
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.training.recipe import _pretrain_networks

RESULTS = Path(__file__).resolve().parent / "results"
NEAR_PIXELS = 4
MAX_DEPTH = 80.0


def part_masks(truth: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
    """The static pixels and their parts, ``(N, 1, H, W)`` bool each."""
    valid = (truth > 0) & (truth < MAX_DEPTH)
    static = valid & ~moving
    near = F.max_pool2d(moving.float(), 2 * NEAR_PIXELS + 1, 1, NEAR_PIXELS) > 0.5
    return {"static": static, f"within {NEAR_PIXELS} px of a moving object": static & near,
            "elsewhere": static & ~near, "nearer than 10 m": static & (truth < 10),
            "10-30 m": static & (truth >= 10) & (truth < 30), "beyond 30 m": static & (truth >= 30)}


def relative_errors(depth: torch.Tensor, truth: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """|d - t| / t after scaling each image by the median ratio over its static pixels."""
    scaled = depth.clone()
    for i in range(depth.shape[0]):
        scaled[i] *= truth[i][static[i]].median() / depth[i][static[i]].median()
    return (scaled - truth).abs() / truth.clamp(min=1e-3)


@torch.no_grad()
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories whose pretrain stage has finished")
    parser.add_argument("--data", required=True, help="the synthetic world the runs trained on")
    parser.add_argument("--name", required=True, help="results are written as static_error_where_<name>.*")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = [f"data.root={args.data}", "data.num_workers=0"]
    judge = ConvergenceJudge(load_config(str(Path(args.run_dirs[0]) / "config.yaml"), overrides))
    size = tuple(judge.target.shape[-2:])
    truth = F.interpolate(torch.stack([torch.from_numpy(g) for g in judge.gts])[:, None].float(), size=size,
                          mode="nearest")
    moving = F.interpolate(torch.stack([torch.from_numpy(m) for m in judge.motion])[:, None].float(), size=size,
                           mode="nearest") > 0.5
    parts = part_masks(truth, moving)
    static = parts["static"]
    results = {}
    for run in args.run_dirs:
        config = load_config(str(Path(run) / "config.yaml"), overrides)
        nets = _pretrain_networks(config, Path(run), torch.device("cpu"))
        pose = nets.pose(judge.target, judge.previous, source_is_before=True)
        chunks = range(0, len(judge.target), 8)
        single = torch.cat([nets.scaled(nets.single(judge.target[i:i + 8]), judge.K[i:i + 8])["depth"][0]
                            for i in chunks])
        multi = torch.cat([nets.scaled(nets.multi(judge.target[i:i + 8], judge.previous[i:i + 8], pose[i:i + 8],
                                                  judge.K[i:i + 8]), judge.K[i:i + 8])["depth"][0] for i in chunks])
        row = {}
        for name, depth in (("S0", single), ("M0", multi)):
            errors = relative_errors(depth, truth, static)
            row[name] = {part: {"abs_rel_sum": float(errors[m].sum() / static.sum()),
                                "pixel_share": float(m.sum() / static.sum())} for part, m in parts.items()}
        row["m0_over_twice_s0_static_share"] = float(((multi > 2 * single) & static).sum() / static.sum())
        results[run] = row
    payload = {"runs": results,
               "command": "python benchmarks/static_error_where.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"static_error_where_{args.name}.json").write_text(json.dumps(payload, indent=2))
    names = list(parts)
    lines = [f"# Static-pixel error by place: {args.name}", "",
             "Each cell: AbsRel summed over the part's static pixels, divided by all static pixels (the parts of a "
             "split add up to the first column); share of the static pixels in brackets.", "",
             "| run | net | " + " | ".join(names) + " | M0 > 2x S0 |", "|---" * (len(names) + 3) + "|"]
    for run, row in results.items():
        for net in ("S0", "M0"):
            cells = [f"{row[net][p]['abs_rel_sum']:.3f} ({row[net][p]['pixel_share']:.2f})" for p in names]
            extra = f"{100 * row['m0_over_twice_s0_static_share']:.1f}%" if net == "M0" else "-"
            lines.append(f"| `{run}` | {net} | " + " | ".join(cells) + f" | {extra} |")
    lines += ["", f"Command: `{payload['command']}`"]
    (RESULTS / f"static_error_where_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
