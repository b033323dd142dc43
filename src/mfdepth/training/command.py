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


RESUMABLE_MODEL_CHANGES = ("pretrained_weights",)
"""Model settings a run may change between calls (they only initialise a network that is then trained)."""


def check_resume(config, stages: tuple[str, ...]) -> None:
    """Refuse, before anything in the run directory is rewritten, to resume or reuse checkpoints of ``stages``
    that were trained with other model settings (mixing architectures silently, or failing with a
    size-mismatch traceback); the encoder depth, which every later stage inherits, must match for every
    checkpoint of the run."""
    from mfdepth.checkpoint import load_checkpoint
    from mfdepth.config import to_dict
    from mfdepth.errors import UserError
    from mfdepth.run_layout import checkpoint_paths

    new = to_dict(config)["model"]
    for stage in STAGES:
        for path in checkpoint_paths(config.run_dir, stage):
            if not path.is_file():
                continue
            old = load_checkpoint(path, mmap=True)["meta"].get("config", {}).get("model", {})
            keys = [k for k in new if k not in RESUMABLE_MODEL_CHANGES] if stage in stages else ["encoder_layers"]
            changed = [k for k in keys if k in old and old[k] != new[k]]
            if changed:
                key = changed[0]
                raise UserError(
                    f"{path} was trained with model.{key}={old[key]!r}, not {new[key]!r}: drop the change to resume "
                    f"this run (its config.yaml is unchanged), or give a new --run-dir for the changed model"
                )
            break


def add_arguments(parser) -> None:
    parser.add_argument(
        "--stage", default="all", choices=["all", *STAGES],
        help="which stage to run; finished stages are skipped and interrupted ones resume",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def run(args) -> int:
    from mfdepth.training.recipe import run_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = resolve_config(args)
    check_resume(config, STAGES if args.stage == "all" else (args.stage,))
    result = run_stage(args.stage, config, config.run_dir, progress=not args.quiet)
    print(f"{args.stage}: done -> {result}")
    return 0
