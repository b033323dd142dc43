"""How well can the depth inconsistency rule find the moving objects when nothing is learned?

The rule (METHOD.md, step 3) flags a pixel whose multi-frame depth D_o differs from the single-frame
depth D_r by more than [0.85, 2]x. It assumes D_o is what a static-world match says: an object moving
with the camera looks far, an oncoming one near. Here both inputs are replaced by oracles on the test
split of the embedded world, and the rule's mask is scored against the true motion:

* D_r = the true depth;
* D_o = the lowest-cost depth of the cost volume with the TRUE pose and the images as features
  (``model.fine_matching``'s pooled cost, upsampled to full size): a static-world match;
* rows with and without the ground check (METHOD.md step 4, on the true depth, camera height 1.65 m),
  with small blobs dropped (step 4's option) and for several ratio bands.

If this ceiling is low, no training recipe can bring the rule to IoU 0.5 on this world: the motion is
too small to move the static-world depth out of the band. "moving ratio outside band" is the share of
true moving pixels the rule could flag at all; "static flagged" its false-alarm rate on static pixels.

    python benchmarks/mask_oracle.py [--data data/synthetic] [--height 64 --width 192]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.masks import compute_dynamic_mask, mask_quality
from mfdepth.models.cost_volume import finish_cost_volume, pooled_cost_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_volume_oracle import true_pose_inputs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    args, config, judge, T, gt = true_pose_inputs(__doc__.splitlines()[0])
    target, previous, K = judge.target, judge.previous, judge.K
    moving = torch.stack([torch.as_tensor(m) for m in judge.motion])[:, None].bool()
    gt = F.interpolate(gt, size=(args.height, args.width), mode="nearest")
    moving = F.interpolate(moving.float(), size=(args.height, args.width), mode="nearest").bool()
    has_gt = (gt > 1e-3) & (gt < config.eval.max_depth)

    depths = torch.linspace(2.0, config.eval.max_depth, args.bins)[None].expand(len(target), -1)
    cost, valid = pooled_cost_volume(target, previous, T, K, depths, 4)
    _, best, reliable = finish_cost_volume(cost, valid, depths)
    static_world = F.interpolate(best, size=gt.shape[-2:], mode="nearest")
    reliable = F.interpolate(reliable.float(), size=gt.shape[-2:], mode="nearest").bool()
    usable = has_gt & reliable
    ratio = static_world / gt.clamp_min(1e-3)

    rows = {}
    for low, high in ((0.85, 2.0), (0.7, 1.5), (0.5, 2.0)):
        outside = ((ratio < low) | (ratio > high)) & usable
        for ground, blob in ((True, 0), (False, 0), (True, 20), (True, 60)):
            mask = compute_dynamic_mask(static_world, gt.clamp_min(1e-3), K, upper_ratio=high, lower_ratio=low,
                                        align_median=False, ground_check=ground, camera_height=1.65,
                                        min_blob_area=blob, valid=usable)
            quality = mask_quality(mask, moving, usable)
            rows[f"[{low}, {high}], ground check {'on' if ground else 'off'}, blobs < {blob} px dropped"] = {
                **quality,
                "moving_outside_band": float(outside[moving].float().mean()),
                "static_flagged": float(mask[~moving & usable].float().mean()),
            }
    moving_share = float(moving[usable].float().mean())
    moving_ratio = ratio[moving & usable]
    name = args.name or f"mask_oracle_{args.height}x{args.width}"
    payload = {"argv": vars(args), "frames": len(target), "moving_share": moving_share,
               "moving_ratio_quantiles": {q: float(moving_ratio.quantile(q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
               "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    quantiles = ", ".join(f"{q:g}: {v:.2f}" for q, v in payload["moving_ratio_quantiles"].items())
    lines = [f"# Depth inconsistency rule with oracle inputs ({args.height}x{args.width}, {len(target)} test frames)",
             "", "D_r = true depth; D_o = lowest-cost depth with the true pose (pooled full-resolution image cost).",
             f"True moving pixels: {100 * moving_share:.1f}% of the usable ones; their D_o / D_r quantiles {quantiles}.",
             "", "| band | IoU | precision | recall | moving outside band | static flagged |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['iou']:.3f} | {v['precision']:.3f} | {v['recall']:.3f} | {v['moving_outside_band']:.2f} | "
              f"{v['static_flagged']:.3f} |" for k, v in rows.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
