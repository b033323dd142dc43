"""Prepare a run directory whose depth inconsistency masks are the synthetic world's true motion masks.

The teacher and student stages then train exactly as the recipe does, but with a perfect mask: what
the method's masked loss and robust distillation give on moving pixels once the mask is right, and so
how much of the moving-pixel miss is the mask's. Copies a finished pretrain stage (its checkpoint,
config and cached priors) from ``SOURCE`` to ``DEST`` and writes one true mask per mask file of
``SOURCE`` (same names, same size), then::

    python benchmarks/oracle_mask_run.py /tmp/exp/run/seed1 /tmp/exp/oracle/seed1 --data /tmp/world
    python benchmarks/convergence.py --name oracle_mask_s1 --seeds 1 --stages teacher student \\
        --eval-every 250 --data /tmp/world --work /tmp/exp/oracle --threads 2 [the run's overrides]

Nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from mfdepth import run_layout

COPIED = ("config.yaml", "pose_prior.npz", "stereo_prior.npz")


def true_mask_path(world: Path, mask_file: Path, masks_root: Path) -> Path:
    """``masks/<date>/<drive>/<frame>_l.png`` -> ``<world>/<date>/<drive>/gt/dynamic/<frame:010d>.png``."""
    relative = mask_file.relative_to(masks_root)
    frame = int(relative.stem.split("_")[0])
    return world.joinpath(*relative.parent.parts, "gt", "dynamic", f"{frame:010d}.png")


def write_true_masks(world: Path, source_masks: Path, dest_masks: Path) -> dict:
    files = sorted(p for p in source_masks.rglob("*.png"))
    if not files:
        raise SystemExit(f"{source_masks}: no mask files; run the masks stage of that run first")
    masked = []
    for path in files:
        size = Image.open(path).size
        truth = Image.open(true_mask_path(world, path, source_masks))
        # Area-resized, any motion in a pixel's footprint counts: the mask errs toward excluding.
        moving = np.asarray(truth.convert("F").resize(size, Image.BOX)) > 0
        out = dest_masks / path.relative_to(source_masks)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((moving * 255).astype(np.uint8)).save(out)
        masked.append(moving.mean())
    summary = {"frames": len(files), "masked_fraction": float(np.mean(masked)), "oracle": "true motion masks",
               "iou": 1.0}
    (dest_masks / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="run directory with a finished pretrain and masks stage")
    parser.add_argument("dest", type=Path, help="new run directory (created)")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic world the run trained on")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists; give a new run directory")
    checkpoint = run_layout.checkpoint_dir(args.source) / "pretrain.ckpt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: missing; the source run needs a finished pretrain stage")
    (run_layout.checkpoint_dir(args.dest)).mkdir(parents=True)
    shutil.copy2(checkpoint, run_layout.checkpoint_dir(args.dest) / "pretrain.ckpt")
    for name in COPIED:
        if (args.source / name).is_file():
            shutil.copy2(args.source / name, args.dest / name)
    summary = write_true_masks(args.data, run_layout.masks_dir(args.source), run_layout.masks_dir(args.dest))
    print(f"{summary['frames']} true masks, {summary['masked_fraction']:.1%} of the pixels moving -> {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
