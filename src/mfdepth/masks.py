"""Masks: the depth inconsistency mask, the ground-plane check, and the robust-distillation masks.

See ``shared/METHOD.md``, sections "Depth inconsistency mask" and "Robust knowledge distillation". All
functions are pure and batched; masks are bool ``(B, 1, H, W)`` with True = "flagged" (dynamic, ground,
inconsistent, distil here...) as each docstring says.

Ground plane convention: a plane is ``{X : n . X = offset}`` in the camera frame (x right, y down, z
forward) with the unit normal ``n`` oriented away from the camera, so ``offset > 0`` is the camera's height
above the plane and a level camera over flat ground has ``n = (0, 1, 0)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mfdepth.geometry import backproject

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Depth inconsistency (dynamic-object) mask


def median_scale(depth: Tensor, reference: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-image factor ``median(reference) / median(depth)`` over valid pixels.

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
        depth_multi = depth_multi * median_scale(depth_multi, depth_single, valid)
    too_far = depth_multi > upper_ratio * depth_single
    too_near = depth_multi < lower_ratio * depth_single
    return (too_far | too_near) & valid


# ---------------------------------------------------------------------------------------------
# Ground plane


def _plane_from_weighted_points(points: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares plane (smallest principal axis) through weighted points ``(B, N, 3)``, weights ``(B, N)``."""
    total = weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
    centroid = (weights[..., None] * points).sum(dim=1) / total
    centred = points - centroid[:, None]
    covariance = (weights[..., None] * centred).transpose(1, 2) @ centred / total[..., None]
    # eigh fails on NaN/degenerate input; rows without enough points are replaced and flagged by the caller.
    eye = torch.eye(3, dtype=points.dtype, device=points.device)
    covariance = torch.where(torch.isfinite(covariance).all(dim=(1, 2), keepdim=True), covariance, eye)
    _, vectors = torch.linalg.eigh(covariance)
    normal = vectors[:, :, 0]
    offset = (normal * centroid).sum(dim=-1)
    sign = torch.where(offset < 0, -torch.ones_like(offset), torch.ones_like(offset))
    return normal * sign[:, None], offset * sign


