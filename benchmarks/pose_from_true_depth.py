"""Can the pose net learn the camera motion from the photometric loss alone when the depth is right?

Trains only a from-scratch pose net on the synthetic world, warping the previous frame into the
target with the world's TRUE depth, and scores it against the true poses (test split) as it trains.
It separates "the pose path is wrong" from "joint depth + pose training from scratch is slow": the
CPU demo's pose net is still far from the true motion after its pretrain budget.

    python benchmarks/pose_from_true_depth.py [--steps 300 --lr 2e-4] [key=value overrides]

Writes ``pose_from_true_depth.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.config import load_config
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.metrics import relative_pose_errors
from mfdepth.evaluation.poses import true_relative_poses
from mfdepth.geometry import inverse_warp
from mfdepth.losses import photometric_error
from mfdepth.models.factory import build_pose
from mfdepth.synth import ensure_world

HERE = Path(__file__).resolve().parent
SKY_DEPTH = 80.0  # metres given to pixels without depth (sky) so they still warp


def _true_depth(batch: dict, size) -> torch.Tensor:
    depth = F.interpolate(batch["depth_gt"], size=size, mode="nearest")
    return torch.where(depth > 0, depth, torch.full_like(depth, SKY_DEPTH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--every", type=int, default=25, help="evaluate every this many steps")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    config = load_config(None, [*args.overrides, "data.frame_offsets=[0,-1]"])
    ensure_world(config.data.root, preset=config.data.synth_preset)
    train = build_dataset(config.data, "train", augment=False)
    test = collate_samples([item for item in build_dataset(config.data, "test", augment=False)])
    truth = true_relative_poses(config.data.root, test["id"])
    torch.manual_seed(config.train.seed)
    pose = build_pose(config)
    optimizer = torch.optim.Adam(pose.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(config.train.seed)

    def evaluate(step: int, loss: float | None) -> dict:
        pose.eval()
        with torch.no_grad():
            predicted = pose(test["frames"][:, 0], test["frames"][:, 1], source_is_before=True)
        pose.train()
        return {"step": step, "loss": loss, **relative_pose_errors(predicted.double().numpy(), truth)}

    history = [evaluate(0, None)]
    for step in range(1, args.steps + 1):
        picks = torch.randint(len(train), (config.train.batch_size,), generator=order).tolist()
        batch = collate_samples([train[i] for i in picks])
        frames, K = batch["frames"], batch["K"][:, 0]
        T = pose(frames[:, 0], frames[:, 1], source_is_before=True)
        warped, valid = inverse_warp(frames[:, 1], _true_depth(batch, frames.shape[-2:]), T, K)
        loss = (photometric_error(warped, frames[:, 0]) * valid).sum() / valid.sum().clamp(min=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            history.append(evaluate(step, float(loss)))
            print(f"step {step}: direction error {history[-1]['direction_deg']:.1f} deg", flush=True)

    command = f"python benchmarks/pose_from_true_depth.py --steps {args.steps} --lr {args.lr:g} " + " ".join(args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"history": history, "command": command.strip(),
               "machine": {"platform": platform.platform(), "torch": torch.__version__}}
    (out / "pose_from_true_depth.json").write_text(json.dumps(payload, indent=2))
    d = config.data
    lines = [
        "# Pose net trained alone, with the true depth",
        "",
        f"From scratch, Adam lr {args.lr:g}, batch {config.train.batch_size}, {d.height}x{d.width}, synthetic world "
        f"`{d.root}`; errors on the {len(test['id'])} test pairs (translation scaled by one median factor).",
        "",
        "| step | rotation err (deg) | translation direction err (deg) | scale (true / predicted) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h['step']} | {h['rotation_deg']:.2f} | {h['direction_deg']:.1f} | {h['scale']:.2f} |" for h in history]
    lines += ["", f"Command: `{payload['command']}`", ""]
    (out / "pose_from_true_depth.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
