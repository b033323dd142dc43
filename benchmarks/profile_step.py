"""Where a pretrain step's time goes: the step alone (no data loading, logging or checkpoints) and its
operator profile.

Builds :class:`mfdepth.training.stages.PretrainStage` from a config, draws a few training batches
once, and times optimisation steps during the single-frame + pose warm-up and with the multi-frame
net joined (two untimed steps first), once per ``--precision`` (``train.precision`` values, under the
training loop's own autocast; speed reported as a ratio to the first); then profiles joint steps of
the first precision with ``torch.profiler``.

    python benchmarks/profile_step.py --threads 2 --precision 32 bf16-mixed data.root=/tmp/world

Writes ``benchmarks/results/profile_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from mfdepth.training.loop import forward_under_autocast, setup_runtime, step_generator
from pretrain_bench import build_pretrain, optimisation_step

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per phase")
    parser.add_argument("--precision", nargs="+", default=["32"], help="train.precision values to time")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_profile_")
    loader = iter(DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, num_workers=0,
                             generator=torch.Generator().manual_seed(0)))
    batches = [next(loader) for _ in range(args.steps + 2)]

    def step(batch, at):  # under the `runtime` of the precision being timed
        optimisation_step(module, optimizer, batch, at, runtime)

    joined = config.train.warmup_steps + 10
    phases = (("warm-up (single-frame + pose)", 10), ("joint (with the multi-frame net)", joined))
    seconds = {}
    for precision in args.precision:
        runtime = setup_runtime("cpu", "auto", precision)
        for phase, first in phases:
            step(batches[0], first)
            step(batches[1], first + 1)
            began = time.perf_counter()
            for i in range(args.steps):
                step(batches[2 + i], first + 2 + i)
            seconds.setdefault(precision, {})[phase] = (time.perf_counter() - began) / args.steps
    reference = args.precision[0]
    runtime = setup_runtime("cpu", "auto", reference)

    module.global_step = joined
    began = time.perf_counter()
    loss, _, _ = forward_under_autocast(module, batches[0], step_generator(0, joined), runtime)
    forward = time.perf_counter() - began
    began = time.perf_counter()
    loss.backward()
    backward = time.perf_counter() - began
    optimizer.zero_grad()

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2):
            step(batches[i], joined + 10 + i)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:12]]

    payload = {
        "seconds_per_step": seconds, "reference_precision": reference, "joint_forward_s": forward, "joint_backward_s": backward, "top_ops": top,
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/profile_step.py " + " ".join(
            [f"--threads {args.threads}", "--precision", *args.precision, *args.overrides]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_step.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# Pretrain step profile",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} threads, "
        f"torch {torch.__version__}; the step alone (no data loading, logging, checkpoints).",
        "",
        "| train.precision | phase | s / step | speed against " + reference + " |",
        "|---|---|---|---|",
        *[f"| {precision} | {phase} | {s:.3f} | {seconds[reference][phase] / s:.2f}x |"
          for precision, by_phase in seconds.items() for phase, s in by_phase.items()],
        "",
        f"Joint step ({reference}): forward {forward:.3f} s, backward {backward:.3f} s.",
        "",
        f"| operator (joint steps, {reference}) | share of CPU time | calls |",
        "|---|---|---|",
        *[f"| `{row['op']}` | {row['share']:.1%} | {row['calls']} |" for row in top],
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    (out / "profile_step.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
