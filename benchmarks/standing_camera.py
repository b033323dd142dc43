"""Which training frames does the camera stand in, and can the trained networks tell?

A standing camera gives M0's cost volume no parallax: every depth hypothesis warps alike, its depth there
says nothing about motion, and the depth inconsistency mask flags a third of such a frame (failure 17 in
docs/convergence.md). Two label-free detectors are compared here against the world's true poses, with the
pretrain stage's networks of a run:

* the parallax of the pose net's translation with S0's depth (:func:`mfdepth.geometry.translation_parallax`,
  median over the image, pixels of the network's input);
* the share of pixels Monodepth2's auto-mask drops, S0's depth and the pose net's motion against the
  unwarped sources (:func:`mfdepth.losses.automask_of`), the detector of ``masks.standing_camera_fraction``.

    python benchmarks/standing_camera.py RUN_DIR --data /tmp/world --name NAME

Writes ``benchmarks/results/standing_camera_<name>.json`` and ``.md``: per frame the true travel from the
previous frame, both detectors, and for each detector the range over standing frames (under 5 cm) and
over moving ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfdepth import geometry, losses
from mfdepth.config import load_config
from mfdepth.data.base import collate_samples
from mfdepth.data.factory import build_dataset
from mfdepth.training.recipe import _pretrain_networks
from mfdepth.training.stages import predict_poses

RESULTS = Path(__file__).resolve().parent / "results"
STANDING_METRES = 0.05


@torch.no_grad()
def detectors(run_dir: Path, data: Path, batch_size: int = 4) -> list[dict]:
    """One row per training frame: its id, the pose net's parallax and the auto-mask's dropped share."""
    config = load_config(str(run_dir / "config.yaml"), [f"data.root={data}", "data.num_workers=0"])
    nets = _pretrain_networks(config, run_dir, torch.device("cpu"))
    dataset = build_dataset(config.data, "train", augment=False, seed=config.train.seed)
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples):
        _, target, _, sources, K, _ = nets.unpack(batch)
        poses = predict_poses(nets.pose, target, sources)
        depth = nets.scaled(nets.single(target), K)["depth"][0]
        parallax = geometry.translation_parallax(depth, poses[-1], K)
        kept = losses.automask_of(target, sources, depth, poses, K, config.loss.ssim_weight)
        dropped = (~kept).float().flatten(1).mean(dim=1)
        for i, sample_id in enumerate(batch["id"]):
            rows.append({"id": sample_id, "parallax_px": float(parallax[i]), "automask_dropped": float(dropped[i])})
    return rows


def true_travel(data: Path, rows: list[dict]) -> None:
    """Add each row's distance (metres) from the previous frame's camera, from the world's true poses."""
    cache: dict[str, np.ndarray] = {}
    for row in rows:
        folder, frame = row["id"].split()[:2]
        if folder not in cache:
            cache[folder] = np.loadtxt(data / folder / "gt" / "poses.txt").reshape(-1, 3, 4)[:, :, 3]
        index = int(frame)
        row["travel_m"] = float(np.linalg.norm(cache[folder][index] - cache[folder][index - 1])) if index else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory whose pretrain stage has finished")
    parser.add_argument("--data", required=True, help="the synthetic world the run trained on")
    parser.add_argument("--name", required=True, help="results are written as standing_camera_<name>.*")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir, data = Path(args.run_dir), Path(args.data)
    rows = detectors(run_dir, data)
    true_travel(data, rows)
    rows = [r for r in rows if r["travel_m"] is not None]
    standing = [r for r in rows if r["travel_m"] < STANDING_METRES]
    moving = [r for r in rows if r["travel_m"] >= STANDING_METRES]
    summary = {}
    for key in ("parallax_px", "automask_dropped"):
        summary[key] = {group: {"frames": len(members), "min": min(r[key] for r in members),
                                "median": float(np.median([r[key] for r in members])),
                                "max": max(r[key] for r in members)}
                        for group, members in (("standing", standing), ("moving", moving)) if members}
    payload = {"run_dir": str(run_dir), "summary": summary, "frames": rows,
               "command": "python benchmarks/standing_camera.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"standing_camera_{args.name}.json").write_text(json.dumps(payload, indent=2))

    lines = [f"# Standing camera: {args.name}", "",
             f"Pretrain networks of `{run_dir}` on {len(rows)} training frames; standing = under "
             f"{100 * STANDING_METRES:.0f} cm from the previous frame (true poses).", "", "| detector | frames | standing: min / median / max | moving: min / median / max |",
             "|---|---|---|---|"]
    for key, label in (("parallax_px", "pose net's parallax (px)"), ("automask_dropped", "auto-mask's dropped share")):
        s = summary[key]
        cells = [f"{s[g]['min']:.3f} / {s[g]['median']:.3f} / {s[g]['max']:.3f}" if g in s else "-"
                 for g in ("standing", "moving")]
        lines.append(f"| {label} | {len(standing)} / {len(moving)} | {cells[0]} | {cells[1]} |")
    lines += ["", "Moving frames the auto-mask would take for standing (dropped share >= 0.9):", ""]
    lines += [f"- {r['id']}: travel {r['travel_m']:.3f} m, dropped {r['automask_dropped']:.3f}, parallax "
              f"{r['parallax_px']:.2f} px" for r in moving if r["automask_dropped"] >= 0.9] or ["- none"]
    lines += ["", f"Command: `{payload['command']}`"]
    (RESULTS / f"standing_camera_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
