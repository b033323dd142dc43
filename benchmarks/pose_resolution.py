"""Does the pose net lose accuracy when it sees half-resolution frames (``model.pose_downsample=2``)?

Trains the pretrain stage (S0, M0, pose) twice on the synthetic world with the same seed, data order
and budget, once per setting, and scores the pose net against the world's true poses and the
multi-frame depth against its true depth (test split).

    python benchmarks/pose_resolution.py --out benchmarks/results [key=value overrides]

Writes ``pose_resolution.json`` and ``pose_resolution.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mfdepth.config import load_config
from mfdepth.evaluation.poses import evaluate_poses
from mfdepth.evaluation.runner import evaluate_checkpoint
from mfdepth.run_layout import checkpoint_paths
from mfdepth.training.recipe import run_stage

SETTINGS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", default="runs/pose_resolution")
    parser.add_argument("--config", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    rows = {}
    for factor in SETTINGS:
        run_dir = Path(args.runs) / f"pose_downsample_{factor}"
        config = load_config(args.config, [f"run_dir={run_dir}", *args.overrides, f"model.pose_downsample={factor}"])
        began = time.time()
        run_stage("pretrain", config, run_dir)
        seconds = time.time() - began
        checkpoint = checkpoint_paths(run_dir, "pretrain")[0]
        data = [f"data.root={config.data.root}"]
        depth = evaluate_checkpoint(checkpoint, network="multi", overrides=data, progress=False).result.to_dict()
        rows[factor] = {"pose": evaluate_poses(checkpoint, overrides=data), "depth": depth, "train_seconds": seconds}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/pose_resolution.py " + " ".join(args.overrides)
    payload = {
        "rows": {str(k): v for k, v in rows.items()},
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "command": command,
    }
    (out / "pose_resolution.json").write_text(json.dumps(payload, indent=2))
    t, d = config.train, config.data
    lines = [
        "# Pose net input resolution",
        "",
        f"Pretrain stage only, {t.pretrain_steps} steps, batch {t.batch_size}, {d.height}x{d.width}, "
        f"{config.model.num_depth_bins} hypotheses, same seed and data order; synthetic world test split. "
        "Pose errors after one median scale over the split; depth of the multi-frame net M0.",
        "",
        "| pose input | rotation err (deg) | translation dir err (deg) | translation err (m) | M0 AbsRel | "
        "M0 d<1.25 | train min |",
        "|---|---|---|---|---|---|---|",
    ]
    for factor, row in rows.items():
        pose, metrics = row["pose"], row["depth"]["metrics"]["all"]
        size = f"{d.height // factor}x{d.width // factor}"
        lines.append(
            f"| {size} (pose_downsample={factor}) | {pose['rotation_deg']:.3f} | {pose['direction_deg']:.2f} | "
            f"{pose['translation_m']:.3f} | {metrics['abs_rel']:.3f} | {metrics['a1']:.3f} | "
            f"{row['train_seconds'] / 60:.1f} |"
        )
    lines += ["", f"{platform.machine()} CPU, {torch.get_num_threads()} threads. Command: `{command}`", ""]
    (out / "pose_resolution.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
