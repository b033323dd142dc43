"""The encoders' matrix-multiply weight gradient (``mfdepth.models.convolution``) against oneDNN's, on CPU
in float32: per convolution shape, per network (forward + backward) and per training step, in the same run.

1. The weight gradient alone of a C x C x 3 x 3 convolution at a range of output positions (batch x
   height x width): oneDNN's ``convolution_backward`` against ``grad_out @ unfold(input)^T``. This
   table is where ``MIN_WEIGHT_ELEMENTS`` and ``MAX_OUTPUT_POSITIONS`` come from. Then the same for the
   depth and pose decoders' widest layers, which are not switched.
2. S0, M0 and the pose net, forward + backward on one training batch, and the pretrain stage's warm-up
   and joint steps, with the encoders' wide layers as :class:`GemmWeightGradConv2d` (the default) and
   switched back to ``nn.Conv2d``; medians of alternating blocks.

    python benchmarks/weight_gradient.py --threads 2 data.root=/tmp/world

Writes ``benchmarks/results/weight_gradient.json`` and ``.md``.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mfdepth.models.convolution import GemmWeightGradConv2d
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
CHANNELS = (128, 256, 512)
SHAPES = ((4, 1, 3), (4, 2, 6), (8, 2, 6), (4, 4, 12), (8, 4, 12), (4, 8, 24))  # batch, height, width
# The decoders' widest convolutions at 64x192, batch 4 (the pose net's pairs: 8), not switched (yet):
# (where, batch, C_in, input height, input width, C_out, padding).
DECODER_LAYERS = (
    ("depth decoder, 1/32 (reflection-padded input)", 4, 512, 4, 8, 256, 0),
    ("depth decoder, 1/16 (reflection-padded input)", 4, 512, 6, 14, 256, 0),
    ("pose decoder, 3x3 on the squeezed pair", 8, 512, 1, 3, 256, 1),
)


def weight_gradient_variants(batch: int, in_channels: int, height: int, width: int, out_channels: int,
                             padding: int = 1) -> dict:
    """oneDNN's weight gradient and the matrix multiply's, for a C_out x C_in x 3 x 3 convolution, stride 1."""
    x = torch.randn(batch, in_channels, height, width)
    weight = torch.randn(out_channels, in_channels, 3, 3)
    grad_out = torch.randn(batch, out_channels, height + 2 * padding - 2, width + 2 * padding - 2)

    def onednn():
        torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1], [padding, padding], [1, 1], False,
                                            [0, 0], 1, [False, True, False])

    def matmul():
        columns = F.unfold(x, 3, padding=padding)
        torch.mm(grad_out.reshape(batch, out_channels, -1).transpose(0, 1).reshape(out_channels, -1),
                 columns.transpose(1, 2).reshape(-1, columns.shape[1]))

    return {"oneDNN": onednn, "matmul": matmul}


def weight_gradient_table(blocks: int) -> list[dict]:
    layers = [("ResNet stage", b, c, h, w, c, 1) for c in CHANNELS for b, h, w in SHAPES] + list(DECODER_LAYERS)
    rows = []
    for where, batch, in_channels, height, width, out_channels, padding in layers:
        s = alternating_medians(weight_gradient_variants(batch, in_channels, height, width, out_channels, padding),
                                blocks, 5)
        positions = batch * (height + 2 * padding - 2) * (width + 2 * padding - 2)
        rows.append({"layer": where, "in_channels": in_channels, "out_channels": out_channels, "positions": positions,
                     "onednn_ms": 1e3 * s["oneDNN"], "matmul_ms": 1e3 * s["matmul"]})
    return rows


def main() -> None:
    args = step_benchmark_parser(__doc__, RESULTS, blocks=3).parse_args()
    torch.set_num_threads(args.threads)
    table = weight_gradient_table(args.blocks)

    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_wgrad_")
    batch = first_batch(config, dataset)
    passes = network_passes(module, batch)
    wide_layers = [m for m in module.modules() if isinstance(m, GemmWeightGradConv2d)]

    @contextlib.contextmanager
    def onednn_only():
        for layer in wide_layers:
            layer.__class__ = nn.Conv2d
        try:
            yield
        finally:
            for layer in wide_layers:
                layer.__class__ = GemmWeightGradConv2d

    variants = {"matmul (default)": contextlib.nullcontext, "oneDNN": onednn_only}

    runtime = setup_runtime("cpu", "auto", "32")
    steps = {
        **{f"{name}, forward + backward": fn for name, fn in passes.items()},
        "warm-up training step (S0 + pose)": lambda: optimisation_step(module, optimizer, batch, 10, runtime),
        "joint training step (S0 + M0 + pose)": lambda: optimisation_step(
            module, optimizer, batch, config.train.warmup_steps + 10, runtime),
    }
    seconds = {name: alternating_medians(dict.fromkeys(variants, fn), args.blocks, 2, variants)
               for name, fn in steps.items()}

    payload = {
        "weight_gradient_ms": table, "seconds": seconds, "wide_layers": len(wide_layers),
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor(),
        "command": "python benchmarks/weight_gradient.py " + " ".join(
            [f"--threads {args.threads} --blocks {args.blocks}", *args.overrides]),
    }
    first = next(iter(variants))
    lines = [
        "# The encoders' weight gradient: matrix multiply against oneDNN (float32, CPU)",
        "",
        f"{args.threads} threads, torch {torch.__version__}, {platform.platform()}; medians of alternating blocks.",
        "",
        "Weight gradient alone, 3 x 3 convolution, stride 1 (C -> C: a ResNet stage's; the last rows: the decoders'"
        " widest, which keep oneDNN's):",
        "",
        "| layer (C_in -> C_out) | output positions (batch x H x W) | oneDNN (ms) | matmul (ms) | matmul's speed-up |",
        "|---|---|---|---|---|",
        *[f"| {r['layer']} ({r['in_channels']} -> {r['out_channels']}) | {r['positions']} | {r['onednn_ms']:.2f} | "
          f"{r['matmul_ms']:.2f} | {r['onednn_ms'] / r['matmul_ms']:.2f}x |" for r in table],
        "",
        f"Networks and steps at {config.data.height}x{config.data.width}, batch {config.train.batch_size} "
        f"({len(wide_layers)} wide layers in S0, M0 and the pose net switched):",
        "",
        "| | " + " | ".join(f"{v} (s)" for v in variants) + f" | {first}'s speed-up |",
        "|---|" + "---|" * (len(variants) + 1),
        *[f"| {name} | " + " | ".join(f"{s[v]:.3f}" for v in variants) + f" | {s['oneDNN'] / s[first]:.2f}x |"
          for name, s in seconds.items()],
    ]
    write_results(args.out, "weight_gradient", payload, lines)


if __name__ == "__main__":
    main()
