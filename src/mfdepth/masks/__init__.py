"""Masks: the depth inconsistency mask, the ground-plane check, and the robust-distillation masks.

See ``docs/METHOD.md``, sections "Depth inconsistency mask" and "Robust knowledge distillation". All
functions are pure and batched; masks are bool ``(B, 1, H, W)`` with True = "flagged" (dynamic, ground,
inconsistent, distil here...) as each docstring says.

Ground plane convention: a plane is ``{X : n . X = offset}`` in the camera frame (x right, y down, z
forward) with the unit normal ``n`` oriented away from the camera, so ``offset > 0`` is the camera's height
above the plane and a level camera over flat ground has ``n = (0, 1, 0)``.

The package's modules: :mod:`~mfdepth.masks.dynamic` (the depth inconsistency mask, the masks stage's full
rule, quality against true motion), :mod:`~mfdepth.masks.ground` (ground-plane fit, camera-height scale,
ground mask), :mod:`~mfdepth.masks.morphology` (components, blobs, dilation) and
:mod:`~mfdepth.masks.distillation` (reliability, cost-volume inconsistency, distillation region, least-sharp matches). Every
function is importable from ``mfdepth.masks`` itself.
"""

from mfdepth.masks.distillation import (
    cost_volume_inconsistency,
    distillation_region,
    least_sharp,
    reliability_mask,
    standing_camera,
)
from mfdepth.masks.dynamic import (
    compute_dynamic_mask,
    depth_inconsistency_mask,
    mask_quality,
    median_ratio,
    rule_settings,
    two_way_match_depth,
)
from mfdepth.masks.ground import (
    camera_height_scale,
    fit_ground_plane,
    ground_mask,
    height_above_plane,
    metric_by_camera_height,
)
from mfdepth.masks.morphology import connected_components, dilate, remove_small_blobs

__all__ = [
    "camera_height_scale", "compute_dynamic_mask", "connected_components", "cost_volume_inconsistency",
    "depth_inconsistency_mask", "dilate", "distillation_region", "fit_ground_plane", "ground_mask",
    "height_above_plane", "least_sharp", "mask_quality", "median_ratio", "metric_by_camera_height",
    "reliability_mask", "remove_small_blobs", "rule_settings", "standing_camera", "two_way_match_depth",
]

median_scale = median_ratio
"""The former name of :func:`median_ratio`, kept for existing callers (not the evaluation's
``median_scale``, which returns ``(scaled, ratio)``)."""
