"""Morphology of bool masks: connected components, small-blob removal, dilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


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
