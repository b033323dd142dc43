"""``mfdepth predict``: depth maps for an image pair, a folder of frames or a video.

The work is done by :mod:`mfdepth.inference.pipeline`; this module only parses the command line (and
keeps torch out of ``mfdepth --help``).
"""

from __future__ import annotations

import argparse
import logging
import math

from mfdepth.inference.writers import FORMATS, parse_formats

NAME = "predict"
HELP = "Predict depth for an image pair, a folder of frames or a video (npy, 16-bit PNG, colour, MP4, PLY)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--pair", nargs=2, metavar=("PREV", "TARGET"), help="two images: previous frame, target frame")
    what.add_argument("--input", metavar="PATH", help="a folder of frames (or of such folders) or a video file")
    parser.add_argument("--checkpoint", metavar="PATH", help="mfdepth checkpoint (required unless --onnx is given)")
    parser.add_argument("--out", metavar="DIR", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--formats", default="npy,png16,color",
                        help=f"comma-separated subset of {','.join(FORMATS)}, or all (default: npy,png16,color)")
    parser.add_argument("--intrinsics", metavar="FILE",
                        help="K as YAML/JSON (fx, fy, cx, cy or a 3x3 K, pixels or normalised) or 9 numbers")
    parser.add_argument("--focal", type=float, metavar="PX", help="focal length in pixels (principal point centred)")
    parser.add_argument("--network", default="auto", choices=["auto", "multi", "single"],
                        help="multi-frame net (default when present) or the single-frame net")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--onnx", metavar="PATH", help="ONNX model for --backend onnx (default: export the checkpoint)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 or auto (torch backend)")
    parser.add_argument("--stride", type=int, default=1, help="use every n-th frame of a folder or video")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mfdepth.errors import UserError
    from mfdepth.inference.pipeline import predict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        formats = parse_formats(args.formats)
    except ValueError as err:
        raise UserError(f"--formats: {err}") from None
    if args.onnx and args.backend != "onnx":
        raise UserError("--onnx needs --backend onnx")
    if args.focal is not None and args.intrinsics:
        raise UserError("give either --intrinsics or --focal, not both")
    if args.focal is not None and not (math.isfinite(args.focal) and args.focal > 0):
        raise UserError(f"--focal: {args.focal} is not a focal length; give a positive number of pixels")
    predict(
        args.checkpoint, args.out, formats, pair=args.pair, input_path=args.input, stride=args.stride,
        intrinsics_file=args.intrinsics, focal_px=args.focal, network=args.network, backend=args.backend,
        onnx_path=args.onnx, device=args.device, threads=args.threads, progress=not args.quiet, report=print,
    )
    return 0
