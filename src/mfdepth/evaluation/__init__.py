"""Depth evaluation: per-image metrics, dataset protocols (KITTI, Cityscapes, synthetic, folder) and reports.

Importing this package does not import torch (only resizing a prediction does).
"""

from mfdepth.evaluation.metrics import (
    METRIC_NAMES,
    MaskQualityAccumulator,
    compute_depth_metrics,
    median_scale,
    ratio_statistics,
)
from mfdepth.evaluation.protocols import (
    PROTOCOLS,
    DepthMetricAccumulator,
    EvaluationResult,
    cityscapes_crop,
    cityscapes_eval_mask,
    crop_box,
    depth_range_mask,
    eval_mask,
    evaluate_depth_maps,
    kitti_eval_mask,
    remove_cityscapes_bonnet,
    resize_mask_nearest,
    resize_prediction,
)
from mfdepth.evaluation.report import format_table, write_json

__all__ = [
    "METRIC_NAMES",
    "PROTOCOLS",
    "DepthMetricAccumulator",
    "EvaluationResult",
    "MaskQualityAccumulator",
    "cityscapes_crop",
    "cityscapes_eval_mask",
    "compute_depth_metrics",
    "crop_box",
    "depth_range_mask",
    "eval_mask",
    "evaluate_depth_maps",
    "format_table",
    "kitti_eval_mask",
    "median_scale",
    "ratio_statistics",
    "remove_cityscapes_bonnet",
    "resize_mask_nearest",
    "resize_prediction",
    "write_json",
]
