"""Convergence benchmark: train a recipe and record its quality against steps and seconds.

The judge of every training lever (docs/convergence.md). It trains the staged recipe (or its first
stages) on the embedded synthetic world with the real training code, and every ``--eval-every`` steps
scores the networks of the running stage on the test split against the world's ground truth:

* depth AbsRel (all, static, moving pixels) and d<1.25, per-image median scaling, of the single-frame
  net and (once it trains) the multi-frame net; AbsRel without median scaling beside it;
* the pose net's rotation and translation-direction error against the true camera motion;
* the depth inconsistency mask's IoU against the true motion (pretrain and student stages, test split).

Rows for a constant depth and the per-row prior (depth = f(image row), fitted on the test ground
truth itself) say what "learned something" means. Writes ``benchmarks/results/convergence_<name>.json``,
``.md`` and a ``.png`` of the curves.

    python benchmarks/convergence.py --name demo_recipe --seeds 0 1 2
    python benchmarks/convergence.py --name no_prior --stages pretrain train.pose_prior_steps=0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from mfdepth.config import load_config, to_dict
from mfdepth.evaluation.convergence import ConvergenceJudge, plot_curves
from mfdepth.synth import ensure_world
from mfdepth.training import recipe
from pretrain_bench import scratch_folder

RESULTS = Path(__file__).resolve().parent / "results"


def train_and_record(base_config, seed: int, stages: list[str], eval_every: int, run_dir: Path, judge: ConvergenceJudge,
                     progress: bool) -> list[dict]:
    """Run ``stages`` of the recipe for one seed; return one record per evaluation."""
    from mfdepth.config import apply_overrides

    config = apply_overrides(base_config, [f"train.seed={seed}", f"run_dir={run_dir}"])
    history: list[dict] = []
    clock = {"offset": 0.0}

    totals = {"pretrain": config.train.pretrain_steps, "teacher": config.train.teacher_steps,
              "student": config.train.student_steps}
    for name in stages:

        def record(step, module, seconds, stage_name=name):
            if step % eval_every and step != totals.get(stage_name, step):
                return
            row = {"stage": stage_name, "step": step, "seconds": round(clock["offset"] + seconds, 1)}
            with_multi = getattr(module, "multi_active", lambda step: True)(step - 1)  # the last step trained
            row.update(judge.score(module.evaluation_networks(), with_multi))
            history.append(row)
            single, multi = row["single"], row.get("multi")
            metric = single.get("abs_rel_camera_height")
            line = (f"seed {seed} {stage_name} {step:4d} {row['seconds']:6.0f}s  S {single['abs_rel']:.3f}"
                    f" (metric {'-' if metric is None else format(metric, '.3f')}, a1 {single['a1']:.2f},"
                    f" ratio {single['median_ratio']:.2f},"
                    f" pinned {single['pinned_low']:.2f})")
            if multi:
                line += (f"  M {multi['abs_rel']:.3f} st {multi['abs_rel_static']:.3f} mv {multi['abs_rel_moving']:.3f}"
                         f" a1 {multi['a1']:.2f} photo {multi['photometric']:.4f}  IoU {row['mask_iou']:.2f}")
            line += (f"  pose dir {row['pose_direction_deg']:.1f} rot {row['pose_rotation_deg']:.2f}"
                     f" depth/pose scale {row['scale_consistency']:.2f}")
            print(line, flush=True)

        began = time.time()
        if name == "masks":
            recipe.run_stage("masks", config, run_dir, progress=False)
        else:
            recipe.run_stage(name, config, run_dir, progress=progress, after_step=record)
        clock["offset"] += time.time() - began
    return history


def write_results(name: str, payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"convergence_{name}.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"# Convergence: {name}",
        "",
        f"`python benchmarks/convergence.py {' '.join(payload['argv'])}`",
        "",
        f"Baselines on the test split: constant depth AbsRel {payload['baselines']['constant']['all']:.3f}, "
        f"per-row prior {payload['baselines']['per_row_prior']['all']:.3f} (moving pixels "
        f"{payload['baselines']['per_row_prior']['moving']:.3f}).",
        "",
        "AbsRel is median-scaled per image; *metric* is without median scaling, each depth map made metric by "
        "its fitted ground plane and the known camera height alone (`mfdepth.masks.metric_by_camera_height`).",
        "",
        "| seed | stage | step | s | S AbsRel | S metric | M AbsRel | M static | M moving | M d<1.25 | M metric "
        "| M photometric | mask IoU | pose dir (deg) | pose rot (deg) | depth / pose scale |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value, fmt=".3f"):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    for seed, history in payload["runs"].items():
        for row in history:
            multi = row.get("multi") or {}
            lines.append(
                f"| {seed} | {row['stage']} | {row['step']} | {row['seconds']:.0f} | {cell(row['single']['abs_rel'])} "
                f"| {cell(row['single'].get('abs_rel_camera_height'))} | {cell(multi.get('abs_rel'))} "
                f"| {cell(multi.get('abs_rel_static'))} | {cell(multi.get('abs_rel_moving'))} | {cell(multi.get('a1'), '.2f')} "
                f"| {cell(multi.get('abs_rel_camera_height'))} | {cell(multi.get('photometric'), '.4f')} "
                f"| {cell(row.get('mask_iou'), '.2f')} "
                f"| {cell(row['pose_direction_deg'], '.1f')} | {cell(row['pose_rotation_deg'], '.2f')} "
                f"| {cell(row.get('scale_consistency'), '.2f')} |"
            )
    (RESULTS / f"convergence_{name}.md").write_text("\n".join(lines) + "\n")
    plot_curves(payload, RESULTS / f"convergence_{name}.png")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results are written to results/convergence_<name>.*")
    parser.add_argument("--config", default=None, help="YAML recipe (default: the built-in CPU recipe)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--stages", nargs="+", default=["pretrain", "masks", "teacher", "student"])
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--data", default="data/synthetic", help="synthetic world (rendered if missing)")
    parser.add_argument("--work", default=None, help="run directories, kept (default: a temporary folder, removed at exit)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, [f"data.root={args.data}", "data.num_workers=0", *args.overrides])
    ensure_world(config.data.root, preset=config.data.synth_preset, progress=False)
    judge = ConvergenceJudge(config)
    baselines = judge.baselines()
    print(f"constant {baselines['constant']['all']:.3f}  per-row prior {baselines['per_row_prior']['all']:.3f}",
          flush=True)
    work = Path(args.work) if args.work else scratch_folder("mfdepth-convergence-")
    runs = {}
    for seed in args.seeds:
        runs[str(seed)] = train_and_record(config, seed, args.stages, args.eval_every, work / f"seed{seed}", judge,
                                           args.progress)
        write_results(args.name, {"name": args.name, "argv": argv, "config": to_dict(config),
                                  "baselines": baselines, "runs": runs, "torch_threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
