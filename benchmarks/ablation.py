"""Ablation on the synthetic world: every component switched on alone and all together.

Rows (METHOD.md "Training recipe"): single-frame, ManyDepth-style baseline, +mask, +MSFF, +RKD, full.
All multi-frame rows start from the same pretrain checkpoint (M0, S0, pose), use the same masks and
the same robust teacher, and train the student stage for the same number of steps, so they differ
only in their switches. Results: AbsRel etc. over all, static and moving pixels of the test
sequence, and the mask's IoU/precision/recall against the true motion masks.

    python benchmarks/ablation.py --out benchmarks/results [key=value overrides]

Writes ``ablation.json`` and ``ablation.md`` to ``--out``; the run directories go to ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from mfdepth.config import load_config, to_dict
from mfdepth.evaluation.runner import evaluate_checkpoint
from mfdepth.training.loop import checkpoint_paths
from mfdepth.training.recipe import run_stage

ROWS = {
    "baseline (ManyDepth-style)": ["loss.dynamic_mask=false", "model.msff=false", "loss.distillation=false"],
    "+mask": ["loss.dynamic_mask=true", "model.msff=false", "loss.distillation=false"],
    "+MSFF": ["loss.dynamic_mask=false", "model.msff=true", "loss.distillation=false"],
    "+RKD": ["loss.dynamic_mask=false", "model.msff=false", "loss.distillation=true"],
    "full": ["loss.dynamic_mask=true", "model.msff=true", "loss.distillation=true"],
}
METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", default="runs/ablation")
    parser.add_argument("--config", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    runs = Path(args.runs)
    shared = runs / "shared"
    base = load_config(args.config, [f"run_dir={shared}", *args.overrides])
    timings = {}
    start = time.time()
    for stage in ("pretrain", "masks", "teacher"):
        began = time.time()
        run_stage(stage, base, shared)
        timings[stage] = time.time() - began

    results = {}
    single = evaluate_checkpoint(checkpoint_paths(shared, "pretrain")[0], network="single",
                                 overrides=[f"data.root={base.data.root}"])
    results["single-frame (S0)"] = single.result.to_dict()
    for name, switches in ROWS.items():
        row_dir = runs / name.split()[0].replace("+", "plus_").lower()
        (row_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stage in ("pretrain", "teacher"):
            source = checkpoint_paths(shared, stage)[0]
            target = checkpoint_paths(row_dir, stage)[0]
            if not target.exists():
                shutil.copy2(source, target)
        if not (row_dir / "masks").exists():
            shutil.copytree(shared / "masks", row_dir / "masks")
        config = load_config(args.config, [f"run_dir={row_dir}", *args.overrides, *switches])
        began = time.time()
        run_stage("student", config, row_dir)
        timings[name] = time.time() - began
        evaluation = evaluate_checkpoint(checkpoint_paths(row_dir, "student")[0], network="multi",
                                         overrides=[f"data.root={base.data.root}"])
        results[name] = evaluation.result.to_dict()
    masks = json.loads((shared / "masks" / "summary.json").read_text())
    timings["total"] = time.time() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "rows": results,
        "masks": masks,
        "seconds": timings,
        "config": to_dict(base),
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": "python benchmarks/ablation.py " + " ".join(args.overrides),
    }
    (out / "ablation.json").write_text(json.dumps(payload, indent=2))

    t = base.train
    lines = [
        "# Ablation on the synthetic world",
        "",
        f"Budget: pretrain {t.pretrain_steps} steps, teacher {t.teacher_steps}, student {t.student_steps} per row; "
        f"batch {t.batch_size}, {base.data.height}x{base.data.width}, {base.model.num_depth_bins} hypotheses; "
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads; {timings['total'] / 60:.1f} min in all.",
        "",
        "| row | AbsRel all | AbsRel static | AbsRel moving | RMSE all | RMSE moving | d<1.25 all | d<1.25 moving |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value):
        return "undefined" if value is None else f"{value:.3f}"

    def cell(result, row, key):
        value = (result["metrics"].get(row) or {}).get(key)
        return "-" if value is None else f"{value:.3f}"

    for name, result in results.items():
        lines.append(
            f"| {name} | {cell(result, 'all', 'abs_rel')} | {cell(result, 'static', 'abs_rel')} | "
            f"{cell(result, 'moving', 'abs_rel')} | {cell(result, 'all', 'rmse')} | {cell(result, 'moving', 'rmse')} | "
            f"{cell(result, 'all', 'a1')} | {cell(result, 'moving', 'a1')} |"
        )
    lines += [
        "",
        f"Depth inconsistency mask on the training frames: IoU {fmt(masks.get('iou'))}, "
        f"precision {fmt(masks.get('precision'))}, recall {fmt(masks.get('recall'))}, "
        f"{masks['masked_fraction']:.2%} of pixels masked.",
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    (out / "ablation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
