"""Does ``torch.compile`` (TorchInductor, C++ kernels on CPU) make a pretrain step faster on this host?

Each variant runs in its own process (a compiled function cannot be un-compiled in place), in
alternating rounds so that the host's drift hits every variant alike:

* ``eager``: the training step as the loop runs it;
* ``loss``: the photometric error and the smoothness term (``mfdepth.losses``, pure element-wise
  functions, most of the step's small operators) compiled;
* ``nets``: the forward of the single-frame, multi-frame and pose networks compiled.

Per variant and phase (single-frame + pose warm-up; joint, with the multi-frame net) it records the first
two steps (they hold the compilation) and the median of the next ``--steps`` steps.

    python benchmarks/compile_step.py --threads 2 --rounds 2 data.root=/tmp/world

Writes ``benchmarks/results/compile_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pretrain_bench import write_results

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager", "loss", "nets")


def measure(variant: str, threads: int, steps: int, overrides: list[str]) -> dict:
    """One process's timings of ``variant``: first-two-steps and median step seconds per phase."""
    from torch.utils.data import DataLoader

    import mfdepth.losses as losses
    from mfdepth.training.loop import setup_runtime
    from pretrain_bench import build_pretrain, optimisation_step

    torch.set_num_threads(threads)
    config, dataset, module, optimizer = build_pretrain(overrides, "mfdepth_compile_")
    loader = iter(DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, num_workers=0,
                             generator=torch.Generator().manual_seed(0)))
    batches = [next(loader) for _ in range(steps + 2)]
    runtime = setup_runtime("cpu", "auto", "32")
    if variant == "loss":
        losses.photometric_error = torch.compile(losses.photometric_error, dynamic=False)
        losses.smoothness_loss = torch.compile(losses.smoothness_loss, dynamic=False)
    elif variant == "nets":
        for net in (module.single, module.multi, module.pose):
            net.forward = torch.compile(net.forward, dynamic=False)
    result = {}
    for phase, first in (("warm-up", 10), ("joint", config.train.warmup_steps + 10)):
        began = time.perf_counter()
        for i in range(2):
            optimisation_step(module, optimizer, batches[i], first + i, runtime)
        first_two = time.perf_counter() - began
        times = []
        for i in range(steps):
            began = time.perf_counter()
            optimisation_step(module, optimizer, batches[2 + i], first + 2 + i, runtime)
            times.append(time.perf_counter() - began)
        result[phase] = {"first_two_steps_s": first_two, "median_step_s": statistics.median(times)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per phase, after two untimed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.threads, args.steps, args.overrides)), flush=True)
        return
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for variant in args.variants:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--threads", str(args.threads), "--steps",
                 str(args.steps), *args.overrides], capture_output=True, text=True, check=True).stdout
            runs[variant].append(json.loads(out.split("RESULT ", 1)[1]))
            print(variant, runs[variant][-1], flush=True)
    phases = ("warm-up", "joint")
    summary = {v: {p: {k: statistics.median(r[p][k] for r in rows) for k in ("first_two_steps_s", "median_step_s")}
                   for p in phases} for v, rows in runs.items()}
    reference = args.variants[0]
    command = "python benchmarks/compile_step.py " + " ".join(
        [f"--threads {args.threads}", f"--rounds {args.rounds}", *args.overrides])
    payload = {"runs": runs, "summary": summary, "threads": args.threads, "torch": torch.__version__,
               "platform": platform.platform(), "processor": platform.processor(), "command": command}
    lines = ["# torch.compile and the pretrain step", "",
             f"64x192, batch 4, {args.threads} threads, float32, torch {torch.__version__}; each variant in its own "
             f"process, {args.rounds} alternating rounds, medians over rounds.", "",
             f"| variant | phase | first two steps (s, with compilation) | step (s) | speed against {reference} |",
             "|---|---|---|---|---|"]
    for variant, by_phase in summary.items():
        for phase, row in by_phase.items():
            ratio = summary[reference][phase]["median_step_s"] / row["median_step_s"]
            lines.append(f"| {variant} | {phase} | {row['first_two_steps_s']:.1f} | {row['median_step_s']:.3f} | "
                         f"{ratio:.2f}x |")
    write_results(args.out, "compile_step", payload, lines)


if __name__ == "__main__":
    main()
