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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mfdepth import masks as mask_rules
from mfdepth.config import load_config, to_dict
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.metrics import MaskQualityAccumulator, relative_pose_errors
from mfdepth.evaluation.poses import true_relative_poses
from mfdepth.evaluation.protocols import evaluate_depth_maps
from mfdepth.synth import ensure_world
from mfdepth.training import recipe
from mfdepth.training.stages import predict_poses

RESULTS = Path(__file__).resolve().parent / "results"


class Judge:
    """Scores a stage's networks on the test split (ground truth of the synthetic world)."""

    def __init__(self, config):
        dataset = build_dataset(config.data, "test", augment=False)
        batch = collate_samples([dataset[i] for i in range(len(dataset))])
        offsets = [int(o) for o in batch["offsets"][0]]
        self.target = batch["frames"][:, 0]
        self.previous = batch["frames"][:, offsets.index(-1)]
        self.K = batch["K"][:, 0]
        self.gts = [g[0].numpy() for g in batch["depth_gt"]]
        self.motion = [m[0].numpy() for m in batch["motion_mask"]]
        self.true_poses = true_relative_poses(config.data.root, dataset.sample_ids)
        self.config = config

    def baselines(self) -> dict:
        """AbsRel of a constant depth and of the per-row prior fitted on the test ground truth."""
        constant = [np.ones_like(g) for g in self.gts]
        stack = np.stack(self.gts)
        valid = (stack > 1e-3) & (stack < self.config.eval.max_depth)
        # The per-row prior: each row's median true depth over all test frames (a function of the row only).
        rows = np.array([np.median(stack[:, r][valid[:, r]]) if valid[:, r].any() else 1.0
                         for r in range(stack.shape[1])])
        per_row = [np.repeat(rows[:, None], g.shape[1], axis=1) for g in self.gts]
        out = {}
        for name, preds in (("constant", constant), ("per_row_prior", per_row)):
            result = evaluate_depth_maps(preds, self.gts, motion_masks=self.motion, max_depth=self.config.eval.max_depth)
            out[name] = {row: result.metrics[row]["abs_rel"] for row in ("all", "static", "moving")}
            out[name]["a1"] = result.metrics["all"]["a1"]
        return out

    def _depth_scores(self, depths: torch.Tensor) -> dict:
        preds = [d[0].numpy() for d in depths]
        scored = evaluate_depth_maps(preds, self.gts, motion_masks=self.motion, max_depth=self.config.eval.max_depth)
        metric = evaluate_depth_maps(preds, self.gts, median_scaling=False, max_depth=self.config.eval.max_depth)
        pinned = float((depths <= self.config.model.min_depth * 1.05).float().mean())
        return {
            "abs_rel": scored.metrics["all"]["abs_rel"],
            "abs_rel_static": scored.metrics["static"]["abs_rel"],
            "abs_rel_moving": scored.metrics["moving"]["abs_rel"],
            "a1": scored.metrics["all"]["a1"],
            "abs_rel_metric": metric.metrics["all"]["abs_rel"],
            "median_ratio": scored.ratio_median if scored.ratio_median is not None else math.nan,
            "pinned_low": pinned,
        }

    @torch.no_grad()
    def score(self, stage) -> dict:
        nets = stage.saved_networks()
        was_training = stage.training
        stage.eval()
        out: dict = {}
        pose = nets["pose"]
        T = predict_poses(pose, self.target, {-1: self.previous})[-1]
        errors = relative_pose_errors(T.numpy(), self.true_poses)
        out["pose_direction_deg"] = errors["direction_deg"]
        out["pose_rotation_deg"] = errors["rotation_deg"]
        single_net = nets.get("single") or nets.get("teacher")
        single = torch.cat([single_net(self.target[i:i + 8])["depth"][0] for i in range(0, len(self.target), 8)])
        out["single"] = self._depth_scores(single)
        multi_net = nets.get("multi")
        trained_steps = stage.global_step + 1
        if multi_net is not None and getattr(stage, "multi_active", lambda step: True)(trained_steps):
            multi = torch.cat([
                multi_net(self.target[i:i + 8], self.previous[i:i + 8], T[i:i + 8], self.K[i:i + 8])["depth"][0]
                for i in range(0, len(self.target), 8)
            ])
            out["multi"] = self._depth_scores(multi)
            mcfg = self.config.masks
            dynamic = mask_rules.compute_dynamic_mask(
                multi, single, self.K, upper_ratio=mcfg.upper_ratio, lower_ratio=mcfg.lower_ratio,
                align_median=mcfg.align_median, ground_check=mcfg.ground_check, camera_height=mcfg.camera_height,
                ground_tolerance=mcfg.ground_tolerance, min_blob_area=mcfg.min_blob_area, dilation=mcfg.dilation,
            )
            quality = MaskQualityAccumulator()
            for predicted, true in zip(dynamic.numpy(), self.motion):
                quality.update(predicted[0], true > 0.5)
            scores = quality.compute()
            out["mask_iou"] = scores["iou"]
            out["masked_fraction"] = float(dynamic.float().mean())
        stage.train(was_training)
        return out


