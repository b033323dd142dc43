"""Depth metrics, median scaling and mask quality against values computed by hand on tiny arrays."""

import math

import numpy as np
import pytest

from mfdepth.evaluation.metrics import (
    METRIC_NAMES,
    MaskQualityAccumulator,
    compute_depth_metrics,
    median_scale,
    ratio_statistics,
    relative_pose_errors,
)


def test_metrics_of_a_hand_computed_example():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([1.0, 3.0, 2.0])
    metrics = compute_depth_metrics(gt, pred)
    assert tuple(metrics) == METRIC_NAMES
    # gt - pred = [0, -1, 2]
    # abs_rel = mean(0/1, 1/2, 2/4) = mean(0, 0.5, 0.5) = 1/3
    assert metrics["abs_rel"] == pytest.approx(1 / 3)
    # sq_rel = mean(0/1, 1/2, 4/4) = mean(0, 0.5, 1) = 0.5
    assert metrics["sq_rel"] == pytest.approx(0.5)
    # rmse = sqrt(mean(0, 1, 4)) = sqrt(5/3)
    assert metrics["rmse"] == pytest.approx(math.sqrt(5 / 3))
    # rmse_log = sqrt(mean(ln(1/1)^2, ln(2/3)^2, ln(4/2)^2))
    assert metrics["rmse_log"] == pytest.approx(math.sqrt((math.log(1.5) ** 2 + math.log(2) ** 2) / 3))
    # max(gt/pred, pred/gt) = [1, 1.5, 2]; thresholds 1.25, 1.5625, 1.953125
    assert metrics["a1"] == pytest.approx(1 / 3)
    assert metrics["a2"] == pytest.approx(2 / 3)
    assert metrics["a3"] == pytest.approx(2 / 3)


def test_perfect_prediction():
    gt = np.array([0.5, 3.0, 42.0, 79.0])
    metrics = compute_depth_metrics(gt, gt.copy())
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
        assert metrics[name] == 0.0
    for name in ("a1", "a2", "a3"):
        assert metrics[name] == 1.0


def test_accuracy_thresholds_are_strict_and_symmetric():
    # 5/4 is exactly 1.25 (binary-exact): not < 1.25, but < 1.5625. 4/5 under-estimates by the same ratio.
    metrics = compute_depth_metrics(np.array([4.0, 5.0]), np.array([5.0, 4.0]))
    assert metrics["a1"] == 0.0
    assert metrics["a2"] == 1.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="different numbers"):
        compute_depth_metrics(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="no valid pixels"):
        compute_depth_metrics(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match="positive"):
        compute_depth_metrics(np.array([1.0, 0.0]), np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        compute_depth_metrics(np.ones(2), np.array([1.0, np.nan]))


def test_median_scale_recovers_a_constant_scale_error():
    gt = np.array([1.0, 2.0, 4.0, 7.0, 30.0])
    scaled, ratio = median_scale(gt, gt / 2.5)
    # median(gt) = 4, median(pred) = 1.6
    assert ratio == pytest.approx(2.5)
    np.testing.assert_allclose(scaled, gt)
    metrics = compute_depth_metrics(gt, scaled)
    assert metrics["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["a1"] == 1.0


def test_median_scale_uses_medians_not_means():
    # even count: median(gt) = (4 + 6) / 2 = 5, median(pred) = (2 + 3) / 2 = 2.5 -> ratio 2,
    # whereas the mean ratio would be (2 + 4 + 6 + 100) / 4 / ((1 + 2 + 3 + 4) / 4) = 11.2
    _, ratio = median_scale(np.array([2.0, 4.0, 6.0, 100.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert ratio == pytest.approx(2.0)


def test_ratio_statistics_as_monodepth2_prints_them():
    median, spread = ratio_statistics([1.0, 2.0, 3.0])
    # ratios / median = [0.5, 1, 1.5]; population std = sqrt((0.25 + 0 + 0.25) / 3)
    assert median == 2.0
    assert spread == pytest.approx(math.sqrt(1 / 6))
    with pytest.raises(ValueError):
        ratio_statistics([])


def test_mask_quality_pools_pixels_over_images():
    quality = MaskQualityAccumulator()
    # image 1: TP at (0,0), FP at (0,1), FN at (1,0), TN at (1,1)
    quality.update(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [1, 0]]))
    # image 2: nothing predicted, one moving pixel -> FN 1, TN 3
    quality.update(np.zeros((2, 2)), np.array([[0, 0], [0, 1]]))
    result = quality.compute()
    assert (result["true_positive"], result["false_positive"]) == (1, 1)
    assert (result["false_negative"], result["true_negative"]) == (2, 4)
    assert result["num_images"] == 2
    # pooled: IoU = 1 / (1 + 1 + 2); the mean of per-image IoUs would be (1/3 + 0) / 2 = 1/6
    assert result["iou"] == pytest.approx(1 / 4)
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == pytest.approx(1 / 3)


def test_mask_quality_respects_the_valid_pixels_and_undefined_ratios():
    quality = MaskQualityAccumulator()
    predicted = np.array([[True, True], [False, False]])
    true = np.array([[True, False], [False, False]])
    quality.update(predicted, true, valid=np.array([[True, False], [True, True]]))  # drops the FP
    result = quality.compute()
    assert result["iou"] == 1.0 and result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["true_negative"] == 2

    empty = MaskQualityAccumulator()
    empty.update(np.zeros((2, 2)), np.zeros((2, 2)))
    assert math.isnan(empty.compute()["iou"])
    assert math.isnan(empty.compute()["precision"])
    with pytest.raises(ValueError, match="shape"):
        empty.update(np.zeros((2, 2)), np.zeros((2, 3)))


def _transform(angle_deg: float, translation) -> np.ndarray:
    """A rotation about the y (vertical) axis and a translation, as 4x4."""
    a = math.radians(angle_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    T[:3, 3] = translation
    return T


def test_relative_pose_errors_of_hand_made_motions():
    true = np.stack([_transform(0, [0, 0, 1.0]), _transform(2, [0, 0, 2.0]), _transform(0, [0, 0, 0])])
    # Half the scale, 1 degree too little yaw on the second pair, a sideways direction on the first.
    predicted = np.stack([_transform(0, [0.5, 0, 0.5]), _transform(1, [0, 0, 1.0]), _transform(0, [0, 0, 0])])
    errors = relative_pose_errors(predicted, true)
    assert errors["num_pairs"] == 3 and errors["num_moving"] == 2
    assert errors["rotation_deg"] == pytest.approx(1.0 / 3)
    assert errors["direction_deg"] == pytest.approx(45.0 / 2)
    # Ratios |t_true| / |t_pred| are sqrt(2) and 2: the median scale is their mean.
    scale = (math.sqrt(2) + 2) / 2
    assert errors["scale"] == pytest.approx(scale)
    first = np.linalg.norm(scale * np.array([0.5, 0, 0.5]) - [0, 0, 1.0])
    second = abs(scale * 1.0 - 2.0)
    assert errors["translation_m"] == pytest.approx((first + second) / 3)


def test_relative_pose_errors_are_zero_for_the_truth_at_any_scale():
    true = np.stack([_transform(3, [0.1, 0, 1.2]), _transform(-1, [0, 0.05, 0.8])])
    scaled = true.copy()
    scaled[:, :3, 3] *= 0.1
    errors = relative_pose_errors(scaled, true)
    assert errors["rotation_deg"] == pytest.approx(0.0, abs=1e-6)
    assert errors["direction_deg"] == pytest.approx(0.0, abs=1e-5)
    assert errors["translation_m"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="N, 4, 4"):
        relative_pose_errors(true[:, :3], true[:, :3])
