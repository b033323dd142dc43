"""Depth labels from classical plane-sweep matching, for the single-frame net's first steps.

Every training sample's target frame is matched against its previous and next frames at the training
resolution, with the two-view pose prior's rotation and translation direction
(:mod:`mfdepth.data.two_view`) and a translation of unit length: the image cost of each depth
hypothesis, averaged over the cells of the 1/4 grid (:func:`mfdepth.models.cost_volume.pooled_cost_volume`),
gives each cell a lowest-cost depth *in units of the translation's length*. A cell is labelled where
the match is trustworthy: both matches reliable, the two depths agreeing after one per-image ratio
(the two translations' lengths differ), neither at the end of the hypothesis range, and the match
among the sharpest of the image. Training compares the label with the predicted depth up to one
scale per image (``losses.stereo_prior_loss``): the labels teach how depths compare, the photometric
loss and the pose keep setting the scale.

Nothing here learns: the labels are computed once per run directory and cached beside the pose prior.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfdepth.data.errors import DataError
from mfdepth.data.files import save_npz_atomically, table_rows
from mfdepth.models.cost_volume import finish_cost_volume, pooled_cost_volume

log = logging.getLogger(__name__)

CELL = 4
"""Labels live on the 1/4 grid, where full-resolution matching pooled over cells is accurate
(docs/convergence.md, failure 6)."""


def stereo_depth_labels(
    target: torch.Tensor,
    previous: torch.Tensor,
    following: torch.Tensor,
    T_previous: torch.Tensor,
    T_following: torch.Tensor,
    K: torch.Tensor,
    *,
    bins: int = 96,
    near: float = 1.0,
    far: float = 200.0,
    agreement: float = 0.2,
    keep_sharpest: float = 0.5,
    identity_margin: float | None = None,
) -> torch.Tensor:
    """Plane-sweep depth labels of one batch.

    Args:
        target, previous, following: ``(B, 3, H, W)`` images in [0, 1]; H and W multiples of 4.
        T_previous, T_following: ``(B, 4, 4)`` ``T_source_target`` with translations of unit length.
        K: ``(B, 3, 3)`` intrinsics in pixels of the images.
        bins, near, far: hypotheses spaced evenly in log depth between ``near`` and ``far`` translation lengths.
        agreement: largest relative difference between the two matches (after the per-image ratio).
        keep_sharpest: fraction of the agreeing cells kept, the sharpest matches ((mean - min) / mean cost).
        identity_margin: when given, a cell whose unwarped source matches within ``1 + identity_margin``
            times its best hypothesis's cost is left unlabelled (an auto-mask: what moves with the camera,
            or barely moves at all, has no parallax to measure).
    Returns:
        ``(B, 1, H/4, W/4)`` depth in units of ``T_previous``'s translation length; 0 where unlabelled.
    """
    b = target.shape[0]
    depths = torch.exp(torch.linspace(math.log(near), math.log(far), bins, dtype=target.dtype)).expand(b, bins)
    matches = []
    for source, T in ((previous, T_previous), (following, T_following)):
        cost, valid = pooled_cost_volume(target, source, T, K, depths, CELL)
        filled, depth, reliable = finish_cost_volume(cost, valid, depths)
        mean = filled.mean(dim=1, keepdim=True)
        sharpness = (mean - filled.amin(dim=1, keepdim=True)) / mean.clamp_min(1e-6)
        inside = (depth > depths[:, :1, None, None] * 1.001) & (depth < depths[:, -1:, None, None] * 0.999)
        ok = (reliable > 0) & inside
        if identity_margin is not None:
            identity = F.avg_pool2d((target - source).abs().mean(dim=1, keepdim=True), CELL)
            ok = ok & (filled.amin(dim=1, keepdim=True) * (1.0 + identity_margin) < identity)
        matches.append((depth, ok, sharpness))
    (depth_p, ok_p, sharp_p), (depth_f, ok_f, sharp_f) = matches
    return select_labels(depth_p, depth_f, ok_p & ok_f, torch.minimum(sharp_p, sharp_f), agreement, keep_sharpest)


def select_labels(depth_previous: torch.Tensor, depth_following: torch.Tensor, both: torch.Tensor,
                  sharpness: torch.Tensor, agreement: float, keep_sharpest: float, min_cells: int = 8) -> torch.Tensor:
    """The labels of :func:`stereo_depth_labels` from its two matches, all images at once.

    Args:
        depth_previous, depth_following: ``(B, 1, h, w)`` lowest-cost depths of the two matches.
        both: ``(B, 1, h, w)`` bool, cells where both matches are usable.
        sharpness: ``(B, 1, h, w)`` the weaker match's sharpness.
        agreement, keep_sharpest: as in :func:`stereo_depth_labels`.
        min_cells: an image with fewer usable (or agreeing) cells gets no label.
    Returns:
        ``(B, 1, h, w)`` ``depth_previous`` where labelled, else 0. The two depths are compared after
        one per-image ratio, the median over the usable cells (the translations' lengths differ).
    """
    nan = torch.full_like(depth_previous, float("nan"))
    log_ratio = torch.log(depth_previous) - torch.log(depth_following)
    offset = torch.nanmedian(torch.where(both, log_ratio, nan).flatten(1), dim=1).values
    agree = both & ((log_ratio - offset[:, None, None, None]).abs() < math.log1p(agreement))
    threshold = torch.nanquantile(torch.where(agree, sharpness, nan).flatten(1).float(), 1.0 - keep_sharpest, dim=1)
    enough = (both.flatten(1).sum(1) >= min_cells) & (agree.flatten(1).sum(1) >= min_cells)
    keep = agree & (sharpness >= threshold[:, None, None, None].to(sharpness.dtype)) & enough[:, None, None, None]
    return torch.where(keep, depth_previous, torch.zeros_like(depth_previous))


def stereo_prior_table(dataset, pose_table: dict, batch_size: int = 8, progress: bool = False,
                       identity_margin: float | None = None) -> dict:
    """Labels of :func:`stereo_depth_labels` for every sample of ``dataset`` (frames as stored, unflipped).

    ``pose_table`` is the dataset's two-view pose prior (:func:`mfdepth.data.two_view.pose_prior_table`);
    samples whose prior lacks the previous or the next frame get no label; ``identity_margin`` is
    :func:`stereo_depth_labels`'s. Returns ``{"ids": (N,) str, "depth": (N, 1, H/4, W/4) float32,
    "identity_margin": () float32 (NaN = none)}``.
    """
    offsets = [int(o) for o in pose_table["offsets"]]
    if -1 not in offsets or 1 not in offsets:
        raise DataError(f"the stereo prior needs the previous and next frames: data.frame_offsets has {offsets}")
    if dataset.height % CELL or dataset.width % CELL:
        raise DataError(f"the stereo prior needs a size divisible by {CELL}, got {dataset.height}x{dataset.width}")
    index = {sample_id: i for i, sample_id in enumerate(pose_table["ids"])}
    position = [dataset.offsets.index(o) for o in (0, -1, 1)]
    labels = []
    chunks = range(0, len(dataset.records), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="stereo prior", dynamic_ncols=True)
    for start in chunks:
        records = dataset.records[start:start + batch_size]
        frames, Ks, poses, valid = [], [], [], []
        for record in records:
            pixels = [dataset.training_frame(record.frames[p]) for p in position]
            frames.append(torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
                                       for image, _ in pixels]))
            height, width = pixels[0][1]
            Ks.append(dataset.network_intrinsics(record, (width, height)))
            row = index[record.sample_id]
            poses.append(torch.from_numpy(pose_table["poses"][row][[offsets.index(-1), offsets.index(1)]]))
            valid.append(bool(pose_table["valid"][row][offsets.index(-1)] and pose_table["valid"][row][offsets.index(1)]))
        frames, K, poses = torch.stack(frames), torch.stack(Ks), torch.stack(poses).float()
        with torch.no_grad():
            batch_labels = stereo_depth_labels(frames[:, 0], frames[:, 1], frames[:, 2], poses[:, 0], poses[:, 1], K,
                                               identity_margin=identity_margin)
        batch_labels[~torch.tensor(valid)] = 0.0
        labels.append(batch_labels)
    return {"ids": np.array(dataset.sample_ids), "depth": torch.cat(labels).numpy().astype(np.float32),
            "identity_margin": np.float32(np.nan if identity_margin is None else identity_margin)}


def load_or_compute_stereo_priors(dataset, pose_table: dict, cache_path: str | Path, progress: bool = False,
                                  identity_margin: float | None = None) -> dict:
    """The table of :func:`stereo_prior_table`, read from ``cache_path`` when it is for the same samples,
    size and ``identity_margin``."""
    cache_path = Path(cache_path)
    shape = (dataset.height // CELL, dataset.width // CELL)
    if cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as data:
                table = {k: data[k] for k in ("ids", "depth", "identity_margin")}
            cached_margin = None if np.isnan(table["identity_margin"]) else float(table["identity_margin"])
            same_margin = (cached_margin is None) == (identity_margin is None) and (
                identity_margin is None or math.isclose(cached_margin, identity_margin, rel_tol=1e-6))
            if list(table["ids"]) == dataset.sample_ids and tuple(table["depth"].shape[-2:]) == shape and same_margin:
                return table
            log.info("stereo prior cache %s is for other samples, another size or filter; recomputing", cache_path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("stereo prior cache %s is unreadable (%s); recomputing", cache_path, err)
    table = stereo_prior_table(dataset, pose_table, progress=progress, identity_margin=identity_margin)
    save_npz_atomically(cache_path, table)
    labelled = float((table["depth"] > 0).mean())
    log.info("stereo prior: %.0f%% of the 1/4-grid cells labelled", 100 * labelled)
    return table


def attach_stereo_priors(dataset, table: dict) -> None:
    """Give ``dataset`` the labels so each Sample carries ``stereo_depth`` ``(1, H/4, W/4)`` (0 = none)."""
    order = table_rows(table["ids"], dataset.sample_ids, "stereo prior")
    dataset.stereo_priors = torch.from_numpy(np.ascontiguousarray(table["depth"][order]))
