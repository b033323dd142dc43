"""Does float32 training on a CPU lose time to denormal numbers? A pretrain step with the CPU's
flush-denormal mode (``torch.set_flush_denormal``) off and on, in the same run.

Denormals (magnitudes below 1.2e-38) take a slow path on x86 in float32; bfloat16 hosts flush them anyway.
Builds the pretrain stage from a config, optionally loads a trained pretrain checkpoint with its optimizer
state (``--checkpoint``: where tiny gradients and Adam moments live), and times warm-up steps (single-frame
+ pose) and joint steps with the mode off and on; medians of alternating blocks. Also counts the denormal
entries in the weights, gradients and optimizer state after one step.

    python benchmarks/flush_denormal.py --threads 2 --checkpoint R/checkpoints/pretrain-last.ckpt data.root=/tmp/world

Writes ``benchmarks/results/flush_denormal.json`` and ``.md``.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from mfdepth.training.checkpoint import load_checkpoint
from mfdepth.training.loop import setup_runtime
from pretrain_bench import (
    alternating_medians,
    build_pretrain,
    first_batch,
    optimisation_step,
    step_benchmark_parser,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


@contextlib.contextmanager
def flush_denormal(on: bool):
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def denormal_counts(module, optimizer) -> dict[str, list[int]]:
    """``{"weights" | "gradients" | "optimizer state": [denormal entries, all entries]}``."""
    def count(tensors):
        tensors = [t for t in tensors if t is not None and t.is_floating_point() and t.dtype == torch.float32]
        sub = sum(int(((t != 0) & (t.abs() < SMALLEST_NORMAL)).sum()) for t in tensors)
        return [sub, sum(t.numel() for t in tensors)]

    params = list(module.parameters())
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"weights": count(params), "gradients": count([p.grad for p in params]), "optimizer state": count(states)}


def main() -> None:
    parser = step_benchmark_parser(__doc__, RESULTS, blocks=3)
    parser.add_argument("--checkpoint", help="a pretrain-last.ckpt (weights and optimizer state) to start from")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_denormal_")
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        module.load_checkpoint_models(state["models"])
        optimizer.load_state_dict(state["optimizer"])
    batch = first_batch(config, dataset)
    runtime = setup_runtime("cpu", "auto", "32")
    joined = config.train.warmup_steps + 10
    optimisation_step(module, optimizer, batch, joined, runtime)
    counts = denormal_counts(module, optimizer)

    modes = {"off (default)": False, "on": True}
    contexts = {name: (lambda on=on: flush_denormal(on)) for name, on in modes.items()}
    seconds = {}
    for phase, at in (("warm-up (single-frame + pose)", 10), ("joint (with the multi-frame net)", joined)):
        seconds[phase] = alternating_medians(
            dict.fromkeys(modes, lambda at=at: optimisation_step(module, optimizer, batch, at, runtime)),
            args.blocks, 2, contexts)

    payload = {
        "seconds_per_step": seconds, "denormal_entries": counts, "checkpoint": args.checkpoint,
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/flush_denormal.py " + " ".join(
            [f"--threads {args.threads}", f"--blocks {args.blocks}",
             *([f"--checkpoint {args.checkpoint}"] if args.checkpoint else []), *args.overrides]),
    }
    lines = [
        "# Flush-denormal mode in float32 training steps",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} threads, "
        f"torch {torch.__version__}, float32; start: {args.checkpoint or 'untrained networks'}; medians of "
        f"{args.blocks} alternating blocks of 2 steps.",
        "",
        "| phase | flush-denormal | s / step | speed against off |",
        "|---|---|---|---|",
        *[f"| {phase} | {mode} | {s:.3f} | {by_mode['off (default)'] / s:.2f}x |"
          for phase, by_mode in seconds.items() for mode, s in by_mode.items()],
        "",
        "Denormal entries after one joint step: " + ", ".join(
            f"{kind} {sub} of {total}" for kind, (sub, total) in counts.items()) + ".",
    ]
    write_results(args.out, "flush_denormal", payload, lines)


if __name__ == "__main__":
    main()
