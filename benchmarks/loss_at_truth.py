"""Is the true depth a minimum of the training objective? The photometric loss of candidate depths.

The self-supervised loss is only as good as its minimum: if the world's true depth and poses explain the
frames worse than a learned, wrong depth does, more training moves the nets away from the truth. For
training samples of the synthetic world this scores the scale-0 photometric term of the training loss
(per-pixel minimum over the previous and next frames, Monodepth2's auto-mask, the truly moving pixels
excluded) for:

* the true depth with the true poses, and the same depth scaled by 0.5 and 2 (a scale error with the
  pose held: the loss must rise), and smoothed (a 9x9 box: the loss must rise);
* each given checkpoint's single-frame net with its own pose net, and its depth median-aligned to the
  truth with the true poses (its shape alone).

Per candidate: the mean loss, its AbsRel against the truth (median-scaled, static pixels), and the share
of pixels where it beats the truth. Per checkpoint: whether its depth and its pose net's translation share
one scale (their ratio against the truth's, overall and per training sequence), and its own-pose loss
with the depth times k (a false minimum shows as a lower loss away from k = 1). For the last candidate:
where (true-depth band, image-row band) the truth loses to it.

    python benchmarks/loss_at_truth.py --data /tmp/world --name NAME RUN/checkpoints/pretrain.ckpt [MORE.ckpt]

Writes ``benchmarks/results/loss_at_truth_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from error_sources import load_networks
from mfdepth.config import load_config
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.losses import compute_automask, min_over_sources, min_reprojection_error, photometric_error
from stereo_labels import motion_cells, true_depth, true_relative

RESULTS = Path(__file__).resolve().parent / "results"
SKY_DEPTH = 80.0  # metres given to pixels without depth (sky), as the world's renderer caps depth
DEPTH_BANDS = ((0, 5), (5, 10), (10, 20), (20, 40), (40, 81))
SCALE_SCAN = (0.25, 0.5, 1, 2, 4, 8)


def sample_batch(config, count: int) -> dict:
    dataset = build_dataset(config.data, "train", augment=False)
    indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return collate_samples([dataset[int(i)] for i in indices])


def truths(root: Path, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(depth (N,1,H,W) metres, moving (N,1,H,W) bool, [T_source_target (N,4,4) per source])``."""
    size = batch["frames"].shape[-2:]
    depth = torch.stack([true_depth(root, i, size) for i in batch["id"]])[:, None]
    depth = torch.where(depth > 1e-3, depth.clamp(max=SKY_DEPTH), torch.full_like(depth, SKY_DEPTH))
    moving = torch.stack([motion_cells(root, i, size) for i in batch["id"]])[:, None]
    offsets = [int(o) for o in batch["offsets"][0]][1:]
    poses = [torch.from_numpy(np.stack([true_relative(root, i, o) for i in batch["id"]])).float() for o in offsets]
    return depth, moving, poses


