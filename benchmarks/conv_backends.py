"""Convolution back-ends on 2 CPU cores: oneDNN (mkldnn) against PyTorch's native kernels, and the
channels-last memory format, for each network's forward + backward, in the same run.

Builds the pretrain stage's three networks (S0, M0, pose) from a config and times a forward and a
backward of each on one training batch with oneDNN on and off, then the whole joint training step in
the default (NCHW) and the channels-last layout; medians of alternating blocks.

    python benchmarks/conv_backends.py --threads 2 data.root=/tmp/world

Writes ``benchmarks/results/conv_backends.json`` and ``.md``.
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
    network_passes,
    optimisation_step,
    step_benchmark_parser,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    args = step_benchmark_parser(__doc__, RESULTS, blocks=3).parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_conv_")
    batch = first_batch(config, dataset)
    networks = network_passes(module, batch)
    backends = {"oneDNN (default)": True, "native": False}
    switches = {name: (lambda on=on: torch.backends.mkldnn.flags(enabled=on)) for name, on in backends.items()}
    per_network = {
        net: alternating_medians(dict.fromkeys(backends, fn), args.blocks, 2, switches)
        for net, fn in networks.items()
    }

    runtime = setup_runtime("cpu", "auto", "32")
    joined = config.train.warmup_steps + 10
    layouts = {"NCHW (default)": torch.contiguous_format, "channels-last": torch.channels_last}

    class _Layout:
        def __init__(self, fmt):
            self.fmt = fmt

        def __enter__(self):
            module.to(memory_format=self.fmt)

        def __exit__(self, *exc):
            module.to(memory_format=torch.contiguous_format)

    def step():
        optimisation_step(module, optimizer, batch, joined, runtime)

    step_s = alternating_medians(dict.fromkeys(layouts, step), args.blocks, 2,
                                 {name: (lambda fmt=fmt: _Layout(fmt)) for name, fmt in layouts.items()})

    payload = {
        "forward_backward_s": per_network, "joint_step_s": step_s,
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/conv_backends.py " + " ".join([f"--threads {args.threads}", *args.overrides]),
    }
    first_backend, first_layout = next(iter(backends)), next(iter(layouts))
    lines = [
        "# Convolution back-ends and memory layout",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} threads, "
        f"torch {torch.__version__}; medians of alternating blocks.",
        "",
        "| network, forward + backward | " + " | ".join(f"{b} (s)" for b in backends) + " | oneDNN's speed-up |",
        "|---|" + "---|" * (len(backends) + 1),
        *[f"| {net} | " + " | ".join(f"{s[b]:.3f}" for b in backends) + f" | {s['native'] / s[first_backend]:.2f}x |"
          for net, s in per_network.items()],
        "",
        "| layout | joint training step (s) | speed against NCHW |",
        "|---|---|---|",
        *[f"| {name} | {s:.3f} | {step_s[first_layout] / s:.2f}x |" for name, s in step_s.items()],
    ]
    write_results(args.out, "conv_backends", payload, lines)


if __name__ == "__main__":
    main()
