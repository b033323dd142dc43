"""The ground plane: robust fit to back-projected depth, the camera-height scale, the ground mask.

A plane is ``{X : n . X = offset}`` in the camera frame with the unit normal ``n`` oriented away from the
camera (see :mod:`mfdepth.masks`)."""

from __future__ import annotations

import math

import torch

from mfdepth.geometry import backproject, full_precision

Tensor = torch.Tensor


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


@full_precision
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


def metric_by_camera_height(depth: Tensor, K: Tensor, camera_height: float) -> Tensor:
    """``depth`` made metric by :func:`camera_height_scale`, each image on its own.

    Args:
        depth: ``(B, 1, H, W)`` depth in the network's units; K: ``(B, 3, 3)`` in pixels of ``depth``.
        camera_height: metres.
    Returns:
        ``(B, 1, H, W)`` metres. An image whose ground fit failed takes the median factor of the others
        (1 when every fit failed), so one bad frame neither aborts nor skips an evaluation.
    """
    factors = camera_height_scale(depth, K, camera_height)
    finite = torch.isfinite(factors)
    fallback = factors[finite].median() if finite.any() else torch.ones((), dtype=depth.dtype, device=depth.device)
    return depth * torch.where(finite, factors, fallback)


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
