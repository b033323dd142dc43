"""``mfdepth demo``: the whole method on the embedded synthetic world, in one command.

Renders the synthetic driving world (if it is not there yet), trains every stage at a CPU-sized
budget, evaluates the single-frame net, the ManyDepth-style baseline and the full method against the
world's ground truth (all pixels, static pixels, moving pixels), and writes a report folder:
``report.md`` with the metrics table and mask quality, and PNGs (depth side by side, the depth
inconsistency mask against the true motion, the loss curves).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

NAME = "demo"
HELP = "Render the synthetic world, train all stages on the CPU, evaluate, and write a report."

log = logging.getLogger(__name__)

# (row name, stage checkpoint, network) of the report's table, in the order of the ablation.
MODELS = (
    ("single-frame (S0)", "pretrain", "single"),
    ("baseline, ManyDepth-style (M0)", "pretrain", "multi"),
    ("robust teacher (S*)", "teacher", "single"),
    ("full method (M)", "student", "multi"),
)


def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", default="runs/demo", help="where checkpoints, logs and the report go")
    parser.add_argument("--data", default="data/synthetic", help="where the synthetic world is rendered")
    parser.add_argument("--config", "-c", default=None, help="YAML recipe (default: the built-in CPU recipe)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def _mask_examples(config, run_dir: Path, count: int):
    """A few training frames with their depth inconsistency mask and true motion mask."""
    from mfdepth.data import build_dataset
    from mfdepth.run_layout import masks_dir

    data_cfg = config.data
    dataset = build_dataset(data_cfg, "train", augment=False, mask_dir=masks_dir(run_dir))
    # Prefer frames with moving objects: they are what the mask is for.
    chosen = []
    for index in np.linspace(0, len(dataset) - 1, min(len(dataset), 40)).round().astype(int):
        sample = dataset[int(index)]
        truth = sample.get("motion_mask")
        if truth is not None and truth.sum() < 20:
            continue
        chosen.append(sample)
        if len(chosen) == count:
            break
    images = [(s["frames"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for s in chosen]
    predicted = [s["dynamic_mask"][0].numpy() > 0.5 for s in chosen]
    truth = [s["motion_mask"][0].numpy() > 0.5 if "motion_mask" in s else None for s in chosen]
    return images, predicted, truth


def _metric_row(name: str, result, row: str) -> str:
    metrics = result.metrics.get(row) or {}
    cells = [f"{metrics[k]:.3f}" if metrics.get(k) is not None else "-" for k in
             ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")]
    return f"| {name} | {row} | " + " | ".join(cells) + " |"


METRIC_ROW = "full method (M), metric: camera height, no median scaling"

# (row name, stage checkpoint) of the pose table: P after pretraining, and the frozen P the student uses.
POSE_MODELS = (("pose net after pretrain", "pretrain"), ("pose net of the teacher and student", "student"))


def _trained_precision(run_dir: Path) -> str:
    """How the student was trained: ``float32`` or ``bfloat16 mixed`` / ``float16 mixed`` (from its checkpoint)."""
    from mfdepth.run_layout import checkpoint_paths
    from mfdepth.training.checkpoint import load_checkpoint

    precision = load_checkpoint(checkpoint_paths(run_dir, "student")[0], mmap=True)["meta"].get("precision", "32")
    return {"32": "float32", "bf16-mixed": "bfloat16 mixed", "16-mixed": "float16 mixed"}.get(precision, precision)


def write_report(config, run_dir: Path, evaluations: dict, mask_summary: dict, timings: dict,
                 poses: dict | None = None, curve: dict | None = None) -> Path:
    from mfdepth.evaluation.figures import save_depth_comparison, save_loss_curves, save_mask_figure
    from mfdepth.run_layout import report_dir
    from mfdepth.training.loop import read_loss_log

    report = report_dir(run_dir)
    report.mkdir(parents=True, exist_ok=True)

    baseline = evaluations["baseline, ManyDepth-style (M0)"]
    full = evaluations["full method (M)"]
    examples_full = {e.sample_id: e for e in full.examples}
    rows = [e for e in baseline.examples if e.sample_id in examples_full]
    if rows:
        save_depth_comparison(
            report / "depth_baseline_vs_full.png",
            [e.image for e in rows],
            {
                "ground truth": [e.depth_gt for e in rows],
                "baseline (M0)": [e.depth_pred for e in rows],
                "full method (M)": [examples_full[e.sample_id].depth_pred for e in rows],
            },
            title="test frames: inverse depth, brighter = nearer",
        )
    images, predicted, truth = _mask_examples(config, run_dir, 4)
    if images:
        save_mask_figure(report / "mask_vs_true_motion.png", images, predicted, truth,
                         title="depth inconsistency mask vs true moving objects (training frames)")
    save_loss_curves(report / "loss_curves.png", {s: read_loss_log(run_dir, s) for s in ("pretrain", "teacher", "student")})

    if curve is not None:
        from mfdepth.evaluation.convergence import plot_curves

        plot_curves(curve, report / "convergence.png")
        (report / "convergence.json").write_text(json.dumps(curve, indent=2))
    lines = [
        "# mfdepth demo report",
        "",
        f"Synthetic world `{config.data.root}` (split `{config.data.split}`), network input "
        f"{config.data.height}x{config.data.width}, ResNet-{config.model.encoder_layers}, "
        f"{config.model.num_depth_bins} depth hypotheses, batch {config.train.batch_size}; steps: pretrain "
        f"{config.train.pretrain_steps}, teacher {config.train.teacher_steps}, student {config.train.student_steps}; "
        f"arithmetic {_trained_precision(run_dir)} (`train.precision={config.train.precision}`).",
        "",
        "## Depth on the test sequence (per-image median scaling, cap "
        f"{config.eval.max_depth:g} m)",
        "",
        "| model | pixels | AbsRel | SqRel | RMSE | RMSElog | d<1.25 | d<1.25^2 | d<1.25^3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, evaluation in evaluations.items():
        for row in ("all", "static", "moving"):
            lines.append(_metric_row(name, evaluation.result, row))
    if curve is not None:
        base = curve["baselines"]
        lines += [
            "",
            f"What the numbers mean: a constant depth scores AbsRel {base['constant']['all']:.3f} here, and the "
            f"per-row prior (each image row's median true depth, fitted on this test split itself) "
            f"{base['per_row_prior']['all']:.3f}; a network below the latter has learned scene structure.",
        ]
    lines += [
        "",
        f"Frames evaluated: {full.result.num_evaluated} of {full.result.num_frames}.",
        "",
        "## Depth inconsistency mask (training frames, against the true motion masks)",
        "",
        f"- pixels masked: {mask_summary.get('masked_fraction', float('nan')):.3%}",
    ]
    for key in ("iou", "precision", "recall"):
        if key in mask_summary:
            value = mask_summary[key]
            lines.append(f"- {key}: " + ("undefined (no pixel)" if value is None else f"{value:.3f}"))
    undilated = mask_summary.get("before_dilation")
    if undilated:
        lines.append(f"- before its {mask_summary.get('dilation', '?')}-pixel dilation (the rule's own flags): "
                     + ", ".join(f"{key} " + ("undefined" if undilated.get(key) is None else f"{undilated[key]:.3f}")
                                 for key in ("iou", "precision", "recall")))
    if poses:
        lines += [
            "",
            "## Camera motion (test sequence, against the true poses)",
            "",
            "Translation is known only up to scale: it is scaled by one median factor first. A converged pose "
            "net is within a few degrees of the true direction; until it is, the photometric loss carries little "
            "depth signal, and the depth and the mask above stay close to their initial state.",
            "",
            "| pose net | rotation error (deg) | translation direction error (deg) | translation error (m) | scale |",
            "|---|---|---|---|---|",
        ]
        for name, e in poses.items():
            lines.append(f"| {name} | {e['rotation_deg']:.3f} | {e['direction_deg']:.1f} | "
                         f"{e['translation_m']:.3f} | {e['scale']:.1f} |")
    lines += [
        "",
        "## Figures",
        "",
        "![depth](depth_baseline_vs_full.png)",
        "",
        "![mask](mask_vs_true_motion.png)",
        "",
        "![losses](loss_curves.png)",
        "",
        "![convergence](convergence.png)",
        "",
        "## Time (seconds, this machine)",
        "",
    ]
    lines += [f"- {name}: {seconds:.0f}" for name, seconds in timings.items()]
    lines.append("")
    (report / "report.md").write_text("\n".join(lines))
    (report / "metrics.json").write_text(json.dumps(
        {name: e.result.to_dict() for name, e in evaluations.items()}
        | {"masks": mask_summary, "poses": poses or {}, "seconds": timings},
        indent=2,
    ))
    return report


def run_demo(run_dir="runs/demo", data_root="data/synthetic", config_path=None, overrides=(), progress=True) -> Path:
    from mfdepth.config import load_config
    from mfdepth.evaluation.convergence import ConvergenceJudge
    from mfdepth.evaluation.poses import evaluate_poses
    from mfdepth.evaluation.runner import evaluate_checkpoint
    from mfdepth.run_layout import STAGES, checkpoint_paths, mask_summary_path
    from mfdepth.synth import CAMERA_HEIGHT, ensure_world
    from mfdepth.training.recipe import run_stage

    run_dir = Path(run_dir)
    config = load_config(config_path, [f"run_dir={run_dir}", f"data.root={data_root}", *overrides])
    timings: dict[str, float] = {}
    start = time.time()
    ensure_world(config.data.root, preset=config.data.synth_preset, progress=progress)
    timings["render world"] = time.time() - start
    judge = ConvergenceJudge(config)
    history: list[dict] = []
    for stage in STAGES:  # every stage, also those the config does not need: the report shows them all
        began = time.time()
        if stage == "masks":
            run_stage(stage, config, run_dir, progress=progress)
        else:
            total = getattr(config.train, f"{stage}_steps")
            seconds_before = sum(timings.values()) - timings["render world"]
            run_stage(stage, config, run_dir, progress=progress,
                      after_step=_curve_recorder(judge, history, stage, total, seconds_before))
        timings[stage] = time.time() - began
    began = time.time()
    data = [f"data.root={config.data.root}"]
    evaluations = {}
    for name, stage, network in MODELS:
        checkpoint = checkpoint_paths(run_dir, stage)[0]
        evaluations[name] = evaluate_checkpoint(
            checkpoint, network=network, overrides=data, keep_examples=4, progress=progress,
        )
    # Metric depth with no ground truth at all: the world's camera height fixes the scale.
    evaluations[METRIC_ROW] = evaluate_checkpoint(
        checkpoint_paths(run_dir, "student")[0], network="multi", overrides=data, progress=progress,
        camera_height=CAMERA_HEIGHT,
    )
    poses = {name: evaluate_poses(checkpoint_paths(run_dir, stage)[0], overrides=data) for name, stage in POSE_MODELS}
    timings["evaluate"] = time.time() - began
    mask_summary = json.loads(mask_summary_path(run_dir).read_text())
    timings["total"] = time.time() - start
    curve = {"name": "mfdepth demo", "baselines": judge.baselines(), "runs": {str(config.train.seed): history}}
    return write_report(config, run_dir, evaluations, mask_summary, timings, poses, curve)


CURVE_EVERY = 200
"""Steps between two evaluations of the test split during the demo's training (3-5 s each on 2 cores; at
every 100 steps the 1800-step demo spent about a minute on them; ``benchmarks/convergence.py`` keeps its
own interval)."""


def _curve_recorder(judge, history: list, stage: str, total_steps: int, seconds_before: float):
    """An ``after_step`` callback that scores the stage's networks every :data:`CURVE_EVERY` steps
    and after its last step."""

    def record(step, module, seconds):
        if step % CURVE_EVERY and step != total_steps:
            return
        with_multi = getattr(module, "multi_active", lambda step: True)(step - 1)  # the last step trained
        row = {"stage": stage, "step": step, "seconds": round(seconds_before + seconds, 1)}
        row.update(judge.score(module.evaluation_networks(), with_multi))
        history.append(row)

    return record


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run_demo(args.run_dir, args.data, args.config, args.overrides, progress=not args.quiet)
    print((report / "report.md").read_text())
    print(f"report written to {report}")
    return 0