def train_and_record(base_config, seed: int, stages: list[str], eval_every: int, run_dir: Path, judge: Judge,
                     progress: bool) -> list[dict]:
    """Run ``stages`` of the recipe for one seed; return one record per evaluation."""
    from mfdepth.config import apply_overrides

    config = apply_overrides(base_config, [f"train.seed={seed}", f"run_dir={run_dir}"])
    history: list[dict] = []
    clock = {"offset": 0.0}

    for name in stages:
        totals = {"pretrain": config.train.pretrain_steps, "teacher": config.train.teacher_steps,
                  "student": config.train.student_steps}

        def record(step, module, seconds, stage_name=name):
            if step % eval_every and step != totals.get(stage_name, step):
                return
            row = {"stage": stage_name, "step": step, "seconds": round(clock["offset"] + seconds, 1)}
            row.update(judge.score(module))
            history.append(row)
            single, multi = row["single"], row.get("multi")
            line = (f"seed {seed} {stage_name} {step:4d} {row['seconds']:6.0f}s  S {single['abs_rel']:.3f}"
                    f" (metric {single['abs_rel_metric']:.3f}, a1 {single['a1']:.2f})")
            if multi:
                line += (f"  M {multi['abs_rel']:.3f} st {multi['abs_rel_static']:.3f} mv {multi['abs_rel_moving']:.3f}"
                         f" a1 {multi['a1']:.2f}  IoU {row['mask_iou']:.2f}")
            line += f"  pose dir {row['pose_direction_deg']:.1f} rot {row['pose_rotation_deg']:.2f}"
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
        "| seed | stage | step | s | S AbsRel | S metric | M AbsRel | M static | M moving | M d<1.25 | M metric "
        "| mask IoU | pose dir (deg) | pose rot (deg) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value, fmt=".3f"):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    for seed, history in payload["runs"].items():
        for row in history:
            multi = row.get("multi") or {}
            lines.append(
                f"| {seed} | {row['stage']} | {row['step']} | {row['seconds']:.0f} | {cell(row['single']['abs_rel'])} "
                f"| {cell(row['single']['abs_rel_metric'])} | {cell(multi.get('abs_rel'))} "
                f"| {cell(multi.get('abs_rel_static'))} | {cell(multi.get('abs_rel_moving'))} | {cell(multi.get('a1'), '.2f')} "
                f"| {cell(multi.get('abs_rel_metric'))} | {cell(row.get('mask_iou'), '.2f')} "
                f"| {cell(row['pose_direction_deg'], '.1f')} | {cell(row['pose_rotation_deg'], '.2f')} |"
            )
    (RESULTS / f"convergence_{name}.md").write_text("\n".join(lines) + "\n")
    plot_curves(payload, RESULTS / f"convergence_{name}.png")


def plot_curves(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for seed, history in payload["runs"].items():
        for key, style in (("single", "--"), ("multi", "-")):
            points = [(r["seconds"], r[key]["abs_rel"]) for r in history if r.get(key)]
            if points:
                axes[0].plot(*zip(*points), style, label=f"seed {seed} {key}")
        points = [(r["seconds"], r["pose_direction_deg"]) for r in history]
        axes[1].plot(*zip(*points), label=f"seed {seed}")
    for name, style in (("constant", ":"), ("per_row_prior", "-.")):
        axes[0].axhline(payload["baselines"][name]["all"], color="grey", linestyle=style, label=name)
    axes[0].set(xlabel="training seconds (2 CPU cores)", ylabel="AbsRel (test, median-scaled)", ylim=(0, 1.2),
                title="depth")
    axes[1].set(xlabel="training seconds", ylabel="degrees", yscale="log", title="pose translation direction error")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(payload["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results are written to results/convergence_<name>.*")
    parser.add_argument("--config", default=None, help="YAML recipe (default: the built-in CPU recipe)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--stages", nargs="+", default=["pretrain", "masks", "teacher", "student"])
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--data", default="data/synthetic", help="synthetic world (rendered if missing)")
    parser.add_argument("--work", default=None, help="run directories (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, [f"data.root={args.data}", "data.num_workers=0", *args.overrides])
    ensure_world(config.data.root, preset=config.data.synth_preset, progress=False)
    judge = Judge(config)
    baselines = judge.baselines()
    print(f"constant {baselines['constant']['all']:.3f}  per-row prior {baselines['per_row_prior']['all']:.3f}",
          flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mfdepth-convergence-"))
    runs = {}
    for seed in args.seeds:
        runs[str(seed)] = train_and_record(config, seed, args.stages, args.eval_every, work / f"seed{seed}", judge,
                                           args.progress)
        write_results(args.name, {"name": args.name, "argv": argv, "config": to_dict(config),
                                  "baselines": baselines, "runs": runs, "torch_threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