def per_pixel_loss(batch: dict, depth: torch.Tensor, poses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reprojection error, auto-mask keep)`` ``(N,1,H,W)`` at scale 0, as the training loss computes them."""
    frames, K = batch["frames"], batch["K"][:, 0]
    target, sources = frames[:, 0], [frames[:, s] for s in range(1, frames.shape[1])]
    reprojection, _ = min_reprojection_error(target, sources, depth, poses, K)
    identity = min_over_sources([photometric_error(s, target) for s in sources])[0]
    return reprojection, compute_automask(reprojection, identity)


@torch.no_grad()
def network_candidate(nets: dict, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    frames = batch["frames"]
    offsets = [int(o) for o in batch["offsets"][0]]
    single = nets.get("teacher") or nets.get("single")
    depth = torch.cat([single(frames[i:i + 8, 0])["depth"][0] for i in range(0, len(frames), 8)])
    depth = F.interpolate(depth, size=frames.shape[-2:], mode="bilinear", align_corners=False)
    poses = [nets["pose"](frames[:, 0], frames[:, s], source_is_before=offsets[s] < 0) for s in range(1, len(offsets))]
    return depth.float(), [p.float() for p in poses]


def median_aligned(depth: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    ratio = truth.flatten(1).median(dim=1).values / depth.flatten(1).median(dim=1).values
    return depth * ratio[:, None, None, None]


def abs_rel(depth: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor) -> float:
    aligned = median_aligned(depth, truth)
    return float(((aligned - truth).abs() / truth)[keep].mean())


def scale_consistency(batch, depth, poses, truth, true_poses, static) -> dict:
    """Do the net's depth and its pose net's translation share one scale? Per sample and source, the ratio
    ``(|t| / |t_true|) / (median D / median D_true)`` (1 = consistent: the warp moves pixels as the truth
    does), and the own-pose loss with the depth times k (k = 1 is the minimum when they agree)."""
    depth_scale = depth.flatten(1).median(dim=1).values / truth.flatten(1).median(dim=1).values
    ratios = []
    for pose, true in zip(poses, true_poses):
        moved = true[:, :3, 3].norm(dim=1) > 0.05  # a stopped camera has no translation scale
        ratios.append((pose[:, :3, 3].norm(dim=1) / true[:, :3, 3].norm(dim=1).clamp(min=1e-9) / depth_scale)[moved])
    ratio = torch.cat(ratios).numpy()
    scan = {}
    for k in SCALE_SCAN:
        loss, keep = per_pixel_loss(batch, depth * k, poses)
        scan[str(k)] = {"loss": float(loss[keep & static].mean()), "kept": float((keep & static).float().mean())}
    q10, q50, q90 = np.percentile(ratio, [10, 50, 90])
    # Per sequence (the previous frame): a pose net blind to the speed predicts one length for all.
    sequences = [sample_id.split()[0] for sample_id in batch["id"]]
    per_sequence = {}
    for sequence in sorted(set(sequences)):
        rows = torch.tensor([s == sequence for s in sequences])
        true_length = true_poses[0][rows, :3, 3].norm(dim=1)
        length = poses[0][rows, :3, 3].norm(dim=1)
        per_sequence[sequence] = {
            "samples": int(rows.sum()), "true_length_m": float(true_length.mean()), "length": float(length.mean()),
            "ratio_median": float((length / true_length.clamp(min=1e-9) / depth_scale[rows]).median())}
    return {"ratio_median": float(q50), "ratio_q10": float(q10), "ratio_q90": float(q90), "depth_times_k": scan,
            "per_sequence": per_sequence}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--name", required=True)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(None, [f"data.root={args.data}", "train.precision=32"])
    root = Path(config.data.root)
    batch = sample_batch(config, args.samples)
    truth, moving, true_poses = truths(root, batch)
    static = ~moving

    consistency: dict[str, dict] = {}
    candidates: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {
        "true depth, true poses": (truth, true_poses),
        "true depth x 0.5, true poses": (truth * 0.5, true_poses),
        "true depth x 2, true poses": (truth * 2.0, true_poses),
        "true depth smoothed (9x9 box), true poses": (F.avg_pool2d(truth, 9, 1, 4, count_include_pad=False), true_poses),
    }
    for path in args.checkpoints:
        nets = load_networks(path, config)
        depth, poses = network_candidate(nets, batch)
        label = Path(path).parent.parent.parent.name + "/" + Path(path).parent.parent.name + "/" + Path(path).stem
        candidates[f"{label}, own poses"] = (depth, poses)
        consistency[label] = scale_consistency(batch, depth, poses, truth, true_poses, static)
        candidates[f"{label} median-aligned, true poses"] = (median_aligned(depth, truth), true_poses)

    reference, reference_keep = per_pixel_loss(batch, truth, true_poses)
    rows, last_loss = {}, None
    for label, (depth, poses) in candidates.items():
        loss, keep = per_pixel_loss(batch, depth, poses)
        counted = keep & static
        both = counted & reference_keep
        rows[label] = {
            "loss": float(loss[counted].mean()),
            "kept": float(counted.float().mean()),
            "loss_where_truth_also_kept": float(loss[both].mean()),
            "truth_loss_there": float(reference[both].mean()),
            "beats_truth": float((loss[both] < reference[both]).float().mean()),
            "abs_rel_static": abs_rel(depth, truth, static),
        }
        last_loss, last_keep = loss, keep
        print(label, rows[label], flush=True)

    # Where the last candidate beats the truth: its per-pixel margin by true-depth band and row band.
    both = last_keep & reference_keep & static
    gain = (reference - last_loss).clamp(min=0)
    where = {}
    for lo, hi in DEPTH_BANDS:
        band = both & (truth >= lo) & (truth < hi)
        where[f"true depth {lo}-{hi} m"] = _band_row(band, both, gain, last_loss, reference)
    height = truth.shape[-2]
    for start in range(0, height, height // 4):
        band = both.clone()
        band[..., :start, :] = False
        band[..., start + height // 4:, :] = False
        where[f"rows {start}-{start + height // 4}"] = _band_row(band, both, gain, last_loss, reference)

    payload = {"checkpoints": args.checkpoints, "samples": len(batch["id"]), "rows": rows, "scale_consistency": consistency, "where_last_beats_truth": where,
               "command": "python benchmarks/loss_at_truth.py " + " ".join(argv)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"loss_at_truth_{args.name}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# The training objective at the truth: {args.name}", "",
             f"{payload['samples']} training samples; scale-0 photometric error (min over the previous and next frame), "
             "auto-masked, truly moving pixels excluded. AbsRel: median-aligned, static pixels.", "",
             "| candidate | loss | pixels kept | loss where the truth is kept too | the truth's there | beats the truth on | AbsRel |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['loss']:.4f} | {v['kept']:.2f} | {v['loss_where_truth_also_kept']:.4f} | "
              f"{v['truth_loss_there']:.4f} | {v['beats_truth']:.2f} | {v['abs_rel_static']:.3f} |" for k, v in rows.items()]
    lines += ["", "Depth and pose scale: per sample and source, (|t| / |t_true|) / (median depth / median true depth), "
              "1 = consistent; and the own-pose loss with the depth times k:", "",
              "| checkpoint | ratio median | 10-90% | " + " | ".join(f"k={k}" for k in SCALE_SCAN) + " |",
              "|---|---|---|" + "---|" * len(SCALE_SCAN)]
    lines += [f"| {k} | {v['ratio_median']:.2f} | {v['ratio_q10']:.2f}-{v['ratio_q90']:.2f} | " + " | ".join(
        f"{v['depth_times_k'][str(s)]['loss']:.4f} ({v['depth_times_k'][str(s)]['kept']:.2f})" for s in SCALE_SCAN) + " |"
        for k, v in consistency.items()]
    lines += ["", "Per training sequence: the true length of the previous translation, the pose net's (its unit), "
              "and the depth / pose scale ratio:", "", "| checkpoint | sequence | samples | true length (m) | predicted length | ratio |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {sequence} | {r['samples']} | {r['true_length_m']:.2f} | {r['length']:.4f} | {r['ratio_median']:.2f} |"
              for k, v in consistency.items() for sequence, r in v["per_sequence"].items()]
    lines += ["", f"Where `{list(rows)[-1]}` beats the truth:", "",
              "| pixels | share | its loss | the truth's | share of its total gain over the truth |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['share']:.2f} | {v['loss']:.4f} | {v['truth_loss']:.4f} | {v['gain_share']:.2f} |"
              for k, v in where.items() if v["share"] > 0]
    lines += ["", f"Command: `{payload['command']}`", ""]
    (RESULTS / f"loss_at_truth_{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _band_row(band, both, gain, loss, reference) -> dict:
    count = int(band.sum())
    return {"share": count / max(int(both.sum()), 1),
            "loss": float(loss[band].mean()) if count else float("nan"),
            "truth_loss": float(reference[band].mean()) if count else float("nan"),
            "gain_share": float(gain[band].sum() / gain[both].sum().clamp(min=1e-12))}


if __name__ == "__main__":
    raise SystemExit(main())
