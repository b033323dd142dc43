"""Which moving objects the two-way depth cue can see at all: per object role, how often M0's lowest-cost
depths against the previous and the next frame say "too far" or "too near" against S0's depth.

The masks stage's two-way source (``masks.depth_source=two_way_match``) flags a pixel when the nearer of
the two matches is over ``upper_ratio`` times S0's depth and warps the source frames better than S0's
depth does. This script measures, on every training frame of a run's pretrain networks and for the
pixels of each object role of the synthetic world (lead car, crossing, oncoming, pedestrians, parked...),
in motion and at rest, and for the background:

* ``far (nearer match > 2x, warps better)``: what the upper-side rule can flag (before blob removal);
* ``near (farther match < 0.5x, warps better)`` and ``< 0.85x``: what a lower side that also asks both
  neighbours to agree could flag;
* ``disagree``: where the two matches contradict each other (the farther over 2x / 3x the nearer): a
  point whose motion crosses the epipolar lines (a crossing car) matches near against one neighbour and
  far against the other, while a static point has one depth;
* the medians of the nearer and the farther match over S0's depth.

A role the cue does not reach bounds the mask's recall whatever the thresholds: this is the ceiling of any
rule on this depth, not a rule.

    python benchmarks/mask_cue_by_role.py RUN_DIR --data /tmp/world --name NAME

Writes ``benchmarks/results/mask_cue_by_role_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfdepth.config import load_config  # noqa: E402
from mfdepth.data import build_dataset  # noqa: E402
from mfdepth.data.base import collate_samples  # noqa: E402
from mfdepth.losses import min_reprojection_error  # noqa: E402
from mfdepth.run_layout import config_path  # noqa: E402
from mfdepth.training.recipe import _pretrain_networks  # noqa: E402
from mfdepth.training.stages import predict_poses  # noqa: E402
from moving_objects import instance_map, instance_roles  # noqa: E402
from pretrain_bench import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CUES = ("far (nearer match > 2x, warps better)", "near (farther match < 0.5x, warps better)",
        "near (farther match < 0.85x, warps better)", "disagree (farther match > 2x the nearer)",
        "disagree (farther match > 3x the nearer)", "far, or disagree > 3x")


@torch.no_grad()
def cue_maps(nets, batch, ssim_weight: float) -> tuple[np.ndarray, ...]:
    """Per pixel of a batch: nearer-match ratio, farther-match ratio (both over S0's depth after median
    alignment), and whether each warps the source frames better than S0's depth. Arrays ``(B, H, W)``."""
    _, target, _, sources, K, _ = nets.unpack(batch)
    poses = predict_poses(nets.pose, target, sources)
    single = nets.single(target)["depth"][0]
    previous = nets.multi(target, sources[-1], poses[-1], K)
    following = nets.multi(target, sources[1], poses[1], K)
    size = tuple(single.shape[-2:])
    matches = [F.interpolate(out["cost_volume_depth"], size=size, mode="nearest") for out in (previous, following)]
    nearer, farther = torch.minimum(*matches), torch.maximum(*matches)
    multi = previous["depth"][0]
    align = (single.flatten(1).median(1).values / multi.flatten(1).median(1).values).view(-1, 1, 1, 1)
    offsets = sorted(sources)
    frames, motions = [sources[o] for o in offsets], [poses[o] for o in offsets]
    reference, _ = min_reprojection_error(target, frames, single, motions, K, ssim_weight)
    better = [min_reprojection_error(target, frames, d, motions, K, ssim_weight)[0] < reference for d in (nearer, farther)]
    as_numpy = [x[:, 0].numpy() for x in (nearer * align / single, farther * align / single, *better)]
    return tuple(as_numpy)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with checkpoints/pretrain.ckpt")
    parser.add_argument("--data", required=True, help="the synthetic world the run trained on")
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    config = load_config(config_path(args.run_dir), [f"data.root={root}", f"run_dir={args.run_dir}"])
    nets = _pretrain_networks(config, args.run_dir, torch.device("cpu"))
    dataset = build_dataset(config.data, "train", augment=False, seed=config.train.seed)
    loader = DataLoader(dataset, batch_size=config.train.batch_size, collate_fn=collate_samples)
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    roles_cache: dict = {}
    for batch in loader:
        nearer, farther, nearer_better, farther_better = cue_maps(nets, batch, config.loss.ssim_weight)
        height, width = nearer.shape[-2:]
        far, disagree = (nearer > 2) & nearer_better, farther > 3 * nearer
        fired_by_cue = (far, (farther < 0.5) & farther_better, (farther < 0.85) & farther_better,
                        farther > 2 * nearer, disagree, far | disagree)
        for i, sample_id in enumerate(batch["id"]):
            folder, frame = sample_id.split()[:2]
            stem = f"{int(frame):010d}.png"
            instance = instance_map(root, sample_id, (height, width))
            moving = Image.open(root / folder / "gt" / "dynamic" / stem).convert("L")
            moving = np.asarray(moving.resize((width, height), Image.NEAREST)) > 0
            fired = [on[i] for on in fired_by_cue]
            groups = {"background": instance == 0}
            for ident, role in instance_roles(root, folder, roles_cache).items():
                groups[role] = groups.get(role, np.zeros_like(moving)) | ((instance == ident) & moving)
                rest = f"{role} (at rest)"
                groups[rest] = groups.get(rest, np.zeros_like(moving)) | ((instance == ident) & ~moving)
            for group, pixels in groups.items():
                n = int(pixels.sum())
                if not n:
                    continue
                row = counts[group]
                row["pixels"] += n
                for name, on in zip(CUES, fired):
                    row[name] += int((on & pixels).sum())
                row["nearer match / S0 (median, pixel-weighted)"] += float(np.median(nearer[i][pixels])) * n
                row["farther match / S0 (median, pixel-weighted)"] += float(np.median(farther[i][pixels])) * n
    table = {group: {"pixels": int(row["pixels"]),
                     **{k: v / row["pixels"] for k, v in row.items() if k != "pixels"}}
             for group, row in sorted(counts.items())}
    moving_roles = [g for g in table if g != "background" and not g.endswith("(at rest)")]
    moving_total = sum(table[g]["pixels"] for g in moving_roles)
    for g in moving_roles:
        table[g]["share of moving pixels"] = table[g]["pixels"] / moving_total
    command = "python benchmarks/mask_cue_by_role.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"run_dir": str(args.run_dir), "frames": len(dataset), "roles": table, "command": command}
    columns = [*CUES, "nearer match / S0 (median, pixel-weighted)", "farther match / S0 (median, pixel-weighted)"]
    lines = [f"# The two-way depth cue by object role: {args.name}", "",
             f"Pretrain networks of `{args.run_dir}`, {len(dataset)} training frames at the network's resolution; "
             "shares of each group's pixels.", "",
             "| group | pixels | share of moving pixels | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for group, row in table.items():
        share = row.get("share of moving pixels")
        lines.append(f"| {group} | {row['pixels']} | {'' if share is None else f'{share:.2f}'} | "
                     + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    write_results(args.out, f"mask_cue_by_role_{args.name}", payload, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
