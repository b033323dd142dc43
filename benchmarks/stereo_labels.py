"""How good are the plane-sweep depth labels of ``train.stereo_prior_steps``, before any learning?

For every sample of the synthetic world's training split, :func:`mfdepth.training.stereo_prior.stereo_depth_labels`
matches the target against its previous and next frames at the training resolution, with the
two-view pose prior's rotation and direction (SIFT + RANSAC, ``mfdepth.data.two_view``; ``--true-pose``
also with the world's true rotation and direction). A label is in units of the previous frame's
translation length; times the true length it is metres, and is scored against the true depth (nearest
1/4-grid sample): the fraction of cells labelled, AbsRel, median relative error, d<1.25 and the share of
gross errors (off by more than 2x), for a grid of the two filter settings (agreement between the
two matches, fraction of the sharpest kept).

    python benchmarks/stereo_labels.py --data /tmp/world

``--oracle-cache RUN/stereo_prior.npz ...`` also writes the default labels with every cell that touches a
truly moving pixel removed, as a run directory's label cache (training then reads it instead of
computing its own): an experiment that isolates what the labels on moving objects do.

Writes ``benchmarks/results/stereo_labels.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import mfdepth.training.stereo_prior as stereo
from mfdepth.config import load_config
from mfdepth.data import build_dataset
from mfdepth.data.two_view import load_or_compute_pose_priors
from mfdepth.evaluation.poses import read_poses
from mfdepth.synth import ensure_world
from pretrain_bench import scratch_folder

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ((0.1, 0.5, None), (0.2, 0.5, None), (0.2, 1.0, None), (0.2, 0.5, 0.0), (0.2, 0.5, 0.25))
"""(agreement, keep_sharpest, identity_margin) triples; the library's default is (0.2, 0.5, None)."""


def true_relative(root: Path, sample_id: str, offset: int) -> np.ndarray:
    folder, frame = sample_id.split()[:2]
    poses = read_poses(root / folder / "gt" / "poses.txt")
    return np.linalg.inv(poses[int(frame) + offset]) @ poses[int(frame)]


def true_depth(root: Path, sample_id: str, shape) -> torch.Tensor:
    """``shape`` ``(h, w)`` true depth of a sample's target frame (nearest sample), metres."""
    folder, frame = sample_id.split()[:2]
    truth = torch.from_numpy(np.load(root / folder / "gt" / "depth" / f"{int(frame):010d}.npy")).float()
    return F.interpolate(truth[None, None], size=tuple(shape), mode="nearest")[0, 0]


def motion_cells(root: Path, sample_id: str, shape) -> torch.Tensor:
    """``shape`` ``(h, w)`` bool: the cells of a sample's target frame that touch a truly moving pixel."""
    folder, frame = sample_id.split()[:2]
    motion = np.asarray(Image.open(root / folder / "gt" / "dynamic" / f"{int(frame):010d}.png")) > 0
    motion = torch.from_numpy(motion.astype(np.float32))[None, None]
    return F.interpolate(motion, size=tuple(shape), mode="area")[0, 0] > 0


def true_pose_table(root: Path, dataset, prior: dict) -> dict:
    """The prior's table with the true rotations and unit-length true directions, every pair valid."""
    poses = prior["poses"].copy()
    for row, sample_id in enumerate(dataset.sample_ids):
        for column, offset in enumerate(prior["offsets"]):
            T = true_relative(root, sample_id, int(offset))
            T[:3, 3] /= max(np.linalg.norm(T[:3, 3]), 1e-9)
            poses[row, column] = T
    return {**prior, "poses": poses.astype(np.float32), "valid": np.ones_like(prior["valid"])}


