"""Evaluate a checkpoint's pose network against true camera poses (the synthetic world has them).

Each test sample's target frame and its previous frame go through the pose net; the prediction is
compared with ``inv(P_previous) @ P_target`` from the sequence's ``gt/poses.txt`` (camera-to-world),
after one median scale over the split (see :func:`relative_pose_errors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfdepth.checkpoint import POSE, CheckpointError, load_checkpoint, restore_networks
from mfdepth.config import apply_overrides, config_from_dict
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.metrics import relative_pose_errors
from mfdepth.models import prepare_for_inference
from mfdepth.models.factory import build_pose
from mfdepth.synth.writer import read_poses


def true_relative_poses(root: str | Path, sample_ids: list[str], offset: int = -1) -> np.ndarray:
    """``(N, 4, 4)`` true ``T_source_target`` (target -> the frame ``offset`` away, by default the previous
    one) for KITTI-style sample ids ``"<folder> <frame> <side>"`` of a world with
    ``<root>/<folder>/gt/poses.txt``."""
    cache: dict[str, np.ndarray] = {}
    out = []
    for sample_id in sample_ids:
        folder, frame = sample_id.split()[:2]
        if folder not in cache:
            path = Path(root) / folder / "gt" / "poses.txt"
            if not path.is_file():
                raise FileNotFoundError(
                    f"true poses not found: {path}; pose evaluation needs a world written by `mfdepth synth`"
                )
            cache[folder] = read_poses(path)
        poses, index = cache[folder], int(frame)
        out.append(np.linalg.inv(poses[index + offset]) @ poses[index])
    return np.stack(out)


def load_pose_net(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """``(pose_net, config)`` of any checkpoint that holds a pose net (pretrain, teacher, student)."""
    state = load_checkpoint(checkpoint, map_location=device)
    meta = state["meta"]
    if POSE not in state["models"]:
        raise CheckpointError(f"{checkpoint} holds no pose network (stage {meta.get('stage')})")
    config = config_from_dict(meta["config"])
    pose = build_pose(config).to(device)
    restore_networks(state, {POSE: pose}, checkpoint)
    prepare_for_inference(pose)
    return pose, config


@torch.no_grad()
def evaluate_poses(checkpoint: str | Path, split: str = "test", overrides=(), device: str = "cpu") -> dict:
    """Relative pose errors of the checkpoint's pose net on ``split`` (frames 0 and -1 of each sample)."""
    pose, config = load_pose_net(checkpoint, device)
    config = apply_overrides(config, list(overrides))
    config.data.frame_offsets = [0, -1]
    dataset = build_dataset(config.data, split, augment=False)
    loader = DataLoader(dataset, batch_size=config.eval.batch_size, collate_fn=collate_samples)
    predicted, ids = [], []
    for batch in loader:
        frames = batch["frames"].to(device)
        predicted.append(pose(frames[:, 0], frames[:, 1], source_is_before=True).cpu().double().numpy())
        ids.extend(batch["id"])
    return relative_pose_errors(np.concatenate(predicted), true_relative_poses(config.data.root, ids))
