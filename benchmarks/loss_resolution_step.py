"""What comparing the coarse decoder scales at their own size saves per training step.

``loss.full_resolution=true`` (Monodepth2, METHOD.md) upsamples each of the four decoder scales' depth
to the input size and warps and compares the images there; ``false`` compares scale s on the images
area-averaged to its size (Monodepth v1 / SfMLearner), a quarter, a sixteenth, ... of the pixels.
The same pretrain stage (S0 + M0 + pose) is stepped with either loss, in alternating blocks so the
host's drift hits both alike, during the single-frame + pose warm-up and with the multi-frame net
joined, under the training loop's own precision (``train.precision``, auto by default).

    python benchmarks/loss_resolution_step.py --threads 2 data.root=/tmp/world

Writes ``benchmarks/results/loss_resolution_step.json`` and ``.md``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

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
MODES = {"full resolution (Monodepth2)": True, "each scale at its own size": False}


def main() -> None:
    parser = step_benchmark_parser(__doc__, RESULTS, blocks=5)
    parser.add_argument("--per-block", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_loss_resolution_")
    runtime = setup_runtime("cpu", "auto", config.train.precision)
    batch = first_batch(config, dataset)

    def step_with(full_resolution: bool, step: int):
        def run():
            module.config.loss.full_resolution = full_resolution
            optimisation_step(module, optimizer, batch, step, runtime)
        return run

    phases = {"warm-up (single-frame + pose)": 10, "joint (with the multi-frame net)": config.train.warmup_steps + 10}
    seconds = {phase: alternating_medians({name: step_with(flag, step) for name, flag in MODES.items()},
                                          args.blocks, args.per_block)
               for phase, step in phases.items()}
    reference = next(iter(MODES))
    payload = {
        "seconds_per_step": seconds, "height": config.data.height, "width": config.data.width,
        "batch_size": config.train.batch_size, "precision": config.train.precision, "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/loss_resolution_step.py " + " ".join([f"--threads {args.threads}", *args.overrides]),
    }
    lines = [
        "# Photometric loss: every scale at full resolution or each at its own size",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} threads, "
        f"train.precision={config.train.precision}, torch {torch.__version__}; medians of {args.blocks} alternating "
        f"blocks of {args.per_block} steps.",
        "",
        "| phase | " + " | ".join(f"{m} (s / step)" for m in MODES) + " | speed-up |",
        "|---|" + "---|" * (len(MODES) + 1),
        *[f"| {phase} | " + " | ".join(f"{s[m]:.3f}" for m in MODES) + f" | {s[reference] / s[list(MODES)[1]]:.2f}x |"
          for phase, s in seconds.items()],
    ]
    write_results(args.out, "loss_resolution_step", payload, lines)


if __name__ == "__main__":
    main()
