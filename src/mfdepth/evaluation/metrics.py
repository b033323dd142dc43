"""Depth error metrics of one image and pixel-pooled quality of predicted dynamic masks.

Everything here is pure numpy in float64 and knows nothing about datasets: the caller has already
selected the valid pixels (see :mod:`mfdepth.evaluation.protocols`).
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
"""Order of the depth metrics in tables and JSON: errors first (lower is better), then accuracies."""

_THRESHOLD = 1.25


def _valid_pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred hold different numbers of pixels: {gt.size} vs {pred.size}")
    if gt.size == 0:
        raise ValueError("no valid pixels: depth metrics need at least one pixel with ground truth")
    if not (np.all(np.isfinite(gt)) and np.all(np.isfinite(pred))):
        raise ValueError("gt and pred must be finite")
    if np.any(gt <= 0) or np.any(pred <= 0):
        raise ValueError("gt and pred must be positive depths (metres); select the valid pixels first")
    return gt, pred


def compute_depth_metrics(gt, pred) -> dict[str, float]:
    """The seven standard depth metrics of one image.

    Args:
        gt: ``(P,)`` ground-truth depths in metres of the image's valid pixels (all > 0).
        pred: ``(P,)`` predicted depths in metres at the same pixels (all > 0), already scaled/capped.

    Returns:
        ``{"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"}`` as floats:
        abs_rel = mean(|gt - pred| / gt); sq_rel = mean((gt - pred)^2 / gt) (metres);
        rmse = sqrt(mean((gt - pred)^2)) (metres); rmse_log = sqrt(mean((ln gt - ln pred)^2));
        a_k = fraction of pixels with max(gt / pred, pred / gt) < 1.25^k (strictly).
    """
    gt, pred = _valid_pair(gt, pred)
    difference = gt - pred
    ratio = np.maximum(gt / pred, pred / gt)
    log_difference = np.log(gt) - np.log(pred)
    return {
        "abs_rel": float(np.mean(np.abs(difference) / gt)),
        "sq_rel": float(np.mean(difference**2 / gt)),
        "rmse": float(np.sqrt(np.mean(difference**2))),
        "rmse_log": float(np.sqrt(np.mean(log_difference**2))),
        "a1": float(np.mean(ratio < _THRESHOLD)),
        "a2": float(np.mean(ratio < _THRESHOLD**2)),
        "a3": float(np.mean(ratio < _THRESHOLD**3)),
    }


def median_scale(gt, pred) -> tuple[np.ndarray, float]:
    """Per-image median scaling of a prediction known only up to scale (monocular self-supervision).

    Args:
        gt: ``(P,)`` ground-truth depths in metres of the valid pixels.
        pred: ``(P,)`` predicted depths at the same pixels, any positive scale.

    Returns:
        ``(pred * ratio, ratio)`` with ``ratio = median(gt) / median(pred)`` (float64 array, float).
    """
    gt, pred = _valid_pair(gt, pred)
    ratio = float(np.median(gt) / np.median(pred))
    return pred * ratio, ratio


def ratio_statistics(ratios) -> tuple[float, float]:
    """Spread of the per-image median-scaling ratios, as Monodepth2 prints it.

    Args:
        ratios: ``(N,)`` per-image ratios ``median(gt) / median(pred)``, N >= 1.

    Returns:
        ``(median, std(ratios / median))``: the typical scale and its relative spread (0 = the network's
        scale is the same in every image).
    """
    ratios = np.asarray(ratios, dtype=np.float64).ravel()
    if ratios.size == 0:
        raise ValueError("no scaling ratios to summarise")
    median = float(np.median(ratios))
    return median, float(np.std(ratios / median))


class MaskQualityAccumulator:
    """IoU, precision and recall of predicted dynamic masks against true motion masks, pooled over pixels.

    Pixel counts are summed over every image before dividing, so a large object weighs more than a small
    one and images without moving pixels still contribute their false positives.
    """

    def __init__(self) -> None:
        self.true_positive = 0
        self.false_positive = 0
        self.false_negative = 0
        self.true_negative = 0
        self.num_images = 0

    def update(self, predicted, true, valid=None) -> None:
        """Add one image.

        Args:
            predicted: ``(H, W)`` predicted dynamic mask; non-zero / True = dynamic.
            true: ``(H, W)`` true motion mask; non-zero / True = moving.
            valid: optional ``(H, W)`` bool, the pixels to count (e.g. inside the evaluation crop).
        """
        predicted = np.asarray(predicted) != 0
        true = np.asarray(true) != 0
        if predicted.shape != true.shape:
            raise ValueError(f"predicted mask {predicted.shape} and true mask {true.shape} differ in shape")
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != true.shape:
                raise ValueError(f"valid mask {valid.shape} and true mask {true.shape} differ in shape")
            predicted, true = predicted[valid], true[valid]
        self.true_positive += int(np.count_nonzero(predicted & true))
        self.false_positive += int(np.count_nonzero(predicted & ~true))
        self.false_negative += int(np.count_nonzero(~predicted & true))
        self.true_negative += int(np.count_nonzero(~predicted & ~true))
        self.num_images += 1

    def compute(self) -> dict[str, float | int]:
        """``{"iou", "precision", "recall", "true_positive", ..., "num_images"}``.

        A ratio whose denominator is zero (no dynamic pixel predicted, or none true) is NaN: it is
        undefined, not perfect.
        """
        tp, fp, fn = self.true_positive, self.false_positive, self.false_negative
        return {
            "iou": _safe_ratio(tp, tp + fp + fn),
            "precision": _safe_ratio(tp, tp + fp),
            "recall": _safe_ratio(tp, tp + fn),
            "true_positive": tp,
            "false_positive": fp,
            "false_negative": fn,
            "true_negative": self.true_negative,
            "num_images": self.num_images,
        }


def _safe_ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def relative_pose_errors(predicted, true, min_translation: float = 1e-3) -> dict[str, float]:
    """Errors of predicted relative camera motions against the truth, over N frame pairs.

    Monocular self-supervision knows translation only up to one scale, so the predicted translations
    are first scaled by ``s = median(|t_true| / |t_pred|)`` over the pairs where the camera moved.

    Args:
        predicted: ``(N, 4, 4)`` predicted transforms (e.g. ``T_source_target``), translation any scale.
        true: ``(N, 4, 4)`` true transforms of the same direction, translation in metres.
        min_translation: pairs whose true translation is shorter (metres) count as "camera static" and
            are left out of the direction error and the scale.

    Returns:
        ``rotation_deg`` (mean angle of ``R_pred^T R_true``), ``direction_deg`` (mean angle between the
        translation vectors, moving pairs), ``translation_m`` (mean ``|s t_pred - t_true|``, all pairs),
        ``scale`` (s), ``num_pairs``, ``num_moving``.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 3 or predicted.shape[1:] != (4, 4):
        raise ValueError(f"need two (N, 4, 4) arrays of the same N, got {predicted.shape} and {true.shape}")
    if predicted.shape[0] == 0:
        raise ValueError("no pose pairs to evaluate")
    relative = np.einsum("nji,njk->nik", predicted[:, :3, :3], true[:, :3, :3])
    cos_angle = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    t_pred, t_true = predicted[:, :3, 3], true[:, :3, 3]
    norm_pred, norm_true = np.linalg.norm(t_pred, axis=1), np.linalg.norm(t_true, axis=1)
    moving = (norm_true > min_translation) & (norm_pred > 0)
    if moving.any():
        scale = float(np.median(norm_true[moving] / norm_pred[moving]))
        cos_direction = np.sum(t_pred[moving] * t_true[moving], axis=1) / (norm_pred[moving] * norm_true[moving])
        direction = float(np.degrees(np.arccos(np.clip(cos_direction, -1.0, 1.0))).mean())
    else:
        scale, direction = 1.0, math.nan
    return {
        "rotation_deg": float(np.degrees(np.arccos(cos_angle)).mean()),
        "direction_deg": direction,
        "translation_m": float(np.linalg.norm(scale * t_pred - t_true, axis=1).mean()),
        "scale": scale,
        "num_pairs": int(predicted.shape[0]),
        "num_moving": int(moving.sum()),
    }
