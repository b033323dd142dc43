"""Does the two-way mask find more of the moving objects when its match is finer than M0's 1/4 grid?

The masks stage's two-way source (``masks.depth_source=two_way_match``) takes M0's lowest-cost depths,
whose image cost is averaged over 4x4 cells: 16x48 cells at 64x192, where a pedestrian is under one cell
and a car two or three, and the flags come back as 4x4 blocks. This script recomputes that match from the
frames themselves (the same image cost, the same hypotheses, the pose net's poses) with other windows, and
applies the demo's rule to each (two-way D_o, then :func:`mfdepth.masks.compute_dynamic_mask` with the
run's mask settings, flags before dilation), on every training frame of a run's pretrain networks:

* ``block N``: the cost averaged over N x N cells (``block 4`` is the masks stage's own match);
* ``window N``: the cost averaged over a sliding N x N window at every pixel (no blocks).

Reports IoU, precision and recall against the true motion, pooled over pixels, and the share of the moving
pixels of each object role that is flagged.

    python benchmarks/mask_match_window.py RUN_DIR --data /tmp/world --name NAME [KEY=VALUE ...]

Writes ``benchmarks/results/mask_match_window_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfdepth import losses  # noqa: E402
from mfdepth import masks as mask_rules  # noqa: E402
from mfdepth.config import load_config  # noqa: E402
from mfdepth.data import build_dataset  # noqa: E402
from mfdepth.data.base import collate_samples  # noqa: E402
from mfdepth.evaluation.metrics import MaskQualityAccumulator  # noqa: E402
from mfdepth.models.cost_volume import (  # noqa: E402
    build_cost_volume,
    finish_cost_volume,
    match_sharpness,
    pooled_cost_volume,
)
from mfdepth.run_layout import config_path  # noqa: E402
from mfdepth.training.recipe import _pretrain_networks  # noqa: E402
from mfdepth.training.stages import predict_poses  # noqa: E402
from moving_objects import instance_map, instance_roles  # noqa: E402
from pretrain_bench import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_variant(text: str) -> tuple[str, int, float, float]:
    kind, size, *extra = text.split(":")
    if kind not in ("block", "window") or int(size) < 1 or len(extra) not in (0, 2):
        raise argparse.ArgumentTypeError(
            f"variant {text!r}: expected block:N or window:N (N >= 1), optionally :RATIO:SHARPNESS")
    ratio, sharpness = (float(extra[0]), float(extra[1])) if extra else (0.0, 0.0)
    return kind, int(size), ratio, sharpness


def variant_name(variant: tuple[str, int, float, float]) -> str:
    kind, size, ratio, sharpness = variant
    name = f"{kind} {size}"
    return name + (f" + disagree > {ratio:g}x, sharpness >= {sharpness:g}" if ratio else "")


def windowed_match(target: torch.Tensor, source: torch.Tensor, pose: torch.Tensor, K: torch.Tensor,
                   depths: torch.Tensor, kind: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest-cost depth and its match sharpness, each ``(B, 1, H, W)``, of the image cost aggregated by
    ``kind`` over ``size`` pixels."""
    if kind == "block":  # the masks stage's own aggregation (its 4x4 cells)
        cost, keep = pooled_cost_volume(target, source, pose, K, depths, size)
    else:  # the same mean over valid pixels, in a window centred on every pixel
        cost, valid = build_cost_volume(target, source, pose, K, depths)
        valid = valid.to(cost.dtype)
        pad, height, width = size // 2, *target.shape[-2:]
        fraction = F.avg_pool2d(valid, size, stride=1, padding=pad, count_include_pad=False)[..., :height, :width]
        total = F.avg_pool2d(cost * valid, size, stride=1, padding=pad, count_include_pad=False)[..., :height, :width]
        keep = fraction >= 0.5
        cost = total / fraction.clamp(min=1e-6) * keep
    filled, depth, reliable = finish_cost_volume(cost, keep, depths)
    sharpness = match_sharpness(filled, reliable)
    size = tuple(target.shape[-2:])
    return F.interpolate(depth, size=size, mode="nearest"), F.interpolate(sharpness, size=size, mode="nearest")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with checkpoints/pretrain.ckpt")
    parser.add_argument("--data", required=True, help="the synthetic world the run trained on")
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", type=parse_variant, action="append", default=None,
                        help="block:N or window:N (repeatable; default block:4 block:2 window:3 window:5 window:7)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", help="config overrides for the mask rule, e.g. masks.min_blob_area=40")
    args = parser.parse_args(argv)
    variants = args.variant or [parse_variant(v) for v in ("block:4", "block:2", "window:3", "window:5", "window:7")]
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    config = load_config(config_path(args.run_dir), [f"data.root={root}", f"run_dir={args.run_dir}", *args.overrides])
    nets = _pretrain_networks(config, args.run_dir, torch.device("cpu"))
    dataset = build_dataset(config.data, "train", augment=False, seed=config.train.seed)
    loader = DataLoader(dataset, batch_size=config.train.batch_size, collate_fn=collate_samples)
    settings = {**mask_rules.rule_settings(config.masks), "dilation": 0}
    ssim = config.loss.ssim_weight
    quality = {v: MaskQualityAccumulator() for v in variants}
    by_role: dict = {v: defaultdict(lambda: [0, 0]) for v in variants}
    agreement = []  # block 4 recomputed here against the network's own lowest-cost depth
    roles_cache: dict = {}
    with torch.no_grad():
        for batch in loader:
            _, target, _, sources, K, _ = nets.unpack(batch)
            poses = predict_poses(nets.pose, target, sources)
            single_out = nets.single(target)
            multi_out = nets.multi(target, sources[-1], poses[-1], K)
            depth_multi = nets.scaled(multi_out, K)["depth"][0]
            depth_single = nets.scaled(single_out, K)["depth"][0]
            kept = losses.automask_of(target, sources, depth_single, poses, K, ssim)
            depths = nets.multi.depth_bins(target.shape[0])
            fine_K = K[:, :3, :3]
            standing = mask_rules.standing_camera(kept, settings["standing_camera_fraction"])
            truths = [m[0].numpy() > 0.5 for m in batch["motion_mask"]]
            instances = [instance_map(root, sample_id, truths[0].shape) for sample_id in batch["id"]]
            rule_flags = {}  # (kind, size) -> (matches, their sharpness, the rule's flags): shared by variants
            for variant in variants:
                kind, size, ratio, least_sharpness = variant
                if (kind, size) not in rule_flags:
                    pairs = [windowed_match(target, sources[o], poses[o], fine_K, depths, kind, size) for o in (-1, 1)]
                    matches = [depth for depth, _ in pairs]
                    if (kind, size) == ("block", 4):
                        own = F.interpolate(multi_out["cost_volume_depth"], size=matches[0].shape[-2:], mode="nearest")
                        agreement.append(float((own == matches[0]).float().mean()))
                    matched = mask_rules.two_way_match_depth(multi_out["depth"][0], single_out["depth"][0], *matches,
                                                             target, sources, poses, K, ssim)
                    d_o = matched * depth_multi / multi_out["depth"][0]
                    rule_flags[kind, size] = (matches, torch.minimum(*[s for _, s in pairs]),
                                              mask_rules.compute_dynamic_mask(d_o, depth_single, K, **settings,
                                                                              automask_kept=kept))
                matches, sharpness, flagged = rule_flags[kind, size]
                if ratio:
                    # Matches that contradict each other, where both are sharp (textureless pixels match anywhere)
                    extra = (torch.maximum(*matches) > ratio * torch.minimum(*matches)) & (sharpness >= least_sharpness)
                    extra &= ~standing.view(-1, 1, 1, 1)
                    flagged = mask_rules.remove_small_blobs(flagged.bool() | extra, settings["min_blob_area"])
                for i, sample_id in enumerate(batch["id"]):
                    true, instance = truths[i], instances[i]
                    predicted = flagged[i, 0].numpy() > 0
                    quality[variant].update(predicted, true)
                    for ident, role in instance_roles(root, sample_id.split()[0], roles_cache).items():
                        pixels = (instance == ident) & true
                        counts = by_role[variant][role]
                        counts[0] += int(pixels.sum())
                        counts[1] += int((pixels & predicted).sum())
    rows = {}
    roles = sorted({r for v in variants for r in by_role[v]})
    for variant in variants:
        scores = quality[variant].compute()
        rows[variant_name(variant)] = {
            "iou": scores["iou"], "precision": scores["precision"], "recall": scores["recall"],
            "flagged share of each role's moving pixels": {
                r: by_role[variant][r][1] / max(by_role[variant][r][0], 1) for r in roles},
        }
    command = "python benchmarks/mask_match_window.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"run_dir": str(args.run_dir), "frames": len(dataset), "rule": settings, "variants": rows,
               "block 4 equals the network's own match on": float(np.mean(agreement)) if agreement else None,
               "command": command}
    lines = [f"# The two-way mask's match window: {args.name}", "",
             f"Pretrain networks of `{args.run_dir}`, {len(dataset)} training frames at the network's resolution; "
             "the rule's flags before dilation, pooled over pixels.", "",
             "| match | IoU | precision | recall | " + " | ".join(roles) + " |",
             "|---|---|---|---|" + "---|" * len(roles)]
    for name, row in rows.items():
        shares = row["flagged share of each role's moving pixels"]
        lines.append(f"| {name} | {row['iou']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | "
                     + " | ".join(f"{shares[r]:.2f}" for r in roles) + " |")
    if agreement:
        lines += ["", f"`block 4` recomputed here equals M0's own lowest-cost depth on {np.mean(agreement):.1%} of the pixels."]
    write_results(args.out, f"mask_match_window_{args.name}", payload, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
