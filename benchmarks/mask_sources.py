"""Does a trained multi-frame net read its cost volume, and which depth makes the better mask?

Loads a pretrain checkpoint (S0, M0, pose) and, on the test split of the embedded world:

* **reliance**: how much M0's depth changes when its cost volume is zeroed (median |log ratio|, and
  the share of pixels changed by more than 10%): near 0 means M0 predicts from the image alone;
* the depth inconsistency mask (the config's rule) with D_r = S0 and D_o from three sources: M0's
  output (METHOD.md), M0's lowest-cost depth (the static-world match the rule is meant to expose),
  and M0's output with a zeroed cost volume (a control: it cannot see motion at all);
* the match sharpness, (median - lowest cost) / median of the full-resolution image cost, on moving
  and static pixels, and masks whose D_o is the lowest-cost depth where the match is sharp (else M0);
* M0's output and its lowest-cost depth under an upper-side-only rule (D_o > k D_r, k = 1.5, 2, 3);
* the same matched against the next frame too, and the nearer of the two depths (far only where both
  neighbours' matches are far: a car driving with the camera, not a one-sided false match);
* an oracle of METHOD.md's premise: D_o the true depth on static pixels and the static-world match on
  moving ones, against this S0 and against the true depth: what the rule gives if M0 over-fits as assumed;
* for each: IoU / precision / recall against the true motion, the share of pixels flagged, and the
  median D_o / D_r ratio on true moving and on static pixels (both ~1 when D_o carries no motion).

    python benchmarks/mask_sources.py RUN_DIR/checkpoints/pretrain.ckpt [--data data/synthetic]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.config import apply_overrides, config_from_dict
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.evaluation.metrics import MaskQualityAccumulator
from mfdepth.losses import min_reprojection_error
from mfdepth.masks import compute_dynamic_mask, cost_volume_inconsistency, median_ratio
from mfdepth.models.cost_volume import finish_cost_volume, pooled_cost_volume
from mfdepth.models.cost_volume import match_sharpness as cost_volume_match_sharpness
from mfdepth.models.factory import build_multi, build_pose, build_single
from mfdepth.training.checkpoint import load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def match_sharpness(multi, target, source, T, K):
    """``(B,1,h,w)`` how distinct the best hypothesis of the full-resolution image cost is:
    (median cost - lowest cost) / median cost over the hypotheses, 0 where the match is unreliable."""
    depths = multi.depth_bins(target.shape[0])
    cost, valid = pooled_cost_volume(target, source, T, K[:, :3, :3], depths, 4)
    filled, _, reliable = finish_cost_volume(cost, valid, depths)
    return cost_volume_match_sharpness(filled, reliable)


def batched(fn, n, size=8):
    return torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--name", default="mask_sources")
    parser.add_argument("--no-align-median", action="store_true",
                        help="compare D_o and D_r as they are, without the rule's per-image median alignment")
    parser.add_argument("overrides", nargs="*", help="config overrides for the rule, e.g. masks.ground_check=false")
    args = parser.parse_intermixed_args()
    checkpoint = load_checkpoint(args.checkpoint)
    meta = checkpoint["meta"]
    config = apply_overrides(config_from_dict(meta["config"]), [f"data.root={args.data}", *args.overrides])
    judge = ConvergenceJudge(config)
    single, pose = build_single(config), build_pose(config)
    multi = build_multi(config, msff=bool(meta.get("msff", False)), fine_matching=meta.get("fine_matching"),
                        cost_hint=bool(meta.get("cost_hint", False)))
    for net, key in ((single, "single"), (multi, "multi"), (pose, "pose")):
        net.load_state_dict(checkpoint["models"][key])
        net.eval()
    target, previous, K = judge.target, judge.previous, judge.K
    n = len(target)
    with torch.no_grad():
        T = pose(target, previous, source_is_before=True)
        d_single = batched(lambda s: single(target[s])["depth"][0], n)
        outputs = [multi(target[s], previous[s], T[s], K[s]) for s in (slice(i, i + 8) for i in range(0, n, 8))]
        d_multi = torch.cat([o["depth"][0] for o in outputs])
        d_cost = torch.cat([o["cost_volume_depth"] for o in outputs])
        d_cost = F.interpolate(d_cost, size=d_single.shape[-2:], mode="nearest")
        sharp = batched(lambda s: match_sharpness(multi, target[s], previous[s], T[s], K[s]), n)
        sharp = F.interpolate(sharp, size=d_single.shape[-2:], mode="nearest")
        zero = torch.ones(8, dtype=torch.bool)
        d_zeroed = batched(lambda s: multi(target[s], previous[s], T[s], K[s],
                                           zero_cost_volume=zero[: target[s].shape[0]])["depth"][0], n)
    change = (d_multi / d_zeroed).log().abs()
    reliance = {"median_abs_log_change": float(change.median()), "changed_over_10pct": float((change > 0.0953).float().mean())}
    moving = torch.stack([torch.as_tensor(m) for m in judge.motion])[:, None] > 0.5
    moving = F.interpolate(moving.float(), size=d_single.shape[-2:], mode="nearest").bool()
    mcfg = config.masks
    rows = {}
    sources = [("M0 output", d_multi), ("M0 lowest-cost depth", d_cost), ("M0, cost volume zeroed", d_zeroed)]
    for q in (0.5, 0.75, 0.9):
        level = float(sharp.flatten().quantile(q))
        sources.append((f"lowest-cost where sharpness > q{q:.2f} ({level:.3f}), else M0 output",
                        torch.where(sharp > level, d_cost, d_multi)))
    # An M0 that follows its match wherever the match explains the frames better than S0's depth does
    # (photometric error over both source frames), and keeps its own depth elsewhere: what M0 would be if
    # it followed its cost volume on moving objects as METHOD.md assumes, with this cost volume.
    with torch.no_grad():
        offsets = sorted(judge.sources)
        poses = {o: pose(target, judge.sources[o], source_is_before=o < 0) for o in offsets}
        def errors(depth):
            return batched(lambda s: min_reprojection_error(
                target[s], [judge.sources[o][s] for o in offsets], depth[s], [poses[o][s] for o in offsets],
                K[s], ssim_weight=config.loss.ssim_weight)[0], n)
        match_better = errors(d_cost) < errors(d_single)
        untrusted = cost_volume_inconsistency(d_cost, d_single, config.loss.consistency_low,
                                              config.loss.consistency_high)
    # The same nets matched against the next frame instead (its own pose): a car driving with the camera
    # looks far against either neighbour, while a static pixel's false far match need not repeat. The nearer
    # of the two depths is far only where both matches are.
    with torch.no_grad():
        following = judge.sources[1]
        next_outputs = [multi(target[s], following[s], poses[1][s], K[s])
                        for s in (slice(i, i + 8) for i in range(0, n, 8))]
        d_multi_next = torch.cat([o["depth"][0] for o in next_outputs])
        d_cost_next = F.interpolate(torch.cat([o["cost_volume_depth"] for o in next_outputs]),
                                    size=d_single.shape[-2:], mode="nearest")
        nearer_match = torch.minimum(d_cost, d_cost_next)
        nearer_match_better = errors(nearer_match) < errors(d_single)
        # Both sides: the nearer depth where both matches are farther than S0's, the farther where both are
        # nearer (an oncoming car matches too near against either neighbour), S0's depth where they disagree.
        farther_match = torch.maximum(d_cost, d_cost_next)
        scale = median_ratio(d_cost, d_single)  # the rule's median alignment, applied before comparing
        consensus = torch.where(nearer_match * scale > d_single, nearer_match,
                                torch.where(farther_match * scale < d_single, farther_match, d_single / scale))
    two_way = [("M0 lowest-cost depth against the next frame", d_cost_next),
               ("both neighbours' lowest-cost depths on the same side of S0 (the nearer to it), else S0", consensus),
               ("nearer of the lowest-cost depths against the previous and the next frame", nearer_match),
               ("nearer of M0's outputs against the previous and the next frame", torch.minimum(d_multi, d_multi_next)),
               ("nearer of the two lowest-cost depths where it warps better than S0, else M0 output",
                torch.where(nearer_match_better, nearer_match, d_multi))]
    sources += two_way
    sources.append(("lowest-cost where it warps better than S0, else M0 output",
                    torch.where(match_better, d_cost, d_multi)))
    sources.append(("lowest-cost where it warps better than S0 and the consistency rule distrusts it, else M0",
                    torch.where(match_better & untrusted, d_cost, d_multi)))
    sharp_moving = float(sharp[moving].median()) if moving.any() else float("nan")
    sharp_static = float(sharp[~moving].median())
    # Oracles of the premise, not sources a run could use: M0 exactly right on static pixels and exactly the
    # static-world match (its own lowest-cost depth) on the moving ones, against this S0; and the same with
    # the true depth as D_r too. They bound what the rule can do with this S0 if M0 over-fitted as assumed.
    truth = torch.stack([torch.as_tensor(g) for g in judge.gts])[:, None].float()
    truth = F.interpolate(truth, size=d_single.shape[-2:], mode="nearest")
    known = truth > 1e-3
    # The truth in the nets' units (they share the pose net's scale): one ratio per image, on static pixels.
    ratios = torch.where(known & ~moving, d_single / truth.clamp_min(1e-3), torch.nan).flatten(1).nanmedian(dim=1).values
    truth = truth * ratios[:, None, None, None]
    premise = torch.where(moving, d_cost, torch.where(known, truth, d_single))
    sources.append(("oracle: true depth on static pixels, lowest-cost depth on moving ones", premise))
    oracle_reference = torch.where(known, truth, d_single)
    # The same sources under an upper-side-only rule (D_o > k D_r): cars driving with the camera look far
    # in a static-world match, and every static false alarm of the paper's band is on its lower side.
    paper = (mcfg.upper_ratio, mcfg.lower_ratio, mcfg.min_blob_area)
    rules = [(name, d_o, d_single, *paper) for name, d_o in sources]
    for k in (1.5, 2.0, 3.0):
        rules += [(f"{name}, D_o > {k:g} D_r only, blobs < 20 px dropped", d_o, d_single, k, 0.0, 20)
                  for name, d_o in sources[:2] + two_way + sources[-3:]]
    rules.append(("the same oracle against D_r = the true depth", premise, oracle_reference, *paper))
    align_median = mcfg.align_median and not args.no_align_median
    for name, d_o, d_r, upper, lower, blobs in rules:
        mask = compute_dynamic_mask(d_o, d_r, K, upper_ratio=upper, lower_ratio=lower,
                                    align_median=align_median, ground_check=mcfg.ground_check,
                                    camera_height=mcfg.camera_height, ground_tolerance=mcfg.ground_tolerance,
                                    min_blob_area=blobs, dilation=mcfg.dilation)
        quality = MaskQualityAccumulator()
        for predicted, true in zip(mask.numpy(), moving.numpy()):
            quality.update(predicted[0], true[0])
        ratio = d_o * median_ratio(d_o, d_r) / d_r
        rows[name] = {**quality.compute(), "flagged": float(mask.float().mean()),
                      "ratio_moving": float(ratio[moving].median()), "ratio_static": float(ratio[~moving].median())}
    payload = {"checkpoint": args.checkpoint, "frames": n, "align_median": align_median, "reliance": reliance, "rows": rows,
               "sharpness_median": {"moving": sharp_moving, "static": sharp_static}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Mask sources of `{args.checkpoint}` ({n} test frames"
             f"{', no median alignment' if args.no_align_median else ''})", "",
             f"M0's reliance on its cost volume: median |log(D / D_zeroed)| {reliance['median_abs_log_change']:.3f}, "
             f"{100 * reliance['changed_over_10pct']:.0f}% of pixels changed by more than 10%. "
             f"Match sharpness (median): moving {sharp_moving:.3f}, static {sharp_static:.3f}.", "",
             "| D_o | IoU | precision | recall | flagged | median D_o/D_r moving | static |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['iou']:.3f} | {v['precision']:.3f} | {v['recall']:.3f} | {v['flagged']:.3f} | "
              f"{v['ratio_moving']:.2f} | {v['ratio_static']:.2f} |" for k, v in rows.items()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
