"""Where a trained checkpoint's depth error comes from, on the synthetic world.

Two questions the convergence benchmark does not answer:

* Over-fitting or under-fitting? AbsRel of the checkpoint's networks on frames of the *training*
  sequences against the held-out validation and test sequences (every training frame has ground truth
  in the synthetic world). Equal errors mean the recipe is limited by optimisation, not by data.
* Which pixels? The multi-frame (else single-frame) net's test-split AbsRel by true-depth band and by
  band of image rows, each band's share of the total error and its median predicted / true ratio
  (after per-image median scaling, predictions resized to the ground truth's size as the protocol does).

    python benchmarks/error_sources.py RUN/checkpoints/student.ckpt --data /tmp/world --name NAME

Writes ``benchmarks/results/error_sources_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfdepth.checkpoint import load_checkpoint, restore_networks
from mfdepth.config import load_config
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.protocols import evaluate_depth_maps
from mfdepth.training.stages import PretrainStage, StudentStage, TeacherStage

RESULTS = Path(__file__).resolve().parent / "results"
DEPTH_BANDS = ((0, 5), (5, 10), (10, 20), (20, 40), (40, 80))
MAX_FRAMES = 40


def load_networks(path: str, config) -> dict:
    state = load_checkpoint(path)
    stage = {"pretrain": PretrainStage, "teacher": TeacherStage, "student": StudentStage}[state["stage"]](config)
    restore_networks(state, stage.saved_networks(), path)
    nets = stage.saved_networks()
    for net in nets.values():
        net.eval()
    return nets


@torch.no_grad()
def predict(nets: dict, batch: dict, lowest_cost: bool = False) -> dict[str, torch.Tensor]:
    """Depth ``(N, 1, h, w)`` of the single-frame and (if present) multi-frame net for a collated batch;
    with ``lowest_cost``, also the multi-frame net's lowest-cost depth (``(N, 1, h/4, w/4)``)."""
    offsets = [int(o) for o in batch["offsets"][0]]
    target, previous, K = batch["frames"][:, 0], batch["frames"][:, offsets.index(-1)], batch["K"][:, 0]
    T = nets["pose"](target, previous, source_is_before=True)
    out = {}
    single = nets.get("single") or nets.get("teacher")
    if single is not None:
        out["single"] = torch.cat([single(target[i:i + 8])["depth"][0] for i in range(0, len(target), 8)])
    if "multi" in nets:
        multi = [nets["multi"](target[i:i + 8], previous[i:i + 8], T[i:i + 8], K[i:i + 8])
                 for i in range(0, len(target), 8)]
        out["multi"] = torch.cat([m["depth"][0] for m in multi])
        if lowest_cost:
            out["lowest_cost"] = torch.cat([m["cost_volume_depth"] for m in multi])
    return out


def subset_batch(config, subset: str) -> dict:
    dataset = build_dataset(config.data, subset, augment=False)
    indices = np.linspace(0, len(dataset) - 1, min(MAX_FRAMES, len(dataset))).round().astype(int)
    return collate_samples([dataset[int(i)] for i in indices])


def band_table(depth: torch.Tensor, gts: np.ndarray) -> dict:
    """AbsRel, share of the error and median ratio per true-depth band and per eighth of the image rows."""
    pred = F.interpolate(depth, size=gts.shape[1:], mode="bilinear", align_corners=False)[:, 0].numpy()
    valid = (gts > 1e-3) & (gts < 80.0)
    for i in range(len(gts)):
        pred[i] *= np.median(gts[i][valid[i]]) / np.median(pred[i][valid[i]])
    rel = np.where(valid, np.abs(pred - gts) / np.maximum(gts, 1e-3), 0.0)
    total = rel.sum()

    def row(mask) -> dict:
        count = int(mask.sum())
        return {"pixels": count / valid.sum(), "abs_rel": float(rel[mask].mean()) if count else None,
                "error_share": float(rel[mask].sum() / total),
                "median_ratio": float(np.median(pred[mask] / gts[mask])) if count else None}

    bands = {f"{lo}-{hi} m": row(valid & (gts >= lo) & (gts < hi)) for lo, hi in DEPTH_BANDS}
    height = gts.shape[1]
    rows = {}
    for start in range(0, height, height // 8):
        mask = valid.copy()
        mask[:, :start] = False
        mask[:, start + height // 8:] = False
        rows[f"rows {start}-{start + height // 8}"] = row(mask)
    return {"abs_rel": float(rel[valid].mean()), "depth_bands": bands, "row_bands": rows}


def checkpoint_benchmark(description: str, argv: list[str]):
    """``(args, config, nets)`` of a script run as ``SCRIPT CHECKPOINT --data ROOT --name NAME [KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--name", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(None, [f"data.root={args.data}", *args.overrides])
    return args, config, load_networks(args.checkpoint, config)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, config, nets = checkpoint_benchmark(__doc__.split("\n\n")[0], argv)

    subsets = {}
    for subset in ("train", "val", "test"):
        batch = subset_batch(config, subset)
        gts = [g[0].numpy() for g in batch["depth_gt"]]
        depths = predict(nets, batch)
        subsets[subset] = {"frames": len(gts), **{
            name: evaluate_depth_maps([d[0].numpy() for d in depth], gts, max_depth=80.0).metrics["all"]["abs_rel"]
            for name, depth in depths.items()}}
        if subset == "test":
            network = "multi" if "multi" in depths else "single"
            breakdown = band_table(depths[network], np.stack(gts))

    payload = {"checkpoint": args.checkpoint, "subsets": subsets, "test_breakdown": breakdown,
               "network_broken_down": network,
               "command": "python benchmarks/error_sources.py " + " ".join(argv)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"error_sources_{args.name}.json").write_text(json.dumps(payload, indent=2))
    nets_seen = [k for k in ("single", "multi") if k in subsets["test"]]
    lines = [f"# Error sources: {args.name}", "", f"Checkpoint `{args.checkpoint}`; AbsRel, per-image median scaling.", "",
             "| frames of | frames | " + " | ".join(nets_seen) + " |", "|---|---|" + "---|" * len(nets_seen)]
    lines += [f"| {s} | {v['frames']} | " + " | ".join(f"{v[n]:.3f}" for n in nets_seen) + " |"
              for s, v in subsets.items()]
    lines += ["", f"Test split, {network} net (AbsRel {breakdown['abs_rel']:.3f}):", "",
              "| pixels | share of pixels | AbsRel | share of the error | median predicted / true |", "|---|---|---|---|---|"]
    for group in ("depth_bands", "row_bands"):
        for label, r in breakdown[group].items():
            if r["abs_rel"] is not None:
                lines.append(f"| {label} | {r['pixels']:.2f} | {r['abs_rel']:.3f} | {r['error_share']:.2f} | "
                             f"{r['median_ratio']:.2f} |")
    lines += ["", f"Command: `{payload['command']}`", ""]
    (RESULTS / f"error_sources_{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
