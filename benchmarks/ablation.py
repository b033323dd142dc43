"""Ablation on the synthetic world: every component switched on alone and all together, per seed.

Rows (METHOD.md "Training recipe"): single-frame, ManyDepth-style baseline, +mask, +MSFF, +RKD, full.
Per seed, all rows share one pretrain stage (S0, M0, pose) and one set of masks; every row's frozen
teacher is trained for the same ``train.teacher_steps``: the robust S* (with the depth inconsistency
mask) for the rows that use the masks, a plain teacher (S0 trained on without masks) for the others;
every student trains ``train.student_steps``. So no row gets extra steps and the rows differ only in
their switches. The single-frame row is the plain teacher (S0 after the same pretrain + teacher steps).
Scores: AbsRel over all / static / moving pixels and d<1.25 of the test split, mean and spread
(min-max) over the seeds; the mask's IoU against the true motion on the training frames.

    python benchmarks/ablation.py --seeds 0 1 [--threads 1] [key=value overrides]

Writes ``ablation.json`` and ``ablation.md`` to ``--out``; run directories go to ``--runs``. Each seed's
scores and timings are kept in ``<runs>/seed<N>/scores.json``: a seed already scored is read back, not
trained again, so seeds can run in separate processes (``--seeds 0`` and ``--seeds 1``, one thread each)
and a last ``--seeds 0 1`` writes the table of both.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mfdepth.config import load_config, to_dict
from mfdepth.evaluation.runner import evaluate_checkpoint
from mfdepth.run_layout import checkpoint_dir, checkpoint_paths, mask_summary_path, masks_dir, pose_prior_path
from mfdepth.training.recipe import run_stage

ROWS = {
    "baseline (ManyDepth-style)": ["loss.dynamic_mask=false", "model.msff=false", "loss.distillation=false"],
    "+mask": ["loss.dynamic_mask=true", "model.msff=false", "loss.distillation=false"],
    "+MSFF": ["loss.dynamic_mask=false", "model.msff=true", "loss.distillation=false"],
    "+RKD": ["loss.dynamic_mask=false", "model.msff=false", "loss.distillation=true"],
    "full": ["loss.dynamic_mask=true", "model.msff=true", "loss.distillation=true"],
}
UNMASKED = ["loss.dynamic_mask=false", "loss.distillation=false"]
SCORES = (("all", "abs_rel"), ("static", "abs_rel"), ("moving", "abs_rel"), ("all", "a1"))


def _copy(source_dir: Path, row_dir: Path, teacher_dir: Path | None, with_masks: bool) -> None:
    """Give ``row_dir`` the shared pretrain checkpoint (and the two-view prior), a teacher, the masks."""
    checkpoint_dir(row_dir).mkdir(parents=True, exist_ok=True)
    for stage, folder in (("pretrain", source_dir), ("teacher", teacher_dir)):
        if folder is None:
            continue
        target = checkpoint_paths(row_dir, stage)[0]
        if not target.exists():
            shutil.copy2(checkpoint_paths(folder, stage)[0], target)
    if with_masks and not masks_dir(row_dir).exists():
        shutil.copytree(masks_dir(source_dir), masks_dir(row_dir))
    if pose_prior_path(source_dir).exists() and not pose_prior_path(row_dir).exists():
        shutil.copy2(pose_prior_path(source_dir), pose_prior_path(row_dir))


def run_seed(args, seed: int, data_root: str) -> dict:
    """Train and score one seed's rows; ``{"rows", "masks", "seconds", "threads"}``, read back from
    ``scores.json`` when the seed was scored before."""
    runs = Path(args.runs) / f"seed{seed}"
    scores = runs / "scores.json"
    if scores.exists():
        return json.loads(scores.read_text())
    common = [*args.overrides, f"train.seed={seed}"]
    shared, plain = runs / "shared", runs / "plain_teacher"
    timings = {}
    base = load_config(args.config, [f"run_dir={shared}", *common])
    for stage in ("pretrain", "masks", "teacher"):
        began = time.time()
        run_stage(stage, base, shared, progress=False)
        timings[stage] = time.time() - began
    # The plain teacher: same start (S0, pose), same steps, no masks.
    plain_config = load_config(args.config, [f"run_dir={plain}", *common, *UNMASKED])
    _copy(shared, plain, None, with_masks=False)
    began = time.time()
    run_stage("teacher", plain_config, plain, progress=False)
    timings["plain teacher"] = time.time() - began

    data = [f"data.root={data_root}"]
    results = {"single-frame": evaluate_checkpoint(checkpoint_paths(plain, "teacher")[0], network="single",
                                                   overrides=data, progress=False).result.to_dict()}
    for name, switches in ROWS.items():
        row_dir = runs / name.split()[0].replace("+", "plus_").lower()
        config = load_config(args.config, [f"run_dir={row_dir}", *common, *switches])
        masked = config.loss.dynamic_mask or config.loss.distillation
        _copy(shared, row_dir, shared if masked else plain, with_masks=masked)
        began = time.time()
        run_stage("student", config, row_dir, progress=False)
        timings[name] = time.time() - began
        results[name] = evaluate_checkpoint(checkpoint_paths(row_dir, "student")[0], network="multi",
                                            overrides=data, progress=False).result.to_dict()
        print(f"seed {seed} {name}: AbsRel {results[name]['metrics']['all']['abs_rel']:.3f}", flush=True)
    masks = json.loads(mask_summary_path(shared).read_text())
    record = {"rows": results, "masks": masks, "seconds": timings, "threads": torch.get_num_threads()}
    partial = scores.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(scores)
    return record


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", default="runs/ablation")
    parser.add_argument("--config", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(args.config, list(args.overrides))
    records = {seed: run_seed(args, seed, base.data.root) for seed in args.seeds}
    per_seed = {seed: record["rows"] for seed, record in records.items()}
    masks = {seed: record["masks"] for seed, record in records.items()}

    def values(name, row, key):
        out = [(per_seed[s][name]["metrics"].get(row) or {}).get(key) for s in args.seeds]
        return [v for v in out if v is not None]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "seeds": {str(s): record for s, record in records.items()},
        "config": to_dict(base),
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": "python benchmarks/ablation.py " + " ".join(argv),
        "minutes": sum(sum(record["seconds"].values()) for record in records.values()) / 60,
    }
    (out / "ablation.json").write_text(json.dumps(payload, indent=2))

    t = base.train
    lines = [
        "# Ablation on the synthetic world",
        "",
        f"Budget per seed: pretrain {t.pretrain_steps} steps (the first {t.warmup_steps} single-frame + pose only), "
        f"teacher {t.teacher_steps} (robust S* for the masked rows, a plain teacher for the others), student "
        f"{t.student_steps} per row; batch {t.batch_size}, {base.data.height}x{base.data.width}, "
        f"{base.model.num_depth_bins} hypotheses; seeds {', '.join(map(str, args.seeds))}; {platform.machine()} CPU, "
        f"torch threads per seed {', '.join(str(records[s]['threads']) for s in args.seeds)}; "
        f"{payload['minutes']:.0f} min of training in all. Cells: mean over the seeds "
        "[min, max].",
        "",
        "| row | AbsRel all | AbsRel static | AbsRel moving | d<1.25 all |",
        "|---|---|---|---|---|",
    ]
    for name in per_seed[args.seeds[0]]:
        cells = []
        for row, key in SCORES:
            v = values(name, row, key)
            cells.append(f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]" if v else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ious = [masks[s].get("iou") for s in args.seeds]
    lines += [
        "",
        "Depth inconsistency mask on the training frames (IoU against the true motion): "
        + ", ".join(f"seed {s}: {'undefined' if v is None else f'{v:.3f}'}" for s, v in zip(args.seeds, ious)),
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    (out / "ablation.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
