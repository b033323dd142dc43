"""``mfdepth export``: a checkpoint's network as an ONNX graph, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

NAME = "export"
HELP = "Export a checkpoint's multi-frame (with pose and cost volume) or single-frame network to ONNX."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="mfdepth checkpoint")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--network", default="multi", choices=["multi", "single"],
                        help="multi: target + previous frame + K -> depth (default); single: image -> depth")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mfdepth.checkpoint import CheckpointError
    from mfdepth.inference.onnx_export import DEFAULT_OPSET, PARITY_TOLERANCE, ParityError, export_onnx

    if not Path(args.checkpoint).is_file():
        raise CheckpointError(
            f"checkpoint not found: {args.checkpoint}; give a file written by mfdepth train "
            "(RUN_DIR/checkpoints/<stage>.ckpt)"
        )
    try:
        report = export_onnx(
            args.checkpoint, args.out, network=args.network, opset=args.opset or DEFAULT_OPSET, check=not args.no_check
        )
    except ParityError as err:
        print(f"mfdepth export: parity check failed: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    if report.max_rel_diff is not None:
        print(f"parity check passed (tolerance {PARITY_TOLERANCE:g} relative)")
    return 0