def score(root: Path, dataset, labels: np.ndarray) -> dict:
    errors, ratios, labelled, moving = [], [], [], []
    for index, sample_id in enumerate(dataset.sample_ids):
        folder, frame = sample_id.split()[:2]
        length = np.linalg.norm(true_relative(root, sample_id, -1)[:3, 3])
        truth = true_depth(root, sample_id, labels.shape[-2:])
        metres = torch.from_numpy(labels[index, 0]) * length
        usable = (metres > 0) & (truth > 1e-3) & (truth < 80.0)
        motion = np.asarray(Image.open(root / folder / "gt" / "dynamic" / f"{int(frame):010d}.png")) > 0
        motion = torch.from_numpy(motion.astype(np.float32))[None, None]
        moving.append((F.interpolate(motion, size=labels.shape[-2:], mode="area")[0, 0] > 0.5)[usable])
        labelled.append(float(usable.float().sum() / ((truth > 1e-3) & (truth < 80.0)).float().sum()))
        errors.append(((metres - truth).abs() / truth)[usable])
        ratios.append(torch.maximum(metres / truth, truth / metres)[usable])
    error, ratio, on_moving = torch.cat(errors), torch.cat(ratios), torch.cat(moving)
    return {"labelled": float(np.mean(labelled)), "abs_rel": float(error.mean()), "median_rel": float(error.median()),
            "a1": float((ratio < 1.25).float().mean()), "gross": float((ratio > 2.0).float().mean()),
            "on_moving": float(on_moving.float().mean()),
            "abs_rel_static": float(error[~on_moving].mean()),
            "abs_rel_moving": float(error[on_moving].mean()) if on_moving.any() else float("nan")}


def write_oracle_caches(root: Path, dataset, table: dict, paths: list[str]) -> None:
    depth = table["depth"].copy()
    for index, sample_id in enumerate(dataset.sample_ids):
        depth[index, 0][motion_cells(root, sample_id, depth.shape[-2:]).numpy()] = 0.0
    print(f"oracle labels: {(depth > 0).mean():.3f} of the cells labelled ({(table['depth'] > 0).mean():.3f} before)")
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{**table, "depth": depth})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--true-pose", action="store_true", help="also label with the true rotation and direction")
    parser.add_argument("--oracle-cache", nargs="*", default=[], metavar="NPZ",
                        help="write the default labels without the truly moving cells to these cache paths")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(None, [f"data.root={args.data}", *args.overrides])
    ensure_world(config.data.root, preset=config.data.synth_preset, progress=False)
    root = Path(config.data.root)
    dataset = build_dataset(config.data, "train", augment=False)
    prior = load_or_compute_pose_priors(dataset, scratch_folder("mfdepth_stereo_") / "pose_prior.npz")
    if args.oracle_cache:  # only the caches; the table of settings stays as it is
        write_oracle_caches(root, dataset, stereo.stereo_prior_table(dataset, prior), args.oracle_cache)
        return 0
    tables = {"two-view prior (SIFT + RANSAC)": prior}
    if args.true_pose:
        tables["true rotation and direction"] = true_pose_table(root, dataset, prior)
    rows = []
    default = stereo.stereo_depth_labels
    for pose_name, table in tables.items():
        for agreement, keep, margin in SETTINGS:
            stereo.stereo_depth_labels = functools.partial(default, agreement=agreement, keep_sharpest=keep)
            began = time.perf_counter()
            labels = stereo.stereo_prior_table(dataset, table, identity_margin=margin)["depth"]
            seconds = time.perf_counter() - began
            rows.append({"pose": pose_name, "agreement": agreement, "keep_sharpest": keep,
                         "identity_margin": margin, "seconds": seconds,
                         **score(root, dataset, labels)})
            print(rows[-1], flush=True)
    stereo.stereo_depth_labels = default
    payload = {"rows": rows, "samples": len(dataset), "height": config.data.height, "width": config.data.width,
               "command": "python benchmarks/stereo_labels.py " + " ".join(argv)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stereo_labels.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# Plane-sweep depth labels against the truth (training split, before any learning)", "",
        f"{len(dataset)} training samples at {config.data.height}x{config.data.width}, labels on the 1/4 grid; "
        "metres = label x the true translation length. Default filter: agreement 0.2, sharpest half.", "",
        "| pose | agreement | kept (sharpest) | identity margin | cells labelled | AbsRel (static / moving) | "
        "median rel. error | d<1.25 | off > 2x | labels on moving objects | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['pose']} | {r['agreement']:.0%} | {r['keep_sharpest']:.0%} | "
          f"{'-' if r['identity_margin'] is None else r['identity_margin']} | {r['labelled']:.3f} | "
          f"{r['abs_rel']:.3f} ({r['abs_rel_static']:.3f} / {r['abs_rel_moving']:.3f}) | {r['median_rel']:.3f} | "
          f"{r['a1']:.2f} | {r['gross']:.3f} | {r['on_moving']:.3f} | {r['seconds']:.0f} |" for r in rows],
        "", f"Command: `{payload['command']}`", "",
    ]
    (RESULTS / "stereo_labels.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
