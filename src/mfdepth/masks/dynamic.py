"""The depth inconsistency (dynamic-object) mask: the ratio rule, the full offline rule of the masks
stage, and its quality against true motion masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mfdepth.losses import min_reprojection_error
from mfdepth.masks.distillation import standing_camera
from mfdepth.masks.ground import fit_ground_plane, ground_mask
from mfdepth.masks.morphology import dilate, remove_small_blobs

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Depth inconsistency (dynamic-object) mask


def median_ratio(depth: Tensor, reference: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-image factor ``median(reference) / median(depth)`` over valid pixels (a factor only; the
    evaluation's :func:`mfdepth.evaluation.metrics.median_scale` returns the scaled prediction too).

    Args:
        depth, reference: ``(B, 1, H, W)`` metres.
        valid: ``(B, 1, H, W)`` bool; default: both depths > 0.
    Returns:
        ``(B, 1, 1, 1)`` factors; 1 for an image without valid pixels.
    """
    if valid is None:
        valid = (depth > 0) & (reference > 0)
    b = depth.shape[0]
    nan = torch.full_like(depth, float("nan"))
    med_depth = torch.where(valid, depth, nan).reshape(b, -1).nanmedian(dim=1).values
    med_reference = torch.where(valid, reference, nan).reshape(b, -1).nanmedian(dim=1).values
    scale = med_reference / med_depth
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    return scale.reshape(b, 1, 1, 1)


def depth_inconsistency_mask(
    depth_multi: Tensor,
    depth_single: Tensor,
    upper_ratio: float = 2.0,
    lower_ratio: float = 0.85,
    align_median: bool = True,
    valid: Tensor | None = None,
) -> Tensor:
    """The ratio test of the depth inconsistency mask (METHOD.md step 3).

    Args:
        depth_multi: ``(B, 1, H, W)`` D_o, the multi-frame net's depth, metres.
        depth_single: ``(B, 1, H, W)`` D_r, the single-frame net's depth, metres.
        upper_ratio, lower_ratio: flag where ``D_o > upper * D_r`` or ``D_o < lower * D_r`` (paper: 2, 0.85).
        align_median: first scale D_o per image by ``median(D_r) / median(D_o)`` (over valid pixels).
        valid: ``(B, 1, H, W)`` bool of pixels to consider; default both depths > 0.
    Returns:
        ``(B, 1, H, W)`` bool, True = dynamic; always False outside ``valid``.
    """
    if valid is None:
        valid = (depth_multi > 0) & (depth_single > 0)
    if align_median:
        depth_multi = depth_multi * median_ratio(depth_multi, depth_single, valid)
    too_far = depth_multi > upper_ratio * depth_single
    too_near = depth_multi < lower_ratio * depth_single
    return (too_far | too_near) & valid


# ---------------------------------------------------------------------------------------------
# D_o from the cost volume's matches


def two_way_match_depth(
    depth_multi: Tensor,
    depth_single: Tensor,
    match_previous: Tensor,
    match_next: Tensor,
    target: Tensor,
    sources: Mapping[int, Tensor],
    poses: Mapping[int, Tensor],
    K: Tensor,
    ssim_weight: float = 0.85,
) -> Tensor:
    """D_o of ``masks.depth_source=two_way_match``: the nearer of the multi-frame net's two lowest-cost
    depths, one matched against the previous and one against the next frame, wherever it warps the source
    frames better than the single-frame depth does; the multi-frame net's output elsewhere.

    A car driving with the camera matches far against either neighbour, while a static pixel's false far
    match seldom repeats against the other, so the nearer match is far mostly on the cars; and it shows their
    motion where a multi-frame net trained for few joint steps has not yet learned to follow its cost
    volume there (what METHOD.md's over-fitted M0 would predict; docs/convergence.md, failure 19).

    Args:
        depth_multi, depth_single: ``(B, 1, H, W)`` metres, the multi- and single-frame nets' depths in the
            pose net's units.
        match_previous, match_next: ``(B, 1, h, w)`` metres, the cost volume's lowest-cost depth against
            the previous and against the next frame (resized to ``(H, W)`` by nearest neighbour: no blending
            of depths across object edges).
        target ``(B, 3, H, W)``, sources ``{offset: (B, 3, H, W)}``, poses ``{offset: (B, 4, 4)}``, K
        ``(B, 3, 3)``: the frames the photometric comparison warps (:func:`mfdepth.losses.min_reprojection_error`).
    Returns:
        ``(B, 1, H, W)`` metres.
    """
    size = tuple(depth_multi.shape[-2:])
    nearer = torch.minimum(match_previous, match_next)
    if tuple(nearer.shape[-2:]) != size:
        nearer = F.interpolate(nearer, size=size, mode="nearest")
    offsets = sorted(sources)
    frames, motions = [sources[o] for o in offsets], [poses[o] for o in offsets]
    match_error, _ = min_reprojection_error(target, frames, nearer, motions, K, ssim_weight)
    reference_error, _ = min_reprojection_error(target, frames, depth_single, motions, K, ssim_weight)
    return torch.where(match_error < reference_error, nearer, depth_multi)


