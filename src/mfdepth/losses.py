"""Self-supervised losses: SSIM, photometric error, minimum reprojection, auto-masking, smoothness, distillation.

Every function is pure: tensors in, tensors out, no state. Shapes follow ``docs/design.md``: images
``(B, 3, H, W)`` in [0, 1], depth ``(B, 1, H, W)`` in metres, intrinsics ``(B, 3, 3)`` in pixels of the
tensor they go with, poses ``T_source_target`` ``(B, 4, 4)``.

The composite :func:`self_supervised_loss` is what the training loop calls, so that the loop itself holds
no maths: it warps the source frames with every decoder scale's depth (upsampled to full size, as in
Monodepth2), takes the per-pixel minimum photometric error over the sources, applies auto-masking and an
optional exclusion mask (the depth inconsistency mask), and adds edge-aware smoothness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mfdepth.geometry import full_precision, inverse_warp, scale_intrinsics

Tensor = torch.Tensor

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def box_mean_3x3(x: Tensor) -> Tensor:
    """Mean over every 3x3 window ("valid" positions): ``(B, C, H, W)`` -> ``(B, C, H-2, W-2)``.

    The same numbers as ``F.avg_pool2d(x, 3, 1)``, as two separable passes of shifted-slice sums:
    on the CPU this runs about 9x faster forward and 3x faster with its backward (the SSIM's five
    window means were a fifth of a training step's time).
    """
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) * (1.0 / 9.0)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity map over 3x3 windows.

    Args:
        x, y: ``(B, C, H, W)`` images in [0, 1].
    Returns:
        ``(B, C, H, W)`` SSIM per pixel and channel, 1 where the windows are identical (at most 1; it can
        be negative for anti-correlated windows). Windows are mean-pooled (uniform weights) over a
        reflection-padded image, with ``C1 = 0.01**2`` and ``C2 = 0.03**2`` (Monodepth2's choice).
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = box_mean_3x3(x)
    mu_y = box_mean_3x3(y)
    sigma_x = box_mean_3x3(x * x) - mu_x * mu_x
    sigma_y = box_mean_3x3(y * y) - mu_y * mu_y
    sigma_xy = box_mean_3x3(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + SSIM_C1) * (2.0 * sigma_xy + SSIM_C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def ssim_dissimilarity(x: Tensor, y: Tensor) -> Tensor:
    """Loss-ready SSIM: ``(1 - SSIM) / 2`` clamped to [0, 1]. ``(B, C, H, W)`` in, ``(B, C, H, W)`` out; 0 = identical."""
    return ((1.0 - ssim(x, y)) / 2.0).clamp(0.0, 1.0)


def photometric_error(pred: Tensor, target: Tensor, ssim_weight: float = 0.85) -> Tensor:
    """Per-pixel photometric error ``w * (1 - SSIM) / 2 + (1 - w) * |pred - target|``.

    Args:
        pred, target: ``(B, C, H, W)`` images in [0, 1].
        ssim_weight: ``w``, the weight of the SSIM term (0.85 in Monodepth2 and the paper).
    Returns:
        ``(B, 1, H, W)`` error averaged over channels, >= 0, 0 for identical images.
    """
    l1 = (pred - target).abs().mean(dim=1, keepdim=True)
    if ssim_weight == 0:
        return l1
    structural = ssim_dissimilarity(pred, target).mean(dim=1, keepdim=True)
    return ssim_weight * structural + (1.0 - ssim_weight) * l1


def min_over_sources(errors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-pixel minimum of per-source errors (Monodepth2's minimum reprojection).

    Args:
        errors: one ``(B, 1, H, W)`` error map per source frame (at least one).
    Returns:
        ``(minimum, index)``: ``(B, 1, H, W)`` smallest error, and ``(B, 1, H, W)`` long index of the source
        that gave it (the first one on ties).
    """
    if len(errors) == 0:
        raise ValueError("min_over_sources needs at least one error map")
    stacked = torch.cat(list(errors), dim=1)
    minimum, index = stacked.min(dim=1, keepdim=True)
    return minimum, index


def compute_automask(reprojection_error: Tensor, identity_error: Tensor) -> Tensor:
    """Monodepth2's auto-mask as an explicit boolean map.

    Args:
        reprojection_error: ``(B, 1, H, W)`` minimum over sources of pe(warped source, target).
        identity_error: ``(B, 1, H, W)`` minimum over sources of pe(unwarped source, target).
    Returns:
        ``(B, 1, H, W)`` bool, True where the pixel is KEPT: the warped sources explain the target strictly
        better than the unwarped ones. Ties count as not kept, which ignores a static camera (source ==
        target) deterministically; Monodepth2 breaks the same ties with random noise instead.
    """
    return reprojection_error < identity_error


def automask_of(target: Tensor, sources, depth: Tensor, poses, K: Tensor, ssim_weight: float = 0.85) -> Tensor:
    """:func:`compute_automask` for one depth map: ``(B, 1, H, W)`` bool, True where the sources warped with
    ``depth`` and ``poses`` match the target strictly better than the unwarped sources (arguments as in
    :func:`min_reprojection_error`)."""
    reprojection, _ = min_reprojection_error(target, sources, depth, poses, K, ssim_weight)
    identity = min_over_sources([photometric_error(src, target, ssim_weight) for src in _as_list(sources)])[0]
    return compute_automask(reprojection, identity)


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is True; 0 (graph intact, no NaN) when empty.

    Args:
        values: ``(B, C, H, W)`` (any shape).
        mask: bool or {0, 1} float broadcastable to ``values``; None = every element.
    Returns:
        Scalar tensor.
    """
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    # Dividing by at least 1 keeps an empty mask at exactly 0 while still back-propagating (zero) grads.
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def smoothness_loss(disp: Tensor, image: Tensor) -> Tensor:
    """Edge-aware smoothness of mean-normalised disparity (Monodepth2).

    Args:
        disp: ``(B, 1, H, W)`` disparity (inverse depth, any positive scale).
        image: ``(B, 3, H, W)`` image at the same resolution, in [0, 1].
    Returns:
        Scalar: mean |d disp / dx| * exp(-|d I / dx|) + the same along y, where disparity is divided by its
        per-image mean first so the term cannot be lowered by shrinking the depth scale. 0 for a constant
        disparity.
    """
    norm_disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (norm_disp[:, :, :, :-1] - norm_disp[:, :, :, 1:]).abs()
    grad_disp_y = (norm_disp[:, :, :-1, :] - norm_disp[:, :, 1:, :]).abs()
    grad_img_x = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(dim=1, keepdim=True)
    grad_img_y = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(dim=1, keepdim=True)
    return (grad_disp_x * torch.exp(-grad_img_x)).mean() + (grad_disp_y * torch.exp(-grad_img_y)).mean()


def _as_list(items: Sequence[Tensor] | Mapping) -> list[Tensor]:
    return list(items.values()) if isinstance(items, Mapping) else list(items)


def _full_res_K(K: Tensor) -> Tensor:
    # A Sample carries a (B, S, 3, 3) pyramid; its first entry is the full-resolution K.
    return K[:, 0] if K.dim() == 4 else K


def warp_sources(
    sources: Sequence[Tensor] | Mapping,
    depth: Tensor,
    poses: Sequence[Tensor] | Mapping,
    K: Tensor,
    padding_mode: str = "border",
) -> list[Tensor]:
    """Warp each source frame into the target view.

    Args:
        sources: source images ``(B, 3, H, W)``, a list or a dict (values taken in order).
        depth: ``(B, 1, H, W)`` target depth in metres, at the images' resolution.
        poses: ``T_source_target`` ``(B, 4, 4)`` per source, same order / keys as ``sources``.
        K: ``(B, 3, 3)`` full-resolution intrinsics (or a ``(B, S, 3, 3)`` pyramid: first entry used).
    Returns:
        List of ``(B, 3, H, W)`` warped sources, in the order of ``sources``.
    """
    source_list, pose_list = _as_list(sources), _paired_poses(sources, poses)
    K = _full_res_K(K)
    return [
        inverse_warp(src, depth, T, K, padding_mode=padding_mode)[0] for src, T in zip(source_list, pose_list)
    ]


def _paired_poses(sources, poses) -> list[Tensor]:
    if isinstance(sources, Mapping) and isinstance(poses, Mapping):
        return [poses[key] for key in sources]
    pose_list = _as_list(poses)
    if len(pose_list) != len(_as_list(sources)):
        raise ValueError(f"got {len(_as_list(sources))} source frames but {len(pose_list)} poses")
    return pose_list


def min_reprojection_error(
    target: Tensor,
    sources: Sequence[Tensor] | Mapping,
    depth: Tensor,
    poses: Sequence[Tensor] | Mapping,
    K: Tensor,
    ssim_weight: float = 0.85,
) -> tuple[Tensor, list[Tensor]]:
    """Per-pixel minimum photometric error over the sources warped with one depth map.

    Used for the loss and, without gradients, to compare a teacher's and a student's depth (reliability).

    Args:
        target: ``(B, 3, H, W)``; sources, poses, K: as in :func:`warp_sources`.
        depth: ``(B, 1, h, w)`` metres; upsampled bilinearly to ``(H, W)`` when coarser.
    Returns:
        ``(error, warped)``: ``(B, 1, H, W)`` minimum error, and the list of warped sources.
    """
    depth = _upsample_to(depth, target.shape[-2:])
    warped = warp_sources(sources, depth, poses, K)
    errors = [photometric_error(w, target, ssim_weight) for w in warped]
    return min_over_sources(errors)[0], warped


def _upsample_to(depth: Tensor, size) -> Tensor:
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=False)


def self_supervised_loss(
    target: Tensor,
    sources: Sequence[Tensor] | Mapping,
    depths: Sequence[Tensor],
    poses: Sequence[Tensor] | Mapping,
    K: Tensor,
    *,
    automask: bool = True,
    ssim_weight: float = 0.85,
    smoothness_weight: float = 1e-3,
    exclude_mask: Tensor | None = None,
    full_resolution: bool = True,
) -> dict:
    """The full self-supervised objective over all decoder scales.

    For each scale s, the depth ``(B, 1, H/2^s, W/2^s)`` is upsampled bilinearly to ``(H, W)``, every source
    is warped into the target with it (``inverse_warp``, border padding) and the photometric error is taken
    per pixel as the minimum over the sources. A pixel counts in the scale's masked mean when it is kept by
    the auto-mask (if ``automask``) and not in ``exclude_mask``. With ``full_resolution=False`` each scale
    s > 0 compares the images instead at the depth's own size (images area-averaged, K scaled, auto-mask
    and ``exclude_mask`` at that size), as Monodepth (v1) and SfMLearner did: a coarse scale then sees
    a blurred image, whose photometric error still decreases toward a match several full-resolution
    pixels away, and it costs a quarter, a sixteenth, ... of scale 0. Smoothness uses disparity ``1 / depth`` at
    the scale's own resolution with the target resized (area) to match, weighted by ``1 / 2^s``.

        photometric = mean_s masked_mean(min reprojection error at s)
        smoothness  = mean_s smoothness_loss(disp_s, target_s) / 2^s
        loss        = photometric + smoothness_weight * smoothness

    Args:
        target: ``(B, 3, H, W)`` target image in [0, 1] (unaugmented).
        sources: source images ``(B, 3, H, W)``, list or dict.
        depths: target depth per scale, finest first: ``(B, 1, H/2^s, W/2^s)`` metres (any number of scales).
        poses: ``T_source_target`` ``(B, 4, 4)`` per source (list in the order of ``sources``, or a dict
            with the same keys).
        K: ``(B, 3, 3)`` intrinsics of the full-resolution images (a ``(B, S, 3, 3)`` pyramid is accepted:
            its first entry is used).
        automask: apply Monodepth2's auto-masking.
        ssim_weight: SSIM weight of the photometric error.
        smoothness_weight: weight of the smoothness term (Monodepth2: 1e-3).
        exclude_mask: optional ``(B, 1, H, W)`` bool / float (> 0.5 = excluded) pixels dropped from the
            photometric loss, e.g. the depth inconsistency mask; resized (nearest) if at another size.
        full_resolution: compare every scale at ``(H, W)`` (Monodepth2, the default) or each at its own size.
    Returns:
        dict with
          ``loss``, ``photometric``, ``smoothness``: scalars (``loss`` is what to back-propagate);
          ``reprojection_error``: ``(B, 1, H, W)`` minimum over sources at scale 0;
          ``identity_error``: ``(B, 1, H, W)`` minimum over unwarped sources;
          ``automask``: ``(B, 1, H, W)`` bool at scale 0, True = kept (all True when ``automask`` is off);
          ``loss_mask``: ``(B, 1, H, W)`` bool, pixels that counted at scale 0 (automask AND NOT excluded);
          ``warped``: list of ``(B, 3, H, W)`` sources warped with the scale-0 depth.
    """
    if len(depths) == 0:
        raise ValueError("self_supervised_loss needs the depth of at least one scale")
    size = target.shape[-2:]
    source_list = _as_list(sources)

    identity_error = min_over_sources([photometric_error(src, target, ssim_weight) for src in source_list])[0]

    excluded = None
    if exclude_mask is not None:
        excluded = exclude_mask.to(target.dtype)
        if tuple(excluded.shape[-2:]) != tuple(size):
            excluded = F.interpolate(excluded, size=tuple(size), mode="nearest")
        excluded = excluded > 0.5

    photometric_terms, smoothness_terms = [], []
    outputs: dict = {}
    for scale, depth in enumerate(depths):
        if full_resolution or tuple(depth.shape[-2:]) == tuple(size):
            reprojection, warped = min_reprojection_error(target, sources, depth, poses, K, ssim_weight)
            identity, scale_excluded = identity_error, excluded
        else:
            reprojection, warped, identity, scale_excluded = _own_size_errors(
                target, sources, depth, poses, K, ssim_weight, excluded
            )
        kept = compute_automask(reprojection, identity) if automask else torch.ones_like(identity, dtype=torch.bool)
        loss_mask = kept if scale_excluded is None else kept & ~scale_excluded
        photometric_terms.append(masked_mean(reprojection, loss_mask))

        disp = 1.0 / depth.clamp(min=1e-6)
        image = (
            target if depth.shape[-2:] == size else F.interpolate(target, size=depth.shape[-2:], mode="area")
        )
        smoothness_terms.append(smoothness_loss(disp, image) / (2**scale))

        if scale == 0:
            outputs.update(
                reprojection_error=reprojection,
                identity_error=identity,
                automask=kept,
                loss_mask=loss_mask,
                warped=warped,
            )

    photometric = torch.stack(photometric_terms).mean()
    smoothness = torch.stack(smoothness_terms).mean()
    outputs.update(
        loss=photometric + smoothness_weight * smoothness,
        photometric=photometric,
        smoothness=smoothness,
    )
    return outputs


def _own_size_errors(target, sources, depth, poses, K, ssim_weight, excluded):
    """``(reprojection, warped, identity, excluded)`` at the depth's size ``(h, w)``: the minimum reprojection
    error ``(B, 1, h, w)`` and the warped sources with the images area-averaged to that size, the identity
    error there, and ``excluded`` (bool ``(B, 1, H, W)`` or None) resized (nearest) to it."""
    height, width = target.shape[-2:]
    size = tuple(depth.shape[-2:])

    def shrink(image: Tensor) -> Tensor:
        return F.interpolate(image, size=size, mode="area")

    small_target = shrink(target)
    small_sources = {k: shrink(v) for k, v in sources.items()} if isinstance(sources, Mapping) else [
        shrink(v) for v in sources]
    small_K = scale_intrinsics(_full_res_K(K)[:, :3, :3], size[1] / width, size[0] / height)
    reprojection, warped = min_reprojection_error(small_target, small_sources, depth, poses, small_K, ssim_weight)
    identity = min_over_sources([photometric_error(src, small_target, ssim_weight)
                                 for src in _as_list(small_sources)])[0]
    if excluded is not None:
        excluded = F.interpolate(excluded.to(target.dtype), size=size, mode="nearest") > 0.5
    return reprojection, warped, identity, excluded


def distillation_loss(depth_student: Tensor, depth_teacher: Tensor, region: Tensor) -> Tensor:
    """Robust knowledge distillation: mean over ``region`` of ``|log D_student - log D_teacher|``.

    Args:
        depth_student: ``(B, 1, H, W)`` metres, > 0 (the multi-frame net's depth).
        depth_teacher: ``(B, 1, H, W)`` metres, > 0 (the frozen teacher's depth); detached here.
        region: ``(B, 1, H, W)`` bool / {0, 1} float, the pixels to distil (see
            :func:`mfdepth.masks.distillation_region`); resized (nearest) if at another size.
    Returns:
        Scalar; exactly 0 with the graph to ``depth_student`` intact (zero gradient, no NaN) when the
        region is empty.
    """
    if depth_student.shape != depth_teacher.shape:
        raise ValueError(
            f"student depth {tuple(depth_student.shape)} and teacher depth "
            f"{tuple(depth_teacher.shape)} differ in shape"
        )
    region = region.to(depth_student.dtype)
    if tuple(region.shape[-2:]) != tuple(depth_student.shape[-2:]):
        region = F.interpolate(region, size=tuple(depth_student.shape[-2:]), mode="nearest")
    teacher = depth_teacher.detach()
    # Clamping keeps log finite for the masked-out pixels too (0 * inf would be NaN).
    difference = (torch.log(depth_student.clamp(min=1e-6)) - torch.log(teacher.clamp(min=1e-6))).abs()
    return masked_mean(difference, region > 0.5)


def cost_volume_target_loss(depth: Tensor, cost_volume_depth: Tensor, trusted: Tensor) -> Tensor:
    """Pull the multi-frame net toward its cost volume's lowest-cost depth where that match is trusted.

    The photometric loss rewards reading the cost volume only through small local gradients; the
    lowest-cost depth is the answer of a search over all hypotheses, so where ManyDepth's rule trusts
    it (it agrees with the single-frame teacher within a factor, and the match is reliable) it is a
    direct target: mean over ``trusted`` of ``|log D - log D_cost|``, with ``D_cost`` (constant over
    each cell of the volume's grid) upsampled by nearest neighbour.

    Args:
        depth: ``(B, 1, H, W)`` metres, the multi-frame net's finest depth.
        cost_volume_depth: ``(B, 1, h, w)`` metres, the lowest-cost hypothesis (no gradient taken).
        trusted: ``(B, 1, H, W)`` bool / {0, 1} float.
    Returns:
        Scalar; 0 (graph intact) when nothing is trusted.
    """
    target = F.interpolate(cost_volume_depth.detach().to(depth.dtype), size=tuple(depth.shape[-2:]), mode="nearest")
    return distillation_loss(depth, target, trusted)


STEREO_PRIOR_MIN_CELLS = 8
"""Images with fewer labelled cells than this add nothing to :func:`stereo_prior_loss`."""


def stereo_prior_loss(depth: Tensor, labels: Tensor, band: float | None = None) -> Tensor:
    """The single-frame depth's shape pulled toward plane-sweep labels (``mfdepth.training.stereo_prior``),
    its scale left free.

    Per image, over its labelled cells: ``r = log pool(D) - log label`` (``pool`` averages the log depth
    over each label cell), and the loss is ``mean |r - median(r)|``: the labels say how depths compare
    within the image, not their scale, which stays with the photometric loss and the pose. (Tying the
    labels to the pose net's translation length instead let the two scales drift down together into
    the depth range's lower bound on one seed in three.)

    Args:
        depth: ``(B, 1, H, W)`` predicted depth.
        labels: ``(B, 1, h, w)`` labels in any unit per image, 0 = none; H / h = W / w an integer.
        band: when given (> 1), a label more than ``band`` times off the depth (after the image's scale)
            is ignored, as ManyDepth ignores a cost volume outside [1/2, 2] of its teacher.
    Returns:
        Scalar, the mean over the labelled cells of the images with at least
        :data:`STEREO_PRIOR_MIN_CELLS`; 0 with the graph intact when there are none.
    """
    residual, labelled = _label_log_residual(depth, labels)
    offset, enough = _median_per_image(residual.detach(), labelled)
    deviation = (residual - offset[:, None, None, None]).abs()
    trusted = labelled & enough[:, None, None, None]
    if band is not None:
        trusted = trusted & (deviation.detach() < math.log(band))
    return masked_mean(deviation, trusted)


def label_translation_length(depth: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The translation length that makes ``depth`` agree with plane-sweep labels, per image.

    A label is a depth in units of the previous frame's translation length
    (:mod:`mfdepth.training.stereo_prior`), so over an image's labelled cells ``depth / label`` is that
    length in the depth's own unit; the median of its log is robust to the few wrong labels.

    Args:
        depth: ``(B, 1, H, W)`` predicted depth (any unit).
        labels: ``(B, 1, h, w)`` labels, 0 = none; H / h = W / w an integer.
    Returns:
        ``(log_length (B,), enough (B,) bool)``: the log length, and whether the image has at least
        :data:`STEREO_PRIOR_MIN_CELLS` labelled cells (elsewhere ``log_length`` is 0 and meaningless).
    """
    return _median_per_image(*_label_log_residual(depth, labels))


def _label_log_residual(depth: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(log pool(D) - log label, labelled)``, both ``(B, 1, h, w)``: ``pool`` averages the log depth over
    each label cell; the residual is meaningless where ``labelled`` is False."""
    cell = depth.shape[-1] // labels.shape[-1]
    log_depth = F.avg_pool2d(torch.log(depth.float().clamp_min(1e-6)), cell)
    return log_depth - torch.log(labels.clamp_min(1e-9)), labels > 0


def _median_per_image(residual: Tensor, labelled: Tensor) -> tuple[Tensor, Tensor]:
    """``(median (B,), enough (B,) bool)``: each image's median residual over its labelled cells (0 where
    none), and whether it has at least :data:`STEREO_PRIOR_MIN_CELLS` of them."""
    flat = torch.where(labelled, residual, torch.full_like(residual, float("nan"))).flatten(1)
    median = torch.nanmedian(flat, dim=1).values.nan_to_num(0.0)
    return median, labelled.flatten(1).sum(dim=1) >= STEREO_PRIOR_MIN_CELLS


def scale_anchor_loss(depth: Tensor, anchor: float) -> Tensor:
    """How far the batch's mean log depth has moved from ``log anchor``: a gauge, not a shape.

    A monocular depth and its pose net's translation are learned up to one common scale; nothing in the
    photometric loss holds that scale, and at a high learning rate the pair slides toward the depth
    range's lower bound, where the sigmoid saturates and the pixels stop learning (docs/convergence.md,
    failure 13). This term pins the one free direction and no other: it is the square of the
    difference between the mean over the batch of every pixel's ``log depth`` and ``log anchor``, so
    its gradient moves every pixel's log depth by the same amount and leaves each image's shape, and
    how images compare with one another, to the other terms.

    Args:
        depth: ``(B, 1, H, W)`` predicted depth, in the network's unit (> 0).
        anchor: the depth the batch's geometric mean is held at (e.g. ``model.initial_depth``), > 0.
    Returns:
        Scalar ``(mean log depth - log anchor) ** 2``.
    """
    return (torch.log(depth.float()).mean() - math.log(anchor)) ** 2


def pose_length_loss(T_pred: Tensor, depth: Tensor, labels: Tensor) -> Tensor:
    """The pose net's translation length pulled toward the one the labels give for the (fixed) depth.

    The photometric loss ties the translation's length to the depth's scale only near agreement: a pose
    net that predicts one length for every speed warps slow sequences several times too far, the
    auto-mask then drops most of their pixels, and nothing pulls the length back (docs/convergence.md,
    failure 10). The labels know, per image, how long the previous translation is in the depth's unit
    (:func:`label_translation_length`); this term asks the pose net for that length, the depth detached
    so that it follows the depth and never moves it.

    Args:
        T_pred: ``(B, 4, 4)`` predicted ``T_source_target`` of the previous frame (its translation's norm
            is the length, in either direction).
        depth: ``(B, 1, H, W)`` the single-frame depth (detached here).
        labels: ``(B, 1, h, w)`` plane-sweep labels, 0 = none.
    Returns:
        Scalar: mean over images with enough labels of ``|log |t| - log length|``; 0 with the graph intact
        when there are none.
    """
    log_length, enough = label_translation_length(depth.detach(), labels)
    log_norm = torch.log(T_pred[:, :3, 3].float().norm(dim=1).clamp_min(1e-9))
    return masked_mean((log_norm - log_length).abs(), enough)


def pose_prior_loss(T_pred: Tensor, T_prior: Tensor, valid: Tensor | None = None) -> Tensor:
    """Agreement of predicted relative poses with a scale-free prior (classical two-view geometry).

    Args:
        T_pred: ``(B, 4, 4)`` predicted ``T_source_target``, translation in any scale.
        T_prior: ``(B, 4, 4)`` prior transforms of the same direction, translation of any (e.g. unit) norm.
        valid: ``(B,)`` bool, pairs whose prior exists (a static camera has no translation direction).
    Returns:
        Scalar: mean over valid pairs of ``||R_pred - R_prior||_F^2 / 4 + (1 - cos(t_pred, t_prior))``.
        The rotation term is ``(1 - cos angle)`` of the relative rotation (0 when equal, 1 at 90 deg);
        the translation term ignores the norm, which the prior does not know. 0 when no pair is valid.
    """
    rotation = (T_pred[:, :3, :3] - T_prior[:, :3, :3]).pow(2).sum(dim=(1, 2)) / 4.0
    direction = 1.0 - F.cosine_similarity(T_pred[:, :3, 3], T_prior[:, :3, 3], dim=1, eps=1e-9)
    per_pair = rotation + direction
    if valid is None:
        return per_pair.mean()
    return masked_mean(per_pair, valid.bool())


@full_precision
def ground_height(depth: Tensor, K: Tensor, region_fraction: float = 0.4) -> tuple[Tensor, Tensor]:
    """The camera's height above the ground plane of ``depth``, differentiable in ``depth``.

    The plane (normal and inliers) is found without gradients by :func:`mfdepth.masks.fit_ground_plane`
    on the lower ``region_fraction`` of the image; the height is then measured again as the mean of
    ``n . X`` over the inlier points ``X`` back-projected from ``depth``, so a gradient through it
    reaches exactly the depths that define the ground, and ``ground_height(k * depth) = k * ground_height(depth)``.

    Args:
        depth: ``(B, 1, H, W)`` depth in any units (the network's current scale).
        K: ``(B, 3, 3)`` intrinsics in pixels of ``depth``.
    Returns:
        ``(height (B,), found (B,) bool)``; ``height`` is 1 where no plane was found.
    """
    from mfdepth.geometry import backproject
    from mfdepth.masks import fit_ground_plane

    b, _, h, w = depth.shape
    with torch.no_grad():
        normal, offset = fit_ground_plane(depth.detach(), K, region_fraction=region_fraction)
    found = torch.isfinite(offset)
    normal = torch.where(found[:, None], normal, torch.zeros_like(normal))
    offset = torch.where(found, offset, torch.ones_like(offset))
    along = (normal[:, :, None, None] * backproject(depth, K)).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    rows = torch.arange(h, device=depth.device)[None, None, :, None] >= int(round(h * (1.0 - region_fraction)))
    with torch.no_grad():
        inlier = rows & ((along - offset[:, None, None, None]).abs() < 0.05 * offset[:, None, None, None])
        inlier = inlier & found[:, None, None, None]
    weights = inlier.to(depth.dtype)
    count = weights.sum(dim=(1, 2, 3))
    height = (along * weights).sum(dim=(1, 2, 3)) / count.clamp(min=1.0)
    found = found & (count >= 3) & (height > 0)
    return torch.where(found, height, torch.ones_like(height)), found


LOWER_REGION = 0.4
"""Fraction of the image rows, from the bottom, that the lower-region normalisation looks at."""


def level_road_log_depth(K: Tensor, height: int, camera_height: float, region_fraction: float = LOWER_REGION) -> Tensor:
    """``(B,)`` mean log depth of a level road over the lower ``region_fraction`` of the rows.

    A camera ``camera_height`` above flat ground sees row ``v`` of the road at depth
    ``fy * camera_height / (v - cy)``; rows less than half a pixel below the horizon count as half a pixel.
    """
    first = int(round(height * (1.0 - region_fraction)))
    rows = torch.arange(first, height, device=K.device, dtype=K.dtype)
    below = (rows[None] - K[:, 1, 2, None]).clamp(min=0.5)
    return torch.log(K[:, 1, 1, None] * camera_height / below).mean(dim=1)


def normalise_depths(depths: Sequence[Tensor], K: Tensor, mode: str, camera_height: float | None) -> list[Tensor]:
    """Depth maps with the free monocular scale fixed (``ModelConfig.scale_normalisation``).

    ``none`` returns them unchanged; ``ground_plane`` is :func:`metric_depths`; ``lower_region``
    multiplies each image by ``exp(target - mean log depth over its lower rows)``, with ``target``
    from :func:`level_road_log_depth` (``log 10`` when ``camera_height`` is None). Factors come from
    the finest map, differentiably, so ``normalise(k * D) == normalise(D)``.

    Args:
        depths: per-scale ``(B, 1, H / 2^s, W / 2^s)``, finest first; K: ``(B, 3, 3)`` in its pixels.
    """
    if mode == "none":
        return list(depths)
    if mode == "ground_plane":
        return metric_depths(depths, K, camera_height)[0]
    if mode != "lower_region":
        raise ValueError(f"unknown scale normalisation '{mode}'")
    finest = depths[0]
    h = finest.shape[-2]
    first = int(round(h * (1.0 - LOWER_REGION)))
    mean_log = torch.log(finest[:, :, first:].clamp(min=1e-6)).mean(dim=(1, 2, 3))
    if camera_height is None:
        target = torch.full_like(mean_log, math.log(10.0))
    else:
        target = level_road_log_depth(K.to(finest.dtype), h, camera_height)
    factor = torch.exp(target - mean_log)[:, None, None, None]
    return [d * factor for d in depths]


def metric_depths(depths: Sequence[Tensor], K: Tensor, camera_height: float) -> tuple[list[Tensor], Tensor]:
    """Depth maps normalised so that their ground plane lies ``camera_height`` below the camera.

    Fixes the scale that monocular self-supervision leaves free: with the factor taken from the finest
    map, differentiably (:func:`ground_height`), scaling the network's raw output changes nothing, so the
    raw scale cannot drift into a bound of the output range, and the depths (and the translations the
    photometric loss fits to them) come out in metres. Images whose plane fit fails keep a factor of
    the batch's median (1 if none succeeded), without gradient.

    Args:
        depths: per-scale depths, finest first, ``(B, 1, H / 2^s, W / 2^s)``.
        K: ``(B, 3, 3)`` intrinsics in pixels of the finest map.
        camera_height: metres.
    Returns:
        ``(scaled depths, factors (B,))``.
    """
    height, found = ground_height(depths[0], K)
    factor = camera_height / height
    if found.any():
        fallback = factor.detach()[found].median()
    else:
        fallback = torch.ones((), dtype=factor.dtype, device=factor.device)
    factor = torch.where(found, factor, fallback)
    return [d * factor[:, None, None, None] for d in depths], factor
