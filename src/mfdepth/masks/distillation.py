"""The robust-distillation masks: the reliability mask, cost-volume inconsistency and the distillation
region."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Robust knowledge distillation


def reliability_mask(pe_teacher: Tensor, pe_student: Tensor) -> Tensor:
    """Where the teacher explains the images at least as well as the student.

    Args:
        pe_teacher: ``(B, 1, H, W)`` minimum reprojection error with the teacher's depth.
        pe_student: ``(B, 1, H, W)`` the same with the student's depth.
    Returns:
        ``(B, 1, H, W)`` bool, True where ``pe_teacher <= pe_student`` (distillation allowed).
    """
    return pe_teacher <= pe_student


def least_sharp(sharpness: Tensor, keep_fraction: float) -> Tensor:
    """The pixels outside each image's ``keep_fraction`` sharpest matches.

    Args:
        sharpness: ``(B, 1, h, w)`` match sharpness (:func:`mfdepth.models.cost_volume.match_sharpness`).
        keep_fraction: in (0, 1]; the share of each image's pixels, sharpest first, that is kept.
    Returns:
        ``(B, 1, h, w)`` bool, True where the match is flatter than the image's ``1 - keep_fraction``
        quantile of sharpness (nothing is True at 1).
    """
    if keep_fraction >= 1.0:
        return torch.zeros_like(sharpness, dtype=torch.bool)
    flat = sharpness.float().flatten(1)
    level = torch.quantile(flat, 1.0 - keep_fraction, dim=1)
    return sharpness.float() < level[:, None, None, None]


def cost_volume_inconsistency(
    cost_volume_depth: Tensor,
    teacher_depth: Tensor,
    low: float = 0.5,
    high: float = 2.0,
    cost_volume_valid: Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """ManyDepth's rule for pixels whose cost volume cannot be trusted.

    Args:
        cost_volume_depth: ``(B, 1, h, w)`` depth of the lowest-cost hypothesis (typically 1/4 resolution).
        teacher_depth: ``(B, 1, H, W)`` the (single-frame) teacher's depth, metres.
        low, high: consistent when ``low <= D_cost / D_teacher <= high`` (ManyDepth: 0.5, 2).
        cost_volume_valid: optional ``(B, 1, h, w)`` bool/float, False/0 where the hypotheses left the
            source image (unreliable).
        size: output ``(H, W)``; default the larger of the two depth maps. Inputs at another size are
            resized with nearest neighbour (no blending of depths across object edges).
    Returns:
        ``(B, 1, H, W)`` bool, True = inconsistent or unreliable (distil there), also where a depth <= 0.
    """
    if size is None:
        size = max(
            tuple(cost_volume_depth.shape[-2:]), tuple(teacher_depth.shape[-2:]), key=lambda s: s[0] * s[1]
        )
    size = tuple(size)

    def resized(x: Tensor) -> Tensor:
        x = x.to(teacher_depth.dtype)
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="nearest")

    cost_depth, teacher = resized(cost_volume_depth), resized(teacher_depth)
    positive = (cost_depth > 0) & (teacher > 0)
    ratio = cost_depth / teacher.clamp(min=1e-12)
    consistent = positive & (ratio >= low) & (ratio <= high)
    if cost_volume_valid is not None:
        consistent = consistent & (resized(cost_volume_valid) > 0.5)
    return ~consistent


def distillation_region(
    cost_volume_inconsistent: Tensor,
    dynamic: Tensor | None = None,
    static_camera: Tensor | None = None,
    reliability: Tensor | None = None,
    reliability_on_dynamic: bool = True,
) -> Tensor:
    """Pixels where the student is distilled from the teacher (METHOD.md, robust knowledge distillation).

    region = (cost_volume_inconsistent OR dynamic OR static_camera[frame]) AND reliability

    The student cannot trust its cost volume there: matching failed (ManyDepth's rule), the object moves
    (the depth inconsistency mask), or the frame pair carries no parallax at all (static camera). The
    reliability term keeps only pixels where the teacher's depth explains the images at least as well as
    the student's. Each optional term that is None is left out (OR-terms add nothing, the AND-term keeps all).

    Args:
        cost_volume_inconsistent: ``(B, 1, H, W)`` bool from :func:`cost_volume_inconsistency`.
        dynamic: ``(B, 1, H, W)`` bool/float depth inconsistency mask (> 0.5 = dynamic).
        static_camera: ``(B,)`` bool, frames whose cost volume saw no camera motion (the source replaced by
            the target during training); the training loop may also pass frames whose cost volume was zeroed.
        reliability: ``(B, 1, H, W)`` bool from :func:`reliability_mask`.
        reliability_on_dynamic: False = the ``dynamic`` pixels are distilled whatever ``reliability`` says (not
            METHOD.md: a static-world warp is no evidence on an object that moves, and on a car driving with
            the camera a too-far depth warps best).
    Returns:
        ``(B, 1, H, W)`` bool, True = distil.
    """
    region = cost_volume_inconsistent.bool()
    if dynamic is not None:
        region = region | (dynamic.to(torch.float32) > 0.5)
    if static_camera is not None:
        region = region | static_camera.bool().reshape(-1, 1, 1, 1)
    if reliability is not None:
        region = region & reliability.bool()
        if not reliability_on_dynamic and dynamic is not None:
            region = region | (dynamic.to(torch.float32) > 0.5)
    return region


def standing_camera(automask_kept: Tensor, fraction: float) -> Tensor:
    """Frames whose camera stands, told from the images alone.

    Monodepth2's auto-mask drops a pixel whose unwarped source frame matches the target better than the
    warp (:func:`mfdepth.losses.compute_automask`). Where the camera stands, that holds for nearly every
    pixel (0.99-1.00 on the demo world's 13 standing training frames, at most 0.76 on the frames that
    moved 0.35 m or more; ``benchmarks/standing_camera.py``), and no cost volume can tell depths apart.

    Args:
        automask_kept: ``(B, 1, H, W)`` bool, True = kept by the auto-mask (the warp matches better).
        fraction: a frame stands when at least this share of its pixels is dropped; <= 0 = no frame does.
    Returns:
        ``(B,)`` bool.
    """
    if fraction <= 0:
        return torch.zeros(automask_kept.shape[0], dtype=torch.bool, device=automask_kept.device)
    dropped = (~automask_kept.bool()).float().flatten(1).mean(dim=1)
    return dropped >= fraction
