"""``mfdepth train``: run the staged recipe (or one stage) from a YAML config."""

from __future__ import annotations

import logging

NAME = "train"
HELP = "Train the method in stages: pretrain, masks, teacher, student (or all)."


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML recipe (configs/synthetic.yaml, ...)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: run_dir from the config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.batch_size=8")


def resolve_config(args):
    from mfdepth.config import load_config

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    return load_config(args.config, overrides)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--stage", default="all", choices=["all", "pretrain", "masks", "teacher", "student"],
        help="which stage to run; finished stages are skipped and interrupted ones resume",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def run(args) -> int:
    from mfdepth.training.recipe import run_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = resolve_config(args)
    result = run_stage(args.stage, config, config.run_dir, progress=not args.quiet)
    print(f"{args.stage}: done -> {result}")
    return 0
