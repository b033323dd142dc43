"""``mfdepth synth``: render the synthetic dynamic driving world to a folder in the KITTI raw layout."""

from __future__ import annotations

import argparse
import time

NAME = "synth"
HELP = "Render the synthetic dynamic driving world (KITTI raw layout + depth/motion ground truth + splits)."

_PRESET_NAMES = ("tiny", "demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the world into (created if needed)")
    parser.add_argument(
        "--preset", choices=_PRESET_NAMES, default=None,
        help="world size: tiny = 4 x 8 frames at 64x192 (tests), demo = 6 x 40 frames at 96x320 (default)",
    )
    parser.add_argument("--sequences", type=int, default=None, help="number of drives (at least 3)")
    parser.add_argument("--frames", type=int, default=None, help="frames per drive at 10 Hz (at least 3)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    parser.add_argument("--ext", choices=("png", "jpg"), default="png", help="image file format")
    parser.add_argument("--split", default="synthetic", help="split name: lists go to OUT/splits/<split>/")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mfdepth.errors import UserError
    from mfdepth.synth.writer import CONTACT_SHEET, WORLD_FILE, write_world

    start = time.perf_counter()
    try:
        root = write_world(
            args.out,
            preset=args.preset,
            sequences=args.sequences,
            frames=args.frames,
            height=args.height,
            width=args.width,
            seed=args.seed,
            ext=args.ext,
            split=args.split,
            progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as err:
        raise UserError(str(err)) from None
    elapsed = time.perf_counter() - start
    print(f"wrote the synthetic world to {root} in {elapsed:.1f} s")
    print(f"  parameters: {root / WORLD_FILE}; preview: {root / CONTACT_SHEET}; splits: {root / 'splits' / args.split}")
    return 0
