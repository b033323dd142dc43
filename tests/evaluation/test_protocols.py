"""Crops, depth caps, resizing and dataset-level evaluation against constructed examples."""

import json
import math

import numpy as np
import pytest

from mfdepth.evaluation import (
    DepthMetricAccumulator,
    MaskQualityAccumulator,
    cityscapes_crop,
    cityscapes_eval_mask,
    compute_depth_metrics,
    crop_box,
    evaluate_depth_maps,
    format_table,
    kitti_eval_mask,
    resize_mask_nearest,
    resize_prediction,
    write_json,
)
from mfdepth.evaluation.metrics import METRIC_NAMES

# ---------------------------------------------------------------------------------------------
# Crops and caps


def test_garg_crop_on_the_kitti_size():
    # int(0.40810811 * 375) = int(153.04) = 153, int(0.99189189 * 375) = int(371.96) = 371,
    # int(0.03594771 * 1242) = int(44.65) = 44, int(0.96405229 * 1242) = int(1197.35) = 1197
    assert crop_box((375, 1242), "garg") == (153, 371, 44, 1197)
    mask = kitti_eval_mask(np.full((375, 1242), 10.0), crop="garg")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_eigen_crop_and_no_crop():
    # int(0.3324324 * 375) = int(124.66) = 124, int(0.91351351 * 375) = int(342.57) = 342
    assert crop_box((375, 1242), "eigen") == (124, 342, 44, 1197)
    assert kitti_eval_mask(np.full((4, 5), 10.0), crop=None).all()
    with pytest.raises(ValueError, match="KITTI crop"):
        kitti_eval_mask(np.full((4, 5), 10.0), crop="cityscapes")


def test_cityscapes_region_matches_manydepth():
    # ManyDepth: raw 1024x2048 -> top 768 rows -> [256:, 192:1856]
    assert crop_box((768, 2048), "cityscapes") == (256, 768, 192, 1856)
    raw = np.arange(1024 * 2048, dtype=np.float64).reshape(1024, 2048)
    region = cityscapes_crop(raw, bonnet_removed=False)
    assert region.shape == (512, 1664)
    np.testing.assert_array_equal(region, raw[256:768, 192:1856])
    np.testing.assert_array_equal(cityscapes_crop(raw[:768]), region)
    mask = cityscapes_eval_mask(np.full((768, 2048), 10.0))
    assert mask.sum() == 512 * 1664 and mask[256:, 192:1856].all()


def test_cityscapes_bonnet_fraction_matches_the_data_module():
    from mfdepth.data.cityscapes import KEEP_TOP
    from mfdepth.evaluation.protocols import CITYSCAPES_KEEP_TOP

    assert CITYSCAPES_KEEP_TOP == KEEP_TOP


def test_depth_cap_excludes_pixels_outside_the_range():
    gt = np.array([[0.0, 1e-4, 0.5, 79.9, 80.0, 100.0, np.nan]])
    mask = kitti_eval_mask(gt, min_depth=1e-3, max_depth=80.0, crop=None)
    np.testing.assert_array_equal(mask, [[False, False, True, True, False, False, False]])
    # the excluded pixels hold absurd predictions, which would spoil the metrics if they were scored
    pred = np.array([[50.0, 50.0, 0.5, 79.9, 1.0, 1.0, 1.0]])
    result = evaluate_depth_maps([pred], [gt], protocol="synthetic", median_scaling=False)
    assert result.metrics["all"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert result.metrics["all"]["a1"] == 1.0


def test_kitti_protocol_scores_only_inside_the_garg_crop():
    # (37, 124): rows int(15.1)=15 .. int(36.7)=36, cols int(4.46)=4 .. int(119.5)=119
    gt = np.full((37, 124), 10.0)
    pred = np.full((37, 124), 40.0)
    pred[15:36, 4:119] = 10.0
    result = evaluate_depth_maps([pred], [gt], protocol="kitti", median_scaling=False, resize_space="depth")
    assert result.crop == "garg"
    assert result.metrics["all"]["abs_rel"] == 0.0
    uncropped = evaluate_depth_maps([pred], [gt], protocol="kitti", median_scaling=False, crop=None)
    assert uncropped.metrics["all"]["abs_rel"] > 0.1


def test_prediction_is_clamped_to_the_depth_cap():
    gt = np.array([[10.0, 20.0]])
    pred = np.array([[10.0, 200.0]])
    result = evaluate_depth_maps([pred], [gt], median_scaling=False, max_depth=80.0)
    # pred clamped to [10, 80]: abs_rel = mean(0, |20 - 80| / 20) = 1.5 (unclamped it would be 4.5)
    assert result.metrics["all"]["abs_rel"] == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------
# Resizing


def test_resize_prediction_bilinear_half_pixel_centres():
    pred = np.array([[1.0, 2.0]])
    # output column i samples input x = (i + 0.5) * 2 / 4 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped to [0, 1])
    np.testing.assert_allclose(resize_prediction(pred, (1, 4), space="depth"), [[1.0, 1.25, 1.75, 2.0]])
    # in inverse depth: 1/d = [1, 0.5] -> [1, 0.875, 0.625, 0.5] -> d = [1, 8/7, 1.6, 2]
    np.testing.assert_allclose(resize_prediction(pred, (1, 4)), [[1.0, 8 / 7, 1.6, 2.0]])
    assert resize_prediction(pred[None, None], (1, 2)).shape == (1, 2)


def test_resize_mask_nearest_keeps_blocks():
    mask = np.array([[1.0, 0.0], [0.0, 1.0]])
    big = resize_mask_nearest(mask, (4, 4))
    np.testing.assert_array_equal(big, np.kron(mask, np.ones((2, 2))).astype(bool))
    np.testing.assert_array_equal(resize_mask_nearest(big, (2, 2)), mask.astype(bool))


# ---------------------------------------------------------------------------------------------
# Dataset-level evaluation


def test_median_scaling_on_and_off():
    gt = np.array([[2.0, 4.0], [8.0, 16.0]])
    pred = gt / 3.0
    scaled = evaluate_depth_maps([pred], [gt], median_scaling=True)
    assert scaled.metrics["all"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert scaled.metrics["all"]["a1"] == 1.0
    assert scaled.ratio_median == pytest.approx(3.0)
    assert scaled.ratio_std == pytest.approx(0.0, abs=1e-12)
    raw = evaluate_depth_maps([pred], [gt], median_scaling=False)
    # |gt - gt/3| / gt = 2/3 at every pixel; max ratio 3 fails every threshold
    assert raw.metrics["all"]["abs_rel"] == pytest.approx(2 / 3)
    assert raw.metrics["all"]["a3"] == 0.0
    assert raw.ratio_median == pytest.approx(3.0)  # still reported: how far from metric scale


def test_ratio_spread_over_images():
    gt = np.full((2, 2), 6.0)
    result = evaluate_depth_maps([np.full((2, 2), 6.0), np.full((2, 2), 3.0), np.full((2, 2), 2.0)], [gt] * 3)
    # ratios 1, 2, 3 -> median 2, std([0.5, 1, 1.5]) = sqrt(1/6)
    assert result.ratio_median == pytest.approx(2.0)
    assert result.ratio_std == pytest.approx(math.sqrt(1 / 6))


def _split_example():
    """Image 1: moving top row scored as the [1, 2, 4] vs [1, 3, 2] example, static row perfect."""
    gt = np.array([[1.0, 2.0, 4.0], [2.0, 2.0, 2.0]])
    pred = np.array([[1.0, 3.0, 2.0], [2.0, 2.0, 2.0]])
    moving = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    return gt, pred, moving


def test_static_and_moving_split():
    gt, pred, moving = _split_example()
    still_gt = np.full((2, 2), 5.0)
    result = evaluate_depth_maps(
        [pred, np.full((2, 2), 5.0)], [gt, still_gt], median_scaling=False,
        motion_masks=[moving, np.zeros((2, 2))],
    )
    # all: image 1 abs_rel = (0 + 0.5 + 0.5 + 0 + 0 + 0) / 6 = 1/6, image 2 = 0 -> mean 1/12
    assert result.metrics["all"]["abs_rel"] == pytest.approx(1 / 12)
    # moving: only image 1 has moving pixels -> abs_rel 1/3, a1 1/3
    assert result.metrics["moving"]["abs_rel"] == pytest.approx(1 / 3)
    assert result.metrics["moving"]["a1"] == pytest.approx(1 / 3)
    assert result.metrics["static"]["abs_rel"] == 0.0
    assert result.image_counts == {"all": 2, "static": 2, "moving": 1}
    assert result.images_without_moving == 1
    assert result.images_without_static == 0


def test_motion_mask_is_resized_to_the_gt_grid():
    gt, pred, moving = _split_example()
    coarse_moving = np.array([[1.0], [0.0]])  # (2, 1): top row moving
    result = evaluate_depth_maps([pred], [gt], median_scaling=False, motion_masks=[coarse_moving])
    assert result.metrics["moving"]["abs_rel"] == pytest.approx(1 / 3)
    assert result.metrics["static"]["abs_rel"] == 0.0


def test_median_ratio_comes_from_all_valid_pixels_not_from_each_split():
    gt, pred, moving = _split_example()
    pred = pred * 0.5
    # all valid pixels: median(gt) = 2, median(pred) = 1 -> ratio 2, restoring the unscaled example
    result = evaluate_depth_maps([pred], [gt], median_scaling=True, motion_masks=[moving])
    assert result.metrics["moving"]["abs_rel"] == pytest.approx(1 / 3)
    assert result.metrics["static"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_ragged_sizes():
    gts = [np.full((4, 6), 2.0), np.full((3, 5), 8.0)]
    preds = [np.full((2, 3), 1.0), np.full((6, 10), 2.0)]  # one down-, one up-sampled
    result = evaluate_depth_maps(preds, gts, median_scaling=False)
    # abs_rel: |2 - 1| / 2 = 0.5 and |8 - 2| / 8 = 0.75 -> mean 0.625
    assert result.metrics["all"]["abs_rel"] == pytest.approx(0.625)
    scaled = evaluate_depth_maps(preds, gts, median_scaling=True)
    assert scaled.metrics["all"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_accumulator_equals_batch_and_direct_computation():
    rng = np.random.default_rng(0)
    shapes = [(6, 8), (5, 9), (7, 7)]
    gts = [rng.uniform(0.5, 90.0, size=s) for s in shapes]  # some pixels above the 80 m cap
    preds = [rng.uniform(1.0, 30.0, size=s) for s in shapes]
    masks = [rng.uniform(size=s) > 0.6 for s in shapes]

    accumulator = DepthMetricAccumulator(protocol="synthetic", median_scaling=True)
    for pred, gt, mask in zip(preds, gts, masks):
        accumulator.update(pred, gt, motion_mask=mask)
    streamed = accumulator.compute()
    batch = evaluate_depth_maps(preds, gts, protocol="synthetic", motion_masks=masks)
    assert streamed.to_dict() == batch.to_dict()

    expected = {row: [] for row in ("all", "static", "moving")}
    for pred, gt, mask in zip(preds, gts, masks):
        valid = (gt > 1e-3) & (gt < 80.0)
        g, p, m = gt[valid], pred[valid], mask[valid]
        p = np.clip(p * np.median(g) / np.median(p), 1e-3, 80.0)
        expected["all"].append(compute_depth_metrics(g, p))
        expected["static"].append(compute_depth_metrics(g[~m], p[~m]))
        expected["moving"].append(compute_depth_metrics(g[m], p[m]))
    for row, per_image in expected.items():
        for name in METRIC_NAMES:
            assert streamed.metrics[row][name] == pytest.approx(np.mean([d[name] for d in per_image]))


def test_frames_without_previous_are_counted_and_skipped():
    gt = np.full((2, 2), 4.0)
    preds = [np.full((2, 2), 4.0), np.full((2, 2), 400.0), np.full((2, 2), 4.0)]
    result = evaluate_depth_maps(preds, [gt] * 3, median_scaling=False, has_previous=[True, False, True])
    assert result.num_frames == 3
    assert result.skipped_no_previous == 1
    assert result.image_counts["all"] == 2
    assert result.metrics["all"]["abs_rel"] == 0.0  # the skipped frame's bad prediction is not scored


def test_frames_without_valid_ground_truth_are_counted():
    preds = [np.full((2, 2), 4.0), np.full((2, 2), 4.0)]
    gts = [np.zeros((2, 2)), np.full((2, 2), 4.0)]
    result = evaluate_depth_maps(preds, gts)
    assert result.skipped_no_valid_gt == 1
    assert result.num_evaluated == 1


def test_bad_arguments_fail_with_a_message():
    with pytest.raises(ValueError, match="protocol"):
        evaluate_depth_maps([], [], protocol="nyu")
    with pytest.raises(ValueError, match="2 predictions but 1"):
        evaluate_depth_maps([np.ones((2, 2))] * 2, [np.ones((2, 2))])
    with pytest.raises(ValueError, match="frame 0"):
        evaluate_depth_maps([np.zeros((2, 2))], [np.ones((2, 2))])


# ---------------------------------------------------------------------------------------------
# Reports


def test_table_and_json_report(tmp_path):
    gt, pred, moving = _split_example()
    result = evaluate_depth_maps([pred], [gt], median_scaling=False, motion_masks=[moving])
    quality = MaskQualityAccumulator()
    quality.update(np.zeros((2, 3)), np.zeros((2, 3)))  # IoU undefined (NaN)
    result.mask_quality = quality.compute()

    table = format_table(result)
    lines = table.splitlines()
    assert "| pixels | images | abs_rel | sq_rel | rmse | rmse_log | a1 | a2 | a3 |" in lines
    # moving row = the hand-computed example: 1/3, 1/2, sqrt(5/3), 0.4636, 1/3, 2/3, 2/3
    assert "| moving | 1 | 0.333 | 0.500 | 1.291 | 0.464 | 0.333 | 0.667 | 0.667 |" in lines
    assert "| static | 1 | 0.000 | 0.000 | 0.000 | 0.000 | 1.000 | 1.000 | 1.000 |" in lines
    assert [line.split(" |")[0] for line in lines if line.startswith("| ") and "images" not in line] == [
        "| all", "| static", "| moving"
    ]
    assert "IoU n/a" in table

    path = write_json(result, tmp_path / "report" / "metrics.json")
    data = json.loads(path.read_text())
    assert data["metrics"]["moving"]["abs_rel"] == pytest.approx(1 / 3)
    assert data["image_counts"] == {"all": 1, "static": 1, "moving": 1}
    assert data["mask_quality"]["iou"] is None
    assert data["scale_ratio"]["median"] == pytest.approx(1.0)


def test_accumulator_from_eval_config():
    from mfdepth.config import EvalConfig

    accumulator = DepthMetricAccumulator.from_config(
        EvalConfig(protocol="cityscapes", median_scaling=False, max_depth=50.0)
    )
    assert (accumulator.crop, accumulator.median_scaling, accumulator.max_depth) == ("cityscapes", False, 50.0)
