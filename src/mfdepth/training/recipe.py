"""The staged recipe of docs/METHOD.md: pretrain -> masks -> teacher -> student.

Each stage reads what the previous one wrote in the run directory and writes its own checkpoint;
each is resumable and can be run on its own. A stage whose input is missing says which command
produces it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mfdepth import losses, run_layout
from mfdepth import masks as mask_rules
from mfdepth.checkpoint import MULTI, POSE, TEACHER, CheckpointError, load_checkpoint, restore_networks
from mfdepth.config import Config, mask_depth_source, save_config, stereo_prior_unavailable, to_dict
from mfdepth.data import build_dataset, mask_path_for
from mfdepth.data.base import collate_samples
from mfdepth.data.camera import camera_meta
from mfdepth.data.loading import loader_workers
from mfdepth.data.two_view import attach_pose_priors, load_or_compute_pose_priors
from mfdepth.devices import resolve_device
from mfdepth.errors import UserError
from mfdepth.evaluation.metrics import MaskQualityAccumulator
from mfdepth.run_layout import (
    STAGES,
    checkpoint_paths,
    final_checkpoint,
    mask_summary_path,
    masks_dir,
    pose_prior_path,
    stereo_prior_path,
)
from mfdepth.training import loop
from mfdepth.training.stages import (
    PretrainStage,
    StudentStage,
    TeacherStage,
    predict_poses,
    seeded,
)

log = logging.getLogger(__name__)



class MissingStageError(FileNotFoundError):
    """A stage needs the output of an earlier one."""


def _need(path: Path, what: str, run_dir: Path, stage: str) -> Path:
    if not path.exists():
        raise MissingStageError(
            f"{what} not found at {path}; run `mfdepth train --run-dir {run_dir} --stage {stage}` first"
        )
    return path


def training_dataset(config: Config, run_dir: Path, with_masks: bool, progress: bool = False,
                     stereo_labels: str | None = None):
    """The augmented training split, with the depth inconsistency masks, the two-view pose prior and the
    plane-sweep depth labels (when the config key ``stereo_labels``, e.g. ``stereo_prior_steps``, of
    ``train`` is > 0), each computed once and cached in the run directory, when the config uses them."""
    mask_dir = masks_dir(run_dir) if with_masks else None
    dataset = build_dataset(config.data, "train", augment=True, mask_dir=mask_dir, seed=config.train.seed)
    label_steps = getattr(config.train, stereo_labels) if stereo_labels else 0
    wants_labels = label_steps > 0
    unavailable = stereo_prior_unavailable(config) if wants_labels else None
    if unavailable:
        log.warning("train.%s=%d: training without the plane-sweep labels, %s; set train.%s=0 to say so",
                    stereo_labels, label_steps, unavailable, stereo_labels)
    if config.train.pose_prior_steps > 0:
        pose_table = load_or_compute_pose_priors(dataset, pose_prior_path(run_dir), progress)
        attach_pose_priors(dataset, pose_table)
        if wants_labels and not unavailable:
            from mfdepth.training.stereo_prior import attach_stereo_priors, load_or_compute_stereo_priors

            labels = load_or_compute_stereo_priors(dataset, pose_table, stereo_prior_path(run_dir), progress,
                                                   identity_margin=config.train.stereo_prior_identity_margin)
            attach_stereo_priors(dataset, labels)
    return dataset


def prepare_run_dir(config: Config, run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_layout.config_path(run_dir))
    return run_dir


def _fit(stage, dataset, config: Config, run_dir: Path, steps: int, fit_kwargs: dict) -> Path:
    """:func:`loop.fit` with the training camera stored in every checkpoint (prediction reads it there)."""
    return loop.fit(stage, dataset, config, run_dir, steps, extra_meta=camera_meta(config.data), **fit_kwargs)


def run_pretrain(config: Config, run_dir: Path, **fit_kwargs) -> Path:
    with seeded(config.train.seed):
        stage = PretrainStage(config)
    dataset = training_dataset(config, run_dir, with_masks=False, stereo_labels="stereo_prior_steps")
    return _fit(stage, dataset, config, run_dir, config.train.pretrain_steps, fit_kwargs)


def _masks_wanted(config: Config) -> bool:
    """The masks (and the robust teacher trained with them) are needed by the masked loss and by robust
    distillation; without either, the teacher stage trains a plain teacher for the same steps."""
    return config.loss.dynamic_mask or config.loss.distillation


def planned_stages(config: Config) -> tuple[str, ...]:
    """The stages ``--stage all`` runs for ``config``, in order: all of :data:`STAGES`, less the masks when
    nothing uses them."""
    return tuple(name for name in STAGES if name != "masks" or _masks_wanted(config))


def run_teacher(config: Config, run_dir: Path, **fit_kwargs) -> Path:
    """The frozen teacher of the student: the robust S* (trained without the depth inconsistency
    mask's dynamic pixels) when the recipe uses the masks, else S0 trained on for the same number of
    steps without them, so every row of an ablation gives each network the same number of steps."""
    pretrain = load_checkpoint(
        _need(final_checkpoint(run_dir, "pretrain"), "pretrain checkpoint", run_dir, "pretrain")
    )
    with_masks = _masks_wanted(config)
    if with_masks:
        _need(mask_summary_path(run_dir), "depth inconsistency masks", run_dir, "masks")
    with seeded(config.train.seed):
        stage = TeacherStage(config)
    stage.start_from(pretrain["models"])
    dataset = training_dataset(config, run_dir, with_masks=with_masks, stereo_labels="stereo_prior_teacher_steps")
    return _fit(stage, dataset, config, run_dir, config.train.teacher_steps, fit_kwargs)


def run_student(config: Config, run_dir: Path, **fit_kwargs) -> Path:
    pretrain = load_checkpoint(
        _need(final_checkpoint(run_dir, "pretrain"), "pretrain checkpoint", run_dir, "pretrain")
    )
    with_masks = _masks_wanted(config)
    if with_masks:
        _need(mask_summary_path(run_dir), "depth inconsistency masks", run_dir, "masks")
    teacher = load_checkpoint(
        _need(final_checkpoint(run_dir, "teacher"), "teacher checkpoint", run_dir, "teacher")
    )
    with seeded(config.train.seed):
        stage = StudentStage(config)
    stage.start_from(teacher["models"][TEACHER], teacher["models"][POSE], pretrain["models"][MULTI])
    dataset = training_dataset(config, run_dir, with_masks=with_masks, stereo_labels="stereo_prior_student_steps")
    return _fit(stage, dataset, config, run_dir, config.train.student_steps, fit_kwargs)


def _pretrain_networks(config: Config, run_dir: Path, device):
    path = _need(final_checkpoint(run_dir, "pretrain"), "pretrain checkpoint", run_dir, "pretrain")
    stage = PretrainStage(config)
    restore_networks(load_checkpoint(path, map_location=device), stage.saved_networks(), path)
    return stage.to(device).eval()


@torch.no_grad()
def run_masks(config: Config, run_dir: Path, progress: bool = True) -> dict:
    """Write one depth inconsistency mask per training frame (METHOD.md) and a quality summary.

    Masks are PNGs (0/255) at the training resolution under ``<run_dir>/masks``, at the path the data
    layer reads them from. The summary (``masks/summary.json``) holds the fraction of pixels masked
    and, where the data has true motion masks, IoU / precision / recall against them.
    """
    device = resolve_device(config.train.accelerator, "train.accelerator")
    nets = _pretrain_networks(config, run_dir, device)
    dataset = build_dataset(config.data, "train", augment=False, seed=config.train.seed)
    loader = DataLoader(
        dataset, batch_size=config.train.batch_size, num_workers=loader_workers(config.data.num_workers, device.type),
        collate_fn=collate_samples,
    )
    out_dir = masks_dir(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mcfg = config.masks
    quality, undilated_quality = MaskQualityAccumulator(), MaskQualityAccumulator()
    masked_pixels, total_pixels, frames, frames_with_truth, standing_frames = 0, 0, 0, 0, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="masks", dynamic_ncols=True)
    standing_check = mcfg.standing_camera_fraction > 0
    depth_source, unavailable = mask_depth_source(config)
    if unavailable:
        log.warning("masks.depth_source=%s: D_o is M0's output, %s; set masks.depth_source=%s to say so",
                    mcfg.depth_source, unavailable, depth_source)
    two_way = depth_source == "two_way_match"
    every_source = standing_check or two_way
    for batch in loader:
        batch = loop.move_to_device(batch, device)
        _, target, _, sources, K, _ = nets.unpack(batch)
        # The standing-camera check and the two-way match need every source's pose; M0 only the previous frame's.
        poses = predict_poses(nets.pose, target, sources if every_source else {-1: sources[-1]})
        single_out = nets.single(target)
        multi_out = nets.multi(target, sources[-1], poses[-1], K)
        depth_multi = nets.scaled(multi_out, K)["depth"][0]
        depth_single = nets.scaled(single_out, K)["depth"][0]
        if two_way:
            match_next = nets.multi(target, sources[1], poses[1], K)["cost_volume_depth"]
            matched = mask_rules.two_way_match_depth(
                multi_out["depth"][0], single_out["depth"][0], multi_out["cost_volume_depth"], match_next,
                target, sources, poses, K, config.loss.ssim_weight)
            # D_o takes M0's scale normalisation (a factor per image), D_r its own.
            depth_multi = matched * depth_multi / multi_out["depth"][0]
        kept = None
        if standing_check:
            kept = losses.automask_of(target, sources, depth_single, poses, K, config.loss.ssim_weight)
            standing_frames += int(mask_rules.standing_camera(kept, mcfg.standing_camera_fraction).sum())
        # Dilated after the rule (the same order as compute_dynamic_mask's) so that the summary can score the
        # rule's own flags too: the dilation widens them on purpose, for the stages that read the masks.
        flagged = mask_rules.compute_dynamic_mask(depth_multi, depth_single, K,
                                                  **{**mask_rules.rule_settings(mcfg), "dilation": 0},
                                                  automask_kept=kept)
        dynamic = mask_rules.dilate(flagged, mcfg.dilation)
        for i, sample_id in enumerate(batch["id"]):
            path = mask_path_for(out_dir, sample_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((dynamic[i, 0].cpu().numpy() * 255).astype(np.uint8)).save(path)
        total_pixels += dynamic.numel()
        masked_pixels += int(dynamic.sum())
        frames += dynamic.shape[0]
        truth = batch.get("motion_mask")
        if truth is not None:
            for predicted, rule_only, true in zip(dynamic.cpu().numpy(), flagged.cpu().numpy(),
                                                  truth.cpu().numpy() > 0.5):
                quality.update(predicted[0], true[0])
                if mcfg.dilation:
                    undilated_quality.update(rule_only[0], true[0])
            frames_with_truth += dynamic.shape[0]
        if bar is not None:
            bar.update(dynamic.shape[0])
    if bar is not None:
        bar.close()

    summary = {
        "frames": frames,
        "masked_fraction": masked_pixels / max(total_pixels, 1),
        "thresholds": {"upper_ratio": mcfg.upper_ratio, "lower_ratio": mcfg.lower_ratio},
        "ground_check": mcfg.ground_check,
        "depth_source": depth_source,
        "standing_camera_fraction": mcfg.standing_camera_fraction,
        "standing_camera_frames": standing_frames,
        "dilation": mcfg.dilation,
    }
    if frames_with_truth:
        # NaN (nothing predicted or nothing true) is stored as null: undefined, not zero.
        summary.update(_quality_entries(quality))
        if mcfg.dilation:
            summary["before_dilation"] = _quality_entries(undilated_quality)
        summary["frames_with_truth"] = frames_with_truth
    mask_summary_path(run_dir).write_text(json.dumps(summary, indent=2))
    return summary


def _quality_entries(quality: MaskQualityAccumulator) -> dict:
    """IoU, precision and recall of an accumulator, NaN (undefined) as None."""
    scores = quality.compute()
    return {k: None if math.isnan(scores[k]) else scores[k] for k in ("iou", "precision", "recall")}


RESUMABLE_MODEL_CHANGES = ("pretrained_weights",)
"""Model settings a run may change between calls (they only initialise a network that is then trained)."""


def check_resume(config, stages: tuple[str, ...]) -> None:
    """Refuse, before anything in the run directory is rewritten, to resume or reuse checkpoints of ``stages``
    that were trained with other model settings (mixing architectures silently, or failing with a
    size-mismatch traceback); the encoder depth, which every later stage inherits, must match for every
    checkpoint of the run."""
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


def train(config: Config, stage: str = "all", progress: bool = True):
    """``mfdepth train``: refuse checkpoints of the run trained with other model settings
    (:func:`check_resume`), then :func:`run_stage` ``stage`` in ``config.run_dir``."""
    check_resume(config, STAGES if stage == "all" else (stage,))
    return run_stage(stage, config, config.run_dir, progress=progress)


def write_masks(config: Config, progress: bool = True) -> dict:
    """``mfdepth masks``: the masks stage alone in ``config.run_dir`` (after :func:`check_resume` of the
    pretrain checkpoint it reads), whether or not its masks are current; returns the summary."""
    check_resume(config, ("pretrain",))
    run_dir = prepare_run_dir(config, config.run_dir)
    return run_masks(config, run_dir, progress=progress)


def run_stage(stage: str, config: Config, run_dir: str | Path, **fit_kwargs):
    """Run one stage (or ``all``) in ``run_dir``; completed stages are skipped, interrupted ones resume."""
    run_dir = prepare_run_dir(config, run_dir)
    if stage == "all":
        results = {}
        for name in planned_stages(config):
            results[name] = run_stage(name, config, run_dir, **fit_kwargs)
        return results
    if stage == "pretrain":
        return run_pretrain(config, run_dir, **fit_kwargs)
    if stage == "masks":
        summary_path = mask_summary_path(run_dir)
        if summary_path.is_file() and _masks_are_current(run_dir):
            return json.loads(summary_path.read_text())
        return run_masks(config, run_dir, progress=fit_kwargs.get("progress", True))
    if stage == "teacher":
        return run_teacher(config, run_dir, **fit_kwargs)
    if stage == "student":
        return run_student(config, run_dir, **fit_kwargs)
    raise ValueError(f"unknown stage '{stage}' (choose from {', '.join(STAGES)} or all)")


def _masks_are_current(run_dir: Path) -> bool:
    """Masks are current when written after the pretrain checkpoint they were computed from."""
    summary = mask_summary_path(run_dir)
    pretrain = final_checkpoint(run_dir, "pretrain")
    try:
        return summary.stat().st_mtime >= pretrain.stat().st_mtime
    except FileNotFoundError:
        return False


__all__ = ["STAGES", "CheckpointError", "MissingStageError", "check_resume", "run_stage", "run_masks", "train",
           "write_masks"]
