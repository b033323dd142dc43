"""``mfdepth train``: run the staged recipe (or one stage) from a YAML config."""

from __future__ import annotations

import logging

from mfdepth.run_layout import STAGES

NAME = "train"
HELP = "Train the method in stages: pretrain, masks, teacher, student (or all)."


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML recipe (configs/synthetic.yaml, ...)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: run_dir from the config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.batch_size=8")


def resolve_config(args):
    from pathlib import Path

    from mfdepth.config import load_config
    from mfdepth.errors import UserError

    if args.config and Path(args.config).is_dir():
        raise UserError(f"--config {args.config} is a folder: give a YAML file, e.g. configs/synthetic.yaml")
    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    config = load_config(args.config, overrides)
    weights = config.model.pretrained_weights
    if weights and not Path(weights).is_file():
        raise UserError(
            f"model.pretrained_weights: {weights} not found; give a torchvision ResNet state dict (.pth) or "
            "model.pretrained_weights=null to train from scratch"
        )
    return config


def __getattr__(name: str):
    """``check_resume`` and ``RESUMABLE_MODEL_CHANGES`` live in :mod:`mfdepth.training.recipe` (kept importable
    from here without importing torch when the command line is parsed)."""
    if name in ("check_resume", "RESUMABLE_MODEL_CHANGES"):
        from mfdepth.training import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--stage", default="all", choices=["all", *STAGES],
        help="which stage to run; finished stages are skipped and interrupted ones resume",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def run(args) -> int:
    from mfdepth.training.recipe import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train(resolve_config(args), args.stage, progress=not args.quiet)
    print(f"{args.stage}: done -> {result}")
    return 0
