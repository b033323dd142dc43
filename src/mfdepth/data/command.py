"""``mfdepth prepare``: ground-truth files a dataset needs before evaluation."""

from __future__ import annotations

import argparse
import json

NAME = "prepare"
HELP = (
    "Write evaluation ground truth: KITTI velodyne or improved depth -> <data>/splits/<split>/gt_depths.npz."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=["kitti"], help="dataset layout (synthetic worlds write their own)"
    )
    parser.add_argument("--data", required=True, help="KITTI raw root (the folder holding the date folders)")
    parser.add_argument("--split", required=True, help="split name, e.g. eigen (its test_files.txt is used)")
    parser.add_argument(
        "--improved",
        action="store_true",
        help="use KITTI's improved ground truth (proj_depth/groundtruth PNGs) instead of velodyne scans",
    )
    parser.add_argument(
        "--improved-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of the depth-completion annotations (data_depth_annotated, with train/ and val/); "
        "repeatable",
    )
    parser.add_argument(
        "--monodepth2-convention",
        action="store_true",
        help="reproduce Monodepth2's export exactly (pixels shifted by -1, velodyne x as depth)",
    )
    parser.add_argument(
        "--output", default=None, help="where to write (default <data>/splits/<split>/gt_depths.npz)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mfdepth.data.errors import DataError
    from mfdepth.data.kitti import export_ground_truth
    from mfdepth.errors import UserError

    if args.improved and args.monodepth2_convention:
        raise UserError(
            "--monodepth2-convention applies to velodyne ground truth only; drop it with --improved"
        )
    try:
        path, summary = export_ground_truth(
            args.data,
            args.split,
            improved=args.improved,
            improved_dirs=args.improved_dir,
            monodepth2_convention=args.monodepth2_convention,
            output=args.output,
            progress=not args.no_progress,
        )
    except DataError as err:
        raise UserError(str(err)) from None
    print(
        f"wrote {path}: {summary['frames']} frames, {summary['mean_valid_pixels']:.0f} valid pixels per frame"
    )
    print(json.dumps(summary))
    return 0