def fit_ground_plane(
    depth: Tensor,
    K: Tensor,
    region_fraction: float = 0.4,
    iterations: int = 128,
    inlier_threshold: float = 0.05,
    max_tilt_degrees: float | None = 30.0,
    max_points: int = 4096,
    refinements: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Robust ground-plane fit to the back-projected lower image region (batched RANSAC + least squares).

    Each image gets ``iterations`` plane hypotheses through 3 random valid points of its lower
    ``region_fraction`` of rows; the one with most inliers wins, then ``refinements`` rounds of
    least squares on its inliers polish it.

    Args:
        depth: ``(B, 1, H, W)`` metres (0 = unknown), e.g. the single-frame depth D_r.
        K: ``(B, 3, 3)`` (or ``(B, 4, 4)``) intrinsics in pixels of ``depth``.
        region_fraction: fraction of the image rows, counted from the bottom, whose points are fitted.
        iterations: hypotheses per image.
        inlier_threshold: a point is an inlier when its distance to the plane is below this fraction of
            the plane's offset (the camera height), which makes the rule independent of the depth scale.
        max_tilt_degrees: hypotheses whose normal is further than this from the camera's down axis
            (0, 1, 0) are rejected, so walls and vehicle sides cannot win; None = any orientation.
        max_points: random subset of region points used per image (bounds memory: B * iterations * points).
        refinements: least-squares rounds on the inliers.
        generator: random source (on ``depth``'s device); default a fixed seed, so the fit is deterministic.
    Returns:
        ``(normal, offset)``: ``(B, 3)`` unit normals oriented away from the camera and ``(B,)`` offsets
        (camera height, in the depth's units). Images with fewer than 3 usable points get NaN for both.
    """
    b, _, h, w = depth.shape
    if generator is None:
        generator = torch.Generator(device=depth.device).manual_seed(0)
    first_row = min(max(int(round(h * (1.0 - region_fraction))), 0), h - 1)
    points = backproject(depth, K)[:, :, first_row:].reshape(b, 3, -1).transpose(1, 2)  # (B, N, 3)
    valid = (depth[:, 0, first_row:] > 0).reshape(b, -1)

    if points.shape[1] > max_points:
        # Random scores with invalid points last: the top max_points are a uniform subset of the valid ones.
        scores = torch.rand(valid.shape, generator=generator, device=depth.device) + valid.to(depth.dtype)
        keep = scores.topk(max_points, dim=1).indices
        points = points.gather(1, keep[..., None].expand(-1, -1, 3))
        valid = valid.gather(1, keep)

    enough = valid.sum(dim=1) >= 3
    # multinomial rejects all-zero rows; such images are marked failed through ``enough``.
    sample_weights = torch.where(enough[:, None], valid.to(depth.dtype), torch.ones_like(points[..., 0]))
    picks = torch.multinomial(sample_weights, 3 * iterations, replacement=True, generator=generator)
    triples = points.gather(1, picks[..., None].expand(-1, -1, 3)).reshape(b, iterations, 3, 3)
    normals = torch.linalg.cross(triples[:, :, 1] - triples[:, :, 0], triples[:, :, 2] - triples[:, :, 0])
    lengths = normals.norm(dim=-1)
    normals = normals / lengths.clamp(min=1e-12)[..., None]
    offsets = (normals * triples[:, :, 0]).sum(dim=-1)
    flip = torch.where(offsets < 0, -torch.ones_like(offsets), torch.ones_like(offsets))
    normals, offsets = normals * flip[..., None], offsets * flip

    usable = (lengths > 1e-9) & (offsets > 0)
    if max_tilt_degrees is not None:
        usable = usable & (normals[..., 1] >= math.cos(math.radians(max_tilt_degrees)))
    distances = (points @ normals.transpose(1, 2) - offsets[:, None, :]).abs()  # (B, N, I)
    inliers = (distances < inlier_threshold * offsets[:, None, :]) & valid[..., None]
    counts = torch.where(usable, inliers.sum(dim=1), -torch.ones_like(offsets, dtype=torch.long))
    best = counts.argmax(dim=1)
    normal = normals[torch.arange(b, device=depth.device), best]
    offset = offsets[torch.arange(b, device=depth.device), best]
    found = enough & (counts.max(dim=1).values >= 3)

    for _ in range(refinements):
        distance = (points @ normal[..., None]).squeeze(-1) - offset[:, None]
        weights = ((distance.abs() < inlier_threshold * offset[:, None]) & valid).to(depth.dtype)
        found = found & (weights.sum(dim=1) >= 3)
        refined_normal, refined_offset = _plane_from_weighted_points(points, weights)
        normal = torch.where(found[:, None], refined_normal, normal)
        offset = torch.where(found, refined_offset, offset)

    nan = torch.full_like(offset, float("nan"))
    normal = torch.where(found[:, None], normal, nan[:, None].expand(-1, 3))
    return normal, torch.where(found, offset, nan)


def camera_height_scale(
    depth: Tensor, K: Tensor, camera_height: float, region_fraction: float = 0.4
) -> Tensor:
    """Per-image factors that make ``depth`` metric: known camera height / height of the fitted ground.

    A monocular network knows depth up to one scale; the camera's height above the road (KITTI
    1.65 m) fixes it. The ground plane is fitted robustly to the lower ``region_fraction`` of the image
    (:func:`fit_ground_plane`), and ``depth * factor`` puts it ``camera_height`` below the camera.

    Args:
        depth: ``(B, 1, H, W)`` depth in the network's units (0 = unknown).
        K: ``(B, 3, 3)`` intrinsics in pixels of ``depth``.
        camera_height: metres.
    Returns:
        ``(B, 1, 1, 1)`` factors; NaN for an image whose plane fit failed.
    """
    _, offset = fit_ground_plane(depth, K, region_fraction=region_fraction)
    return (camera_height / offset).reshape(-1, 1, 1, 1)


def height_above_plane(points: Tensor, normal: Tensor, offset: Tensor) -> Tensor:
    """Signed height of camera-frame points above a plane ``n . X = offset``.

    Args:
        points: ``(B, 3, H, W)`` (or ``(B, 3, N)``) metres.
        normal: ``(B, 3)`` unit normal pointing away from the camera (down, for the ground).
        offset: ``(B,)`` camera height above the plane.
    Returns:
        ``(B, 1, H, W)`` (or ``(B, 1, N)``): ``offset - n . X``; 0 on the plane, ``offset`` at the camera,
        negative below the plane.
    """
    shape = points.shape
    flat = points.reshape(shape[0], 3, -1)
    along_normal = (normal[:, :, None] * flat).sum(dim=1, keepdim=True)
    height = offset[:, None, None] - along_normal
    return height.reshape(shape[0], 1, *shape[2:])


def ground_mask(
    depth: Tensor,
    K: Tensor,
    plane: tuple[Tensor, Tensor],
    tolerance: float = 0.15,
    camera_height: float | None = None,
) -> Tensor:
    """Pixels whose 3D point lies on the ground plane.

    Args:
        depth: ``(B, 1, H, W)`` metres (0 = unknown, never ground).
        K: ``(B, 3, 3)`` intrinsics in pixels of ``depth``.
        plane: ``(normal (B, 3), offset (B,))`` from :func:`fit_ground_plane`.
        tolerance: allowed |height above the ground| as a fraction of the camera height.
        camera_height: known camera height in the depth's units (e.g. 1.65 m on KITTI, meaningful only
            for metric depth): the ground is then ``n . X = camera_height`` with the fitted normal.
            None = use the fitted offset.
    Returns:
        ``(B, 1, H, W)`` bool, True = ground. All False for an image whose plane fit failed (NaN).
    """
    normal, offset = plane
    if camera_height is not None:
        offset = torch.full_like(offset, float(camera_height))
    height = height_above_plane(backproject(depth, K), normal, offset)
    # Comparisons with a NaN plane are False, so a failed fit marks no ground.
    return (height.abs() <= tolerance * offset[:, None, None, None]) & (depth > 0)


# ---------------------------------------------------------------------------------------------
# Morphology


def _neighbour_max(labels: Tensor, connectivity: int) -> Tensor:
    if connectivity == 8:
        return F.max_pool2d(labels, 3, stride=1, padding=1)
    padded = F.pad(labels, (1, 1, 1, 1))
    return torch.stack(
        [labels, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]
    ).amax(dim=0)


def connected_components(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Label connected components of a boolean mask by iterative max-label propagation.

    Args:
        mask: ``(B, 1, H, W)`` bool.
        connectivity: 8 (diagonal neighbours connect) or 4.
    Returns:
        ``(B, 1, H, W)`` long labels: 0 off the mask; each component carries the largest ``1 + flat index``
        of its pixels, so labels are unique within an image but not consecutive.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    h, w = mask.shape[-2:]
    # float64 represents every label up to 2**53 exactly, so max-pooling cannot merge distinct labels.
    flat_index = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float64).reshape(1, 1, h, w)
    labels = torch.where(mask, flat_index, torch.zeros((), dtype=torch.float64, device=mask.device))
    b = labels.shape[0]
    while True:
        spread = torch.where(mask, _neighbour_max(labels, connectivity), labels)
        # Pointer jumping: a label names a pixel of the same component, whose own (larger or equal) label
        # is adopted at once; long thin components then converge in far fewer than their length in steps.
        flat = spread.reshape(b, -1)
        pointed = flat.gather(1, (flat.long() - 1).clamp(min=0))
        spread = torch.where(mask, torch.maximum(spread, pointed.reshape_as(spread)), spread)
        if torch.equal(spread, labels):
            return labels.long()
        labels = spread


def remove_small_blobs(mask: Tensor, min_area: int, connectivity: int = 8) -> Tensor:
    """Drop connected components with fewer than ``min_area`` pixels.

    Args:
        mask: ``(B, 1, H, W)`` bool.
        min_area: smallest area (pixels) kept; <= 1 returns the mask unchanged.
        connectivity: 8 or 4, as in :func:`connected_components`.
    Returns:
        ``(B, 1, H, W)`` bool.
    """
    mask = mask.bool()
    if min_area <= 1 or not mask.any():
        return mask
    b, _, h, w = mask.shape
    labels = connected_components(mask, connectivity)
    # Give every image its own label range so one bincount counts all of them.
    batch_offset = torch.arange(b, device=mask.device).reshape(b, 1, 1, 1) * (h * w + 1)
    global_labels = (labels + batch_offset).reshape(-1)
    areas = torch.bincount(global_labels, minlength=b * (h * w + 1))[global_labels].reshape(b, 1, h, w)
    return mask & (areas >= min_area)


def dilate(mask: Tensor, pixels: int) -> Tensor:
    """Grow a mask by ``pixels`` in every direction (square structuring element, Chebyshev distance).

    Args:
        mask: ``(B, 1, H, W)`` bool.
        pixels: radius; 0 returns the mask unchanged.
    Returns:
        ``(B, 1, H, W)`` bool.
    """
    mask = mask.bool()
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    return F.max_pool2d(mask.float(), size, stride=1, padding=pixels) > 0.5


# ---------------------------------------------------------------------------------------------
# The full offline rule


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
    valid: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The depth inconsistency mask of METHOD.md (steps 3-4); keyword names match ``MaskConfig``.

    ``compute_dynamic_mask(d_multi, d_single, K, **dataclasses.asdict(config.masks))`` applies a config.

    1. ratio test (:func:`depth_inconsistency_mask`),
    2. if ``ground_check``: fit the ground plane to D_r's lower region and unflag pixels whose D_r point
       lies on it (:func:`ground_mask`),
    3. drop blobs smaller than ``min_blob_area`` pixels, then dilate by ``dilation`` pixels.

    Args:
        depth_multi: ``(B, 1, H, W)`` D_o (multi-frame net), metres.
        depth_single: ``(B, 1, H, W)`` D_r (single-frame net), metres.
        K: ``(B, 3, 3)`` intrinsics in pixels of the depth maps.
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
    dynamic = remove_small_blobs(dynamic, min_blob_area)
    return dilate(dynamic, dilation)


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
    return region


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
        IoU is 1 (perfect agreement).
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
