"""Data loading throughput: training samples per second at 192x640 with worker processes.

Each sample is three frames (offsets 0, -1, +1) decoded, resized, colour-jittered and flipped, as in
training. The source is the synthetic world when ``mfdepth.synth`` can write one, otherwise the KITTI
raw sample (1242x375 PNGs) repeated into a longer drive, which is the cost profile of KITTI training.

    python benchmarks/bench_dataloader.py [--source auto|synthetic|kitti_sample] [--workers 2]

Writes ``benchmarks/results/dataloader.json`` and ``dataloader.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mfdepth.config import DataConfig
from mfdepth.data import build_dataset

HERE = Path(__file__).resolve().parent
KITTI_SAMPLE = HERE.parent / "tests" / "data" / "samples" / "kitti_raw_sample"
DRIVE = "2011_09_26/2011_09_26_drive_0000_sync"


def repeated_kitti_root(folder: Path, frames: int) -> DataConfig:
    """A KITTI root whose one drive cycles through the three sample frames ``frames`` times over."""
    shutil.copytree(
        KITTI_SAMPLE / "2011_09_26", folder / "2011_09_26", ignore=shutil.ignore_patterns("*_sync")
    )
    image_dir = folder / DRIVE / "image_02" / "data"
    image_dir.mkdir(parents=True)
    sources = sorted((KITTI_SAMPLE / DRIVE / "image_02" / "data").glob("*.png"))
    for frame in range(frames):
        (image_dir / f"{frame:010d}.png").symlink_to(sources[frame % len(sources)])
    split = folder / "splits" / "bench"
    split.mkdir(parents=True)
    (split / "train_files.txt").write_text("".join(f"{DRIVE} {f} l\n" for f in range(1, frames - 1)))
    return DataConfig(dataset="kitti", root=str(folder), split="bench")


def synthetic_config(folder: Path) -> DataConfig | None:
    try:
        from mfdepth.synth import ensure_world
    except ImportError:
        return None
    ensure_world(folder / "world", "demo")
    return DataConfig(dataset="synthetic", root=str(folder / "world"), split="synthetic", synth_preset="demo")


def measure(dataset, workers: int, batch_size: int, samples: int) -> dict:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    done, start, first_batch_s = 0, time.perf_counter(), None
    while done < samples:
        for batch in loader:
            if first_batch_s is None:
                # Worker start-up and the first decode are not throughput; time from here on.
                first_batch_s = time.perf_counter() - start
                start = time.perf_counter()
                continue
            done += batch["frames"].shape[0]
            if done >= samples:
                break
    elapsed = time.perf_counter() - start
    return {
        "samples": done,
        "seconds": elapsed,
        "samples_per_s": done / elapsed,
        "first_batch_s": first_batch_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["auto", "synthetic", "kitti_sample"], default="auto")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=160, help="samples timed after the first batch")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = None if args.source == "kitti_sample" else synthetic_config(folder)
        if cfg is None and args.source == "synthetic":
            print("mfdepth.synth is not available; use --source kitti_sample", file=sys.stderr)
            return 2
        source = "synthetic" if cfg is not None else "kitti_sample (3 real 1242x375 PNG frames, repeated)"
        if cfg is None:
            cfg = repeated_kitti_root(folder, frames=64)
        cfg.height, cfg.width = args.height, args.width
        cache = {}
        for label, megabytes in (("off", 0.0), ("on", cfg.frame_cache_mb)):
            cfg.frame_cache_mb = megabytes
            cached = build_dataset(cfg, "train", augment=True, seed=0)
            passes = []
            for _ in range(2):  # the second pass finds every frame cached (when it fits)
                start = time.perf_counter()
                for i in range(len(cached)):
                    cached[i]
                passes.append((time.perf_counter() - start) / len(cached) * 1000)
            cache[label] = {"first_pass_ms_per_sample": passes[0], "second_pass_ms_per_sample": passes[1],
                            "cached_mib": cached.frame_cache.bytes / 2**20, "budget_mib": megabytes}
        dataset = build_dataset(cfg, "train", augment=True, seed=0)
        start = time.perf_counter()
        for i in range(8):
            dataset[i % len(dataset)]
        single_item_ms = (time.perf_counter() - start) / 8 * 1000
        result = measure(dataset, args.workers, args.batch_size, args.samples)

    record = {
        "benchmark": "dataloader",
        "source": source,
        "resolution": [args.height, args.width],
        "frames_per_sample": len(cfg.frame_offsets),
        "augment": True,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "single_process_ms_per_sample": single_item_ms,
        "frame_cache": cache,
        **result,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": "python benchmarks/bench_dataloader.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataloader.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "dataloader.md").write_text(
        "# Data loading throughput\n\n"
        f"Source: {source}. {args.height}x{args.width}, {record['frames_per_sample']} frames per sample, "
        f"flip + colour jitter, batch {args.batch_size}, {args.workers} workers, "
        f"{record['cpu_count']} CPU cores "
        f"(torch {torch.__version__}).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| samples / s ({args.workers} workers) | {result['samples_per_s']:.1f} |\n"
        f"| ms / sample, one process | {single_item_ms:.1f} |\n"
        f"| first batch (worker start-up), s | {result['first_batch_s']:.2f} |\n"
        f"| samples timed | {result['samples']} in {result['seconds']:.1f} s |\n\n"
        f"One process, two passes over the {len(dataset)} training samples, the frame cache "
        f"(`data.frame_cache_mb`) off and on, same run:\n\n"
        "| frame cache | first pass, ms / sample | second pass, ms / sample | cached (MiB) | second pass speed-up |\n"
        "|---|---|---|---|---|\n"
        + "".join(
            f"| {label} ({c['budget_mib']:g} MiB) | {c['first_pass_ms_per_sample']:.1f} | "
            f"{c['second_pass_ms_per_sample']:.1f} | {c['cached_mib']:.1f} | "
            f"{cache['off']['second_pass_ms_per_sample'] / c['second_pass_ms_per_sample']:.2f}x |\n"
            for label, c in cache.items()
        )
        + "\n"
        f"Repeat with: `{record['command'].strip()}`\n"
    )
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
