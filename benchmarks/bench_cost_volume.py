"""The plane sweep's sampling grid: :func:`sweep_grid` against :func:`sweep_pixels` + normalisation, same run.

``build_cost_volume`` (and the fine matching built on it, ``model.fine_matching``) needs, for every pixel
and hypothesis, the source position in ``grid_sample``'s [-1, 1] coordinates and whether it is valid.
The reference computes the pixel positions with :func:`mfdepth.models.cost_volume.sweep_pixels` (a
``(B, D, 3, HW)`` projection, then two divisions) and normalises them after, as the library did until
2026-12-08; :func:`mfdepth.models.cost_volume.sweep_grid` writes the normalised grid directly. Timed in
alternating blocks (so machine load hits both alike): the fine matching cost at the demo's training
size and at KITTI's, the multi-frame net's forward at KITTI's size, and a pretrain training step.

    python benchmarks/bench_cost_volume.py [--blocks 5 --threads 2]

Writes ``benchmarks/results/cost_volume_grid.json`` and ``cost_volume_grid.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mfdepth.bench import pretrain_step
from mfdepth.models import MultiFrameDepthNet, cost_volume, prepare_for_inference
from mfdepth.models.cost_volume import pooled_cost_volume, sweep_grid, sweep_pixels

HERE = Path(__file__).resolve().parent


def reference_grid(T_source_target, K, depths, height, width):
    """The grid as built before :func:`sweep_grid`: pixel positions, then normalised and stacked."""
    u, v, z = sweep_pixels(T_source_target, K, depths, height, width)
    grid = torch.stack([(2.0 * u + 1.0) / width - 1.0, (2.0 * v + 1.0) / height - 1.0], dim=-1)
    return grid, (grid.abs() <= 1.0).all(dim=-1) & (z > 1e-3)


VARIANTS = {"sweep_pixels + normalisation (reference)": reference_grid, "sweep_grid": sweep_grid}


def _alternate(fn, blocks: int, per_block: int) -> dict[str, float]:
    times = {name: [] for name in VARIANTS}
    for _ in range(blocks):
        for name, grid_fn in VARIANTS.items():
            cost_volume.sweep_grid = grid_fn
            start = time.perf_counter()
            for _ in range(per_block):
                fn()
            times[name].append((time.perf_counter() - start) / per_block)
    cost_volume.sweep_grid = sweep_grid
    return {name: statistics.median(values) for name, values in times.items()}


def _scene(batch: int, height: int, width: int, bins: int):
    """Two random frames, a forward-and-sideways camera motion, and the hypotheses (0.5-80 m)."""
    K = torch.tensor([[0.58 * width, 0.0, (width - 1) / 2], [0.0, 1.92 * height, (height - 1) / 2],
                      [0.0, 0.0, 1.0]]).expand(batch, 3, 3)
    T = torch.eye(4).repeat(batch, 1, 1)
    T[:, 0, 3], T[:, 2, 3] = 0.3, -1.0
    depths = torch.linspace(0.5, 80.0, bins).expand(batch, bins)
    return torch.rand(batch, 3, height, width), torch.rand(batch, 3, height, width), T, K, depths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train_target, train_source, train_T, train_K, train_depths = _scene(4, 64, 192, 48)
    kitti_target, kitti_source, kitti_T, kitti_K, kitti_depths = _scene(1, 192, 640, 96)
    multi = MultiFrameDepthNet(num_depth_bins=96, fine_matching=True).eval()
    prepare_for_inference(multi)
    train_step, _ = pretrain_step(64, 192, ["train.warmup_steps=0"], batch_size=4, lr=1e-5)  # M0 in every step

    def fine_train():
        pooled_cost_volume(train_target, train_source, train_T, train_K, train_depths, 4)

    def fine_kitti():
        pooled_cost_volume(kitti_target, kitti_source, kitti_T, kitti_K, kitti_depths, 4)

    def multi_kitti():
        multi(kitti_target, kitti_source, kitti_T, kitti_K)

    measurements = {
        "fine matching cost, 64x192, batch 4, 48 hypotheses": (fine_train, 20, True),
        "fine matching cost, 192x640, batch 1, 96 hypotheses": (fine_kitti, 3, True),
        "multi-frame net forward (fine matching on), 192x640, 96 hypotheses": (multi_kitti, 3, True),
        "joint pretrain training step (S0 + M0 + pose), 64x192, batch 4": (train_step, 4, False),
    }
    results = {}
    for key, (fn, per_block, inference) in measurements.items():
        with torch.inference_mode(inference):
            fn()
            results[key] = _alternate(fn, args.blocks, per_block)
    reference, fast = VARIANTS
    payload = {
        "results": results,
        "speedup": {k: v[reference] / v[fast] for k, v in results.items()},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "torch": torch.__version__},
        "command": f"python benchmarks/bench_cost_volume.py --blocks {args.blocks} --threads {args.threads}",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost_volume_grid.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# The plane sweep's sampling grid: sweep_grid against sweep_pixels + normalisation",
        "",
        f"{args.threads} threads, torch {torch.__version__}; median seconds over {args.blocks} alternating blocks.",
        "",
        f"| measurement | {reference} s | {fast} s | speed-up |",
        "|---|---|---|---|",
    ]
    for key, row in results.items():
        lines.append(f"| {key} | {row[reference]:.4f} | {row[fast]:.4f} | {payload['speedup'][key]:.2f}x |")
    lines += ["", f"Command: `{payload['command']}`", ""]
    (out / "cost_volume_grid.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
