"""SSIM window means: shifted-slice sums (``box_mean_3x3``) against ``F.avg_pool2d``, same run.

Times a whole pretrain training step (S0 + M0 + pose, 4-scale losses, batch 4, random frames) with
the SSIM's window mean switched between the two, in alternating blocks so machine load hits both
alike, and the photometric error alone (forward + backward).

    python benchmarks/bench_ssim.py [--height 64 --width 192 --blocks 6]

Writes ``benchmarks/results/ssim.json`` and ``ssim.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth import losses
from mfdepth.bench import pretrain_step

HERE = Path(__file__).resolve().parent
VARIANTS = {"F.avg_pool2d (reference)": lambda x: F.avg_pool2d(x, 3, 1), "box_mean_3x3": losses.box_mean_3x3}


def _alternate(fn, blocks: int, per_block: int) -> dict[str, float]:
    """Median seconds of ``fn`` under each variant of the window mean, blocks taking turns."""
    times = {name: [] for name in VARIANTS}
    for _ in range(blocks):
        for name, mean in VARIANTS.items():
            losses.box_mean_3x3 = mean
            start = time.perf_counter()
            for _ in range(per_block):
                fn()
            times[name].append((time.perf_counter() - start) / per_block)
    losses.box_mean_3x3 = VARIANTS["box_mean_3x3"]
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, b = args.height, args.width, 4

    train_step, _ = pretrain_step(h, w, batch_size=b, lr=1e-5)

    pred = torch.rand(b, 3, h, w, requires_grad=True)
    target = torch.rand(b, 3, h, w)

    def photometric():
        losses.photometric_error(pred, target).mean().backward()

    for _ in range(2):
        train_step()
    results = {
        "train_step_s": _alternate(train_step, args.blocks, 4),
        "photometric_error_fwd_bwd_s": _alternate(photometric, args.blocks, 20),
    }
    reference, fast = VARIANTS
    payload = {
        "results": results,
        "speedup": {k: v[reference] / v[fast] for k, v in results.items()},
        "size": f"{h}x{w}", "batch": b,
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "command": f"python benchmarks/bench_ssim.py --height {h} --width {w} --blocks {args.blocks}",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ssim.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# SSIM window means: shifted slices vs avg_pool2d",
        "",
        f"{h}x{w}, batch {b}, {args.threads} threads, torch {torch.__version__}; median over {args.blocks} "
        "alternating blocks.",
        "",
        f"| measurement | {reference} s | {fast} s | speed-up |",
        "|---|---|---|---|",
    ]
    for key, row in results.items():
        lines.append(f"| {key} | {row[reference]:.4f} | {row[fast]:.4f} | {payload['speedup'][key]:.2f}x |")
    lines += ["", f"Command: `{payload['command']}`", ""]
    (out / "ssim.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
