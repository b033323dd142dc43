"""Can a photometric gate hand the moving pixels, and only those, to M0's match?

``loss.consistency_photometric_gate`` takes a pixel out of ManyDepth's consistency term (which distils M0
from S0) where the cost volume's lowest-cost depth warps the source frames at least as well as S0's depth;
``loss.consistency_gate_far_only`` keeps only matches beyond ``loss.consistency_high`` times S0's depth, and
``loss.consistency_gate_margin`` asks for a match error at most that share of S0's. On a car driving with
the camera the match lies far and warps well: the gate's purpose. This script measures, with a run's
pretrain networks on the training frames (frames whose camera stands, by the auto-mask, left out), which
share of the moving and of the static pixels such a gate would hand over, for several margins.

    python benchmarks/match_handover.py RUN_DIR --data /tmp/world --name NAME

Writes ``benchmarks/results/match_handover_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mfdepth import losses
from mfdepth import masks as mask_rules
from mfdepth.config import load_config
from mfdepth.data.base import collate_samples
from mfdepth.data.factory import build_dataset
from mfdepth.training.recipe import _pretrain_networks
from mfdepth.training.stages import predict_poses

RESULTS = Path(__file__).resolve().parent / "results"
MARGINS = (1.0, 0.8, 0.6, 0.4, 0.25)
STANDING_FRACTION = 0.9


@torch.no_grad()
def handover_counts(run_dir: Path, data: Path, far_ratio: float) -> tuple[dict, int]:
    """Per margin, pixel counts of (handed moving, handed static, moving, static); and the frames left out."""
    config = load_config(str(run_dir / "config.yaml"), [f"data.root={data}", "data.num_workers=0"])
    nets = _pretrain_networks(config, run_dir, torch.device("cpu"))
    dataset = build_dataset(config.data, "train", augment=False, seed=config.train.seed)
    counts = {m: [0, 0, 0, 0] for m in MARGINS}
    standing_frames = 0
    ssim = config.loss.ssim_weight
    for batch in DataLoader(dataset, batch_size=4, collate_fn=collate_samples):
        _, target, _, sources, K, _ = nets.unpack(batch)
        poses = predict_poses(nets.pose, target, sources)
        single = nets.scaled(nets.single(target), K)["depth"][0]
        multi = nets.scaled(nets.multi(target, sources[-1], poses[-1], K), K)
        size = tuple(single.shape[-2:])
        match = F.interpolate(multi["cost_volume_depth"], size=size, mode="nearest")
        valid = F.interpolate(multi["cost_volume_valid"].float(), size=size, mode="nearest") > 0.5
        single_error, _ = losses.min_reprojection_error(target, sources, single, poses, K, ssim)
        match_error, _ = losses.min_reprojection_error(target, sources, match, poses, K, ssim)
        standing = mask_rules.standing_camera(losses.automask_of(target, sources, single, poses, K, ssim),
                                              STANDING_FRACTION)
        standing_frames += int(standing.sum())
        kept = ~standing[:, None, None, None]
        far = (match > far_ratio * single) & valid & kept
        moving = (batch["motion_mask"] > 0.5) & kept
        static = (batch["motion_mask"] <= 0.5) & kept
        for margin in MARGINS:
            handed = far & (match_error <= margin * single_error)
            counts[margin] = [a + int(b) for a, b in zip(counts[margin], (
                (handed & moving).sum(), (handed & static).sum(), moving.sum(), static.sum()))]
    return counts, standing_frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory whose pretrain stage has finished")
    parser.add_argument("--data", required=True, help="the synthetic world the run trained on")
    parser.add_argument("--name", required=True, help="results are written as match_handover_<name>.*")
    parser.add_argument("--far-ratio", type=float, default=2.0, help="a match is far beyond this times S0's depth")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts, standing = handover_counts(Path(args.run_dir), Path(args.data), args.far_ratio)
    rows = []
    for margin, (handed_moving, handed_static, moving, static) in counts.items():
        rows.append({"margin": margin, "moving_share": handed_moving / max(moving, 1),
                     "static_share": handed_static / max(static, 1),
                     "precision": handed_moving / max(handed_moving + handed_static, 1)})
    payload = {"run_dir": args.run_dir, "far_ratio": args.far_ratio, "standing_frames_left_out": standing,
               "rows": rows,
               "command": "python benchmarks/match_handover.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"match_handover_{args.name}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Match handover: {args.name}", "",
             f"Pretrain networks of `{args.run_dir}`, training frames ({standing} with a standing camera left out); "
             f"a pixel is handed over where its match lies beyond {args.far_ratio}x S0's depth and its "
             "photometric error is at most the margin times S0's.", "",
             "| margin | moving pixels handed | static pixels handed | precision |", "|---|---|---|---|"]
    lines += [f"| {r['margin']} | {100 * r['moving_share']:.1f}% | {100 * r['static_share']:.2f}% | "
              f"{r['precision']:.2f} |" for r in rows]
    lines += ["", f"Command: `{payload['command']}`"]
    (RESULTS / f"match_handover_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
