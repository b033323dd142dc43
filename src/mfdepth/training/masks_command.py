"""``mfdepth masks``: write the depth inconsistency masks of a run (the recipe's second stage)."""

from __future__ import annotations

import json

from mfdepth.training.command import add_config_arguments, resolve_config

NAME = "masks"
HELP = "Write depth inconsistency masks for every training frame from the pretrain stage's networks."


def add_arguments(parser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args) -> int:
    from mfdepth.training.recipe import write_masks

    summary = write_masks(resolve_config(args), progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0
