"""What the depth networks reach in a given number of steps when they are told the answer.

The bound of the self-supervised recipe at a CPU budget (docs/convergence.md): the single-frame net
and the multi-frame net (given the TRUE relative pose, fine matching on or off) are trained with the
true depth as the target (L1 on log depth), from the same start, optimiser and batches as the
recipe (Adam 2e-4, batch 4, 64x192), and scored on the test split with the judge of
``benchmarks/convergence.py`` every ``--eval-every`` steps. The true translation is divided by 20 so
the scene has the scale of the networks' initial depth (0.2), as in training.

    python benchmarks/supervised_bound.py --steps 500 [--nets single multi multi_plain] [--data data/synthetic]
        [--lr 2e-4] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.config import load_config
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.evaluation.poses import true_relative_poses
from mfdepth.models.factory import build_multi, build_single
from mfdepth.synth import ensure_world

RESULTS = Path(__file__).resolve().parent / "results"
SCENE_SCALE = 20.0


def train_one(kind: str, args) -> list[dict]:
    config = load_config(None, [f"data.root={args.data}", f"model.fine_matching={kind == 'multi'}", *args.overrides])
    train = build_dataset(config.data, "train", augment=False)
    poses = torch.as_tensor(true_relative_poses(config.data.root, train.sample_ids), dtype=torch.float32)
    poses[:, :3, 3] /= SCENE_SCALE
    judge = ConvergenceJudge(config)
    test_poses = torch.as_tensor(judge.true_poses, dtype=torch.float32)
    test_poses[:, :3, 3] /= SCENE_SCALE
    torch.manual_seed(args.seed)
    single = kind == "single"
    net = build_single(config) if single else build_multi(config, msff=False)
    if not single:  # the cost volume spans the scene's true range
        net.d_min.fill_(2.0 / SCENE_SCALE)
        net.d_max.fill_(config.eval.max_depth / SCENE_SCALE)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)

    def depth(target, previous, T, K):
        return net(target)["depth"][0] if single else net(target, previous, T, K)["depth"][0]

    history, start = [], time.time()
    for step in range(1, args.steps + 1):
        picks = torch.randint(len(train), (4,), generator=order).tolist()
        batch = collate_samples([train[i] for i in picks])
        truth = F.interpolate(batch["depth_gt"], size=batch["frames"].shape[-2:], mode="nearest") / SCENE_SCALE
        offsets = [int(o) for o in batch["offsets"][0]]
        frames = batch["frames"]
        predicted = depth(frames[:, 0], frames[:, offsets.index(-1)], poses[picks], batch["K"][:, 0])
        usable = (truth > 1e-4) & (truth < config.eval.max_depth / SCENE_SCALE)
        loss = (predicted.log() - truth.clamp(min=1e-4).log()).abs()[usable].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                n = len(judge.target)
                out = torch.cat([depth(judge.target[i:i + 8], judge.previous[i:i + 8], test_poses[i:i + 8],
                                       judge.K[i:i + 8]) for i in range(0, n, 8)])
            net.train()
            scores = judge._depth_scores(out)
            history.append({"step": step, "seconds": round(time.time() - start, 1), **scores})
            print(f"{kind:11s} step {step:4d} {time.time() - start:5.0f}s AbsRel {scores['abs_rel']:.3f} "
                  f"static {scores['abs_rel_static']:.3f} moving {scores['abs_rel_moving']:.3f} a1 {scores['a1']:.2f}",
                  flush=True)
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--nets", nargs="+", default=["single", "multi", "multi_plain"],
                        choices=["single", "multi", "multi_plain"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="supervised_bound")
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam's learning rate (the recipe's: 2e-4)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (model.*)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_world(args.data, preset="demo")
    runs = {kind: train_one(kind, args) for kind in args.nets}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"argv": vars(args), "runs": runs}, indent=2))
    labels = {"single": "single-frame", "multi": "multi-frame, true pose, fine matching",
              "multi_plain": "multi-frame, true pose, 1/4 matching only"}
    lines = [f"# Supervised with the true depth: the bound at {args.steps} steps (64x192, batch 4, seed {args.seed}, Adam lr {args.lr:g})",
             "", "| network | step | AbsRel | static | moving | d<1.25 |", "|---|---|---|---|---|---|"]
    for kind, history in runs.items():
        for row in history:
            if row["step"] % 100 == 0 or row["step"] == args.steps:
                lines.append(f"| {labels[kind]} | {row['step']} | {row['abs_rel']:.3f} | {row['abs_rel_static']:.3f} | "
                             f"{row['abs_rel_moving']:.3f} | {row['a1']:.2f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