# ---------------------------------------------------------------------------------------------
# The full offline rule


def rule_settings(mask_config) -> dict:
    """The keyword arguments of :func:`compute_dynamic_mask` held by a ``MaskConfig`` (all its fields but
    ``depth_source``: which depth is D_o is the caller's choice)."""
    settings = dataclasses.asdict(mask_config)
    settings.pop("depth_source", None)
    return settings


def compute_dynamic_mask(
    depth_multi: Tensor,
    depth_single: Tensor,
    K: Tensor,
    upper_ratio: float = 2.0,
    lower_ratio: float = 0.85,
    align_median: bool = True,
    ground_check: bool = True,
    camera_height: float | None = None,
    ground_tolerance: float = 0.15,
    min_blob_area: int = 0,
    dilation: int = 0,
    standing_camera_fraction: float = 0.0,
    automask_kept: Tensor | None = None,
    valid: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The depth inconsistency mask of METHOD.md (steps 3-4); keyword names match ``MaskConfig``.

    ``compute_dynamic_mask(d_multi, d_single, K, **rule_settings(config.masks))`` applies a config.

    1. ratio test (:func:`depth_inconsistency_mask`),
    2. if ``ground_check``: fit the ground plane to D_r's lower region and unflag pixels whose D_r point
       lies on it (:func:`ground_mask`),
    3. drop blobs smaller than ``min_blob_area`` pixels, then dilate by ``dilation`` pixels,
    4. if ``standing_camera_fraction`` > 0: empty the mask of every frame whose camera stands by
       :func:`mfdepth.masks.standing_camera` on ``automask_kept`` (no parallax: M0's depth says nothing).

    Args:
        depth_multi: ``(B, 1, H, W)`` D_o (multi-frame net), metres.
        depth_single: ``(B, 1, H, W)`` D_r (single-frame net), metres.
        K: ``(B, 3, 3)`` intrinsics in pixels of the depth maps.
        automask_kept: ``(B, 1, H, W)`` bool, Monodepth2's auto-mask of D_r (True = the warp matches better
            than the unwarped sources); needed when ``standing_camera_fraction`` > 0.
        valid: optional ``(B, 1, H, W)`` bool of pixels considered by the ratio test.
        generator: random source of the plane fit (default: fixed seed).
    Returns:
        ``(B, 1, H, W)`` bool, True = dynamic (excluded from the photometric loss downstream).
    """
    dynamic = depth_inconsistency_mask(
        depth_multi, depth_single, upper_ratio, lower_ratio, align_median, valid
    )
    if ground_check:
        plane = fit_ground_plane(depth_single, K, generator=generator)
        on_ground = ground_mask(depth_single, K, plane, ground_tolerance, camera_height)
        dynamic = dynamic & ~on_ground
    dynamic = dilate(remove_small_blobs(dynamic, min_blob_area), dilation)
    if standing_camera_fraction > 0:
        if automask_kept is None:
            raise ValueError("standing_camera_fraction > 0 needs automask_kept, the auto-mask of the single-frame "
                             "depth (mfdepth.losses.automask_of)")
        dynamic = dynamic & ~standing_camera(automask_kept, standing_camera_fraction)[:, None, None, None]
    return dynamic


# ---------------------------------------------------------------------------------------------
# Quality against ground-truth motion masks


def mask_quality(pred: Tensor, truth: Tensor, valid: Tensor | None = None) -> dict[str, float]:
    """IoU, precision and recall of a predicted mask against a true one, pooled over all pixels given.

    Args:
        pred, truth: bool / {0, 1} tensors of one shape, e.g. ``(B, 1, H, W)``; True = moving.
        valid: optional bool of the pixels to count.
    Returns:
        ``{"iou", "precision", "recall"}`` as floats in [0, 1]. Empty cases: with no predicted pixels
        precision is 1 (no false alarm); with no true pixels recall is 1 (nothing missed); with neither,
        IoU is 1 (perfect agreement). The masks stage's summary and the evaluation use
        :class:`mfdepth.evaluation.metrics.MaskQualityAccumulator` instead, which pools NumPy masks over a
        split and reports these undefined ratios as NaN.
    """
    pred, truth = pred.bool(), truth.bool()
    if valid is not None:
        pred, truth = pred & valid.bool(), truth & valid.bool()
    true_positive = (pred & truth).sum().item()
    predicted = pred.sum().item()
    actual = truth.sum().item()
    union = (pred | truth).sum().item()
    return {
        "iou": true_positive / union if union else 1.0,
        "precision": true_positive / predicted if predicted else 1.0,
        "recall": true_positive / actual if actual else 1.0,
    }
