"""Evaluate a checkpoint on a dataset split with the field's protocol.

The checkpoint carries its config, so ``evaluate_checkpoint("student.ckpt")`` evaluates on the test
split of the data it was trained on; ``overrides`` point it elsewhere (``data.root=...``).
Multi-frame networks get the previous frame; frames without one are counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfdepth.config import apply_overrides
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.data.loading import loader_workers
from mfdepth.evaluation.protocols import DepthMetricAccumulator, EvaluationResult
from mfdepth.inference.predictor import DepthPredictor
from mfdepth.masks import metric_by_camera_height


@dataclass
class Example:
    """One evaluated frame kept for figures: RGB, ground truth, prediction (network resolution)."""

    sample_id: str
    image: np.ndarray
    depth_gt: np.ndarray | None
    depth_pred: np.ndarray
    motion_mask: np.ndarray | None = None


@dataclass
class Evaluation:
    result: EvaluationResult
    examples: list[Example] = field(default_factory=list)
    network: str = ""
    checkpoint: str = ""


def _count_split_lines(dataset) -> int | None:
    source = Path(str(getattr(dataset, "source", "")))
    if source.is_file():
        return sum(1 for line in source.read_text().splitlines() if line.strip())
    return None


@torch.no_grad()
def evaluate_checkpoint(
    checkpoint: str | Path,
    network: str = "auto",
    split: str = "test",
    overrides: list[str] | tuple[str, ...] = (),
    median_scaling: bool | None = None,
    device: str = "cpu",
    keep_examples: int = 0,
    progress: bool = True,
    camera_height: float | None = None,
) -> Evaluation:
    """Predict every frame of ``split`` and score it.

    Args:
        checkpoint: an mfdepth checkpoint; its config names the data and the protocol.
        network: ``multi``, ``single`` or ``auto`` (see :class:`DepthPredictor`).
        overrides: ``key=value`` changes to the checkpoint's config (data.root, eval.protocol, ...).
        median_scaling: None keeps ``eval.median_scaling`` of the config.
        keep_examples: how many frames (evenly spread over the split) to keep for figures.
        camera_height: metres; when given, each prediction is made metric by the ground plane fitted to
            it (:func:`mfdepth.masks.metric_by_camera_height`) and median scaling is off: the errors are
            those of a user who knows only how high the camera is mounted.
    """
    predictor = DepthPredictor(checkpoint, network=network, device=device)
    config = apply_overrides(predictor.config, list(overrides))
    data_cfg = config.data
    data_cfg.frame_offsets = [0, -1] if predictor.is_multi_frame else [0]
    dataset = build_dataset(data_cfg, split, augment=False)
    if not getattr(dataset, "has_depth_gt", True):
        raise ValueError(
            f"split '{data_cfg.split}/{split}' of {data_cfg.root} has no ground-truth depth to evaluate against "
            "(KITTI: run `mfdepth prepare kitti` first)"
        )
    eval_cfg = config.eval
    if camera_height is not None:
        if not camera_height > 0 or not np.isfinite(camera_height):
            raise ValueError(f"camera height must be a positive number of metres, got {camera_height}")
        median_scaling = False
    accumulator = DepthMetricAccumulator(
        protocol=eval_cfg.protocol,
        median_scaling=eval_cfg.median_scaling if median_scaling is None else median_scaling,
        min_depth=eval_cfg.min_depth,
        max_depth=eval_cfg.max_depth,
    )
    # Frames of the split dropped by the dataset because their previous frame does not exist.
    listed = _count_split_lines(dataset)
    without_previous = max(listed - len(dataset), 0) if listed is not None and predictor.is_multi_frame else 0
    for _ in range(without_previous):
        accumulator.update(np.ones((1, 1)), np.ones((1, 1)), has_previous=False)

    keep = set(np.linspace(0, len(dataset) - 1, keep_examples).round().astype(int).tolist()) if keep_examples else set()
    loader = DataLoader(
        dataset, batch_size=eval_cfg.batch_size, num_workers=min(loader_workers(config.data.num_workers, predictor.device.type), 2),
        collate_fn=collate_samples,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=f"evaluate {predictor.network}", dynamic_ncols=True)
    examples: list[Example] = []
    for batch in loader:
        frames, K = batch["frames"], batch["K"][:, 0]
        previous = frames[:, 1] if predictor.is_multi_frame else None
        depth = predictor.predict(frames[:, 0], previous, K)
        if camera_height is not None:
            depth = metric_by_camera_height(depth, K, camera_height)
        depth = depth.cpu().numpy()[:, 0]
        gts = batch["depth_gt"]
        motion = batch.get("motion_mask")
        for i in range(depth.shape[0]):
            gt = np.asarray(gts[i])[0]
            moving = None if motion is None else motion[i, 0].numpy() > 0.5
            accumulator.update(depth[i], gt, motion_mask=moving)
            index = int(batch["index"][i])
            if index in keep:
                image = (frames[i, 0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                examples.append(Example(batch["id"][i], image, gt, depth[i], moving))
        if bar is not None:
            bar.update(depth.shape[0])
    if bar is not None:
        bar.close()
    return Evaluation(accumulator.compute(), examples, predictor.network, str(checkpoint))
