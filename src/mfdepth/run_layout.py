"""The layout of a run directory: every path a stage, the demo or a benchmark reads or writes in it.

::

    RUN_DIR/
        config.yaml                    the resolved config (rewritten by every `mfdepth train`)
        checkpoints/<stage>.ckpt       final checkpoint: marks the stage done (no optimizer state)
        checkpoints/<stage>-last.ckpt  rolling checkpoint, for resuming (with optimizer state)
        masks/                         depth inconsistency masks (PNG, at mfdepth.data.mask_path_for)
        masks/summary.json             the masks' quality summary; marks the masks stage done
        logs/<stage>/                  TensorBoard
        logs/<stage>.csv               the loss log (see mfdepth.training.loop.read_loss_log)
        pose_prior.npz                 the two-view pose prior, computed once
        stereo_prior.npz               plane-sweep depth labels (train.stereo_prior_steps), computed once
        report/                        the demo's report

Nothing else builds these paths, so a change of layout is a change of this module.
"""

from __future__ import annotations

from pathlib import Path

STAGES = ("pretrain", "masks", "teacher", "student")
"""The recipe's stages in order (``mfdepth.training.recipe``); each writes its outputs here. Defined in
this light module so that the command line can offer them without importing torch."""

CHECKPOINTS = "checkpoints"
MASKS = "masks"
LOGS = "logs"
REPORT = "report"


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "config.yaml"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_paths(run_dir: str | Path, stage: str) -> tuple[Path, Path]:
    """(final checkpoint that marks the stage done, rolling checkpoint used for resuming)."""
    folder = checkpoint_dir(run_dir)
    return folder / f"{stage}.ckpt", folder / f"{stage}-last.ckpt"


def final_checkpoint(run_dir: str | Path, stage: str) -> Path:
    """The checkpoint that marks ``stage`` done (what evaluation, prediction and later stages read)."""
    return checkpoint_paths(run_dir, stage)[0]


def masks_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / MASKS


def mask_summary_path(run_dir: str | Path) -> Path:
    return masks_dir(run_dir) / "summary.json"


def logs_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOGS


def tensorboard_dir(run_dir: str | Path, stage: str) -> Path:
    return logs_dir(run_dir) / stage


def loss_log_path(run_dir: str | Path, stage: str) -> Path:
    return logs_dir(run_dir) / f"{stage}.csv"


def pose_prior_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "pose_prior.npz"


def stereo_prior_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "stereo_prior.npz"


def report_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPORT
