"""Real video: self-supervised on a real sequence's own frames, scored against its depth maps.

Trains the pretrain stage (single-frame + pose warm-up, then the multi-frame net) on a folder of
frames with intrinsics (default: the HoloLens indoor sample of deep-video-mvs shipped in
``shared/data/hololens_indoor`` beside the repository: 30 frames, K.txt, uint16 depth PNGs; the
4 of them shipped in ``tests/data/samples`` when that is absent), then evaluates the
single- and multi-frame nets on the same frames with ``mfdepth evaluate``'s code, beside a constant
depth and the per-row prior fitted on the ground truth itself.

    python benchmarks/real_video.py [--root FOLDER] [--seeds 0 1 2] [key=value ...]

Writes ``benchmarks/results/real_video.json`` and ``.md`` (``--name`` for another name).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mfdepth.config import apply_overrides, load_config
from mfdepth.data import build_dataset
from mfdepth.evaluation.convergence import reference_scores
from mfdepth.evaluation.runner import evaluate_checkpoint
from mfdepth.run_layout import checkpoint_paths
from mfdepth.training.recipe import run_stage
from pretrain_bench import scratch_folder

HERE = Path(__file__).resolve().parent
# The 30-frame sequence beside the repository (shared/data), else the 4 frames shipped with the tests.
DEFAULT_ROOT = next(
    (p for p in (HERE.parents[1] / "shared" / "data" / "hololens_indoor",
                 HERE.parent / "tests" / "data" / "samples" / "hololens_indoor") if p.is_dir()),
)
RECIPE = [
    "data.dataset=folder", "data.height=96", "data.width=160", "data.num_workers=0",
    "eval.protocol=folder", "eval.max_depth=10", "train.pretrain_steps=350", "train.warmup_steps=250",
    "train.pose_prior_steps=250",
]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="folder of frames with K.txt and depth/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=None,
                        help="run directories, kept (default: a temporary folder, removed at exit)")
    parser.add_argument("--name", default="real_video", help="results are written to results/<name>.json and .md")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_config(None, [*RECIPE, f"data.root={args.root}", *args.overrides])
    # Scored on every frame with a previous one; the training-only settings that need frame +1 are off here.
    test_config = apply_overrides(base, ["data.frame_offsets=[0,-1]", "train.stereo_prior_steps=0"])
    test = build_dataset(test_config.data, "test", augment=False)
    gts = [test[i]["depth_gt"][0].numpy() for i in range(len(test))]
    references = reference_scores(gts, max_depth=base.eval.max_depth, protocol=base.eval.protocol)
    work = Path(args.work) if args.work else scratch_folder("mfdepth-real-")
    runs = {}
    for seed in args.seeds:
        config = apply_overrides(base, [f"train.seed={seed}", f"run_dir={work / f'seed{seed}'}"])
        began = time.time()
        run_stage("pretrain", config, config.run_dir, progress=False)
        seconds = time.time() - began
        checkpoint = checkpoint_paths(config.run_dir, "pretrain")[0]
        row = {"train_seconds": round(seconds, 1)}
        for network in ("single", "multi"):
            result = evaluate_checkpoint(checkpoint, network=network, progress=False).result
            row[network] = {k: result.metrics["all"][k] for k in ("abs_rel", "rmse", "a1")}
        runs[str(seed)] = row
        print(f"seed {seed}: S {row['single']['abs_rel']:.3f} M {row['multi']['abs_rel']:.3f} "
              f"({seconds:.0f} s); constant {references['constant']['all']:.3f}, "
              f"per-row prior {references['per_row_prior']['all']:.3f}", flush=True)
    payload = {"root": args.root, "frames": len(test), "argv": argv, "recipe": RECIPE, "references": references,
               "runs": runs, "torch_threads": torch.get_num_threads()}
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# Real video: self-supervised on its own frames, scored against its depth maps",
        "",
        f"`python benchmarks/real_video.py {' '.join(argv)}` on `{Path(args.root).name}` ({len(test)} frames scored, "
        f"median scaling, depth cap {base.eval.max_depth:g} m); recipe: {' '.join(RECIPE)}.",
        "",
        "| prediction | AbsRel | RMSE | d<1.25 |",
        "|---|---|---|---|",
        f"| constant depth | {references['constant']['all']:.3f} | - | {references['constant']['a1']:.3f} |",
        f"| per-row prior (fitted on the GT) | {references['per_row_prior']['all']:.3f} | - | "
        f"{references['per_row_prior']['a1']:.3f} |",
    ]
    for seed, row in runs.items():
        for network in ("single", "multi"):
            m = row[network]
            lines.append(f"| seed {seed}, {network}-frame net ({row['train_seconds']:.0f} s) | {m['abs_rel']:.3f} | "
                         f"{m['rmse']:.3f} | {m['a1']:.3f} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
