"""Masks against constructed depth maps, analytic ground planes and hand-made masks."""

import math

import pytest
import torch

from mfdepth import masks as M
from mfdepth.geometry import pixel_rays
from mfdepth.losses import distillation_loss

H, W, F_PX = 48, 64, 50.0
CAMERA_HEIGHT = 1.65
WALL = 40.0


def _K(batch=1):
    K = torch.tensor([[F_PX, 0.0, (W - 1) / 2], [0.0, F_PX, (H - 1) / 2], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).clone()


def _ground_depth(normal, height=CAMERA_HEIGHT):
    """Depth of the plane ``normal . X = height`` (camera frame), a wall at WALL metres where it is further."""
    normal = torch.tensor(normal, dtype=torch.float32)
    normal = normal / normal.norm()
    rays = pixel_rays(_K(), H, W).reshape(1, 3, H, W)
    along = (normal.reshape(1, 3, 1, 1) * rays).sum(dim=1, keepdim=True)
    ground = height / along.clamp(min=1e-6)
    return torch.where((along > 0) & (ground < WALL), ground, torch.full_like(ground, WALL)), normal


def _scene_with_car():
    """Level camera over flat ground plus a box 'car' at 8 m in columns 8-20, up to 1.5 m above the road."""
    depth, _ = _ground_depth((0.0, 1.0, 0.0))
    K = _K()
    car_z = 8.0
    y = (torch.arange(H, dtype=torch.float32) - K[0, 1, 2]) * car_z / F_PX  # camera-frame y at 8 m per row
    car_rows = (y >= CAMERA_HEIGHT - 1.5) & (y <= CAMERA_HEIGHT)
    car = torch.zeros(1, 1, H, W, dtype=torch.bool)
    car[0, 0, car_rows, 8:21] = True
    depth = torch.where(car, torch.full_like(depth, car_z), depth)
    height_of_car_rows = (CAMERA_HEIGHT - y).reshape(1, 1, H, 1).expand(1, 1, H, W)
    return depth, car, height_of_car_rows


# ---------------------------------------------------------------------------------------------
# Ratio test


def test_ratio_rule_flags_above_upper_and_below_lower():
    single = torch.full((1, 1, 1, 9), 4.0)
    multi = torch.tensor([[[[9.0, 12.0, 3.0, 1.0, 4.0, 6.0, 8.0, 3.6, 0.0]]]])
    # ratios:               2.25  3.0  0.75 0.25 1.0  1.5  2.0  0.9  unknown
    mask = M.depth_inconsistency_mask(multi, single, align_median=False)
    assert mask.dtype == torch.bool
    assert mask.flatten().tolist() == [True, True, True, True, False, False, False, False, False]


def test_median_alignment_removes_a_global_scale():
    single = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 15 + 5
    multi = 2.5 * single
    moving = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    moving[0, 0, 2, 3:8] = True
    multi = torch.where(moving, 3.0 * multi, multi)
    assert torch.equal(M.depth_inconsistency_mask(multi, single, align_median=True), moving)
    assert M.depth_inconsistency_mask(multi, single, align_median=False).all()


# ---------------------------------------------------------------------------------------------
# Ground plane


def test_plane_fit_recovers_level_and_pitched_ground_and_fails_cleanly():
    level = _scene_with_car()[0]
    pitched, pitched_normal = _ground_depth((0.05, math.cos(math.radians(6)), -math.sin(math.radians(6))))
    empty = torch.zeros_like(level)
    normal, offset = M.fit_ground_plane(torch.cat([level, pitched, empty]), _K(3))
    assert torch.allclose(normal[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)
    assert offset[0].item() == pytest.approx(CAMERA_HEIGHT, rel=1e-3)
    assert torch.allclose(normal[1], pitched_normal, atol=1e-3)
    assert offset[1].item() == pytest.approx(CAMERA_HEIGHT, rel=1e-3)
    assert torch.isnan(offset[2]) and torch.isnan(normal[2]).all()
    assert not M.ground_mask(empty, _K(), (normal[2:], offset[2:])).any()


def test_plane_fit_is_deterministic_with_a_generator():
    depth, _, _ = _scene_with_car()
    noisy = depth * (1 + 0.02 * torch.randn(depth.shape, generator=torch.Generator().manual_seed(1)))
    first = M.fit_ground_plane(noisy, _K(), generator=torch.Generator().manual_seed(7))
    second = M.fit_ground_plane(noisy, _K(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.allclose(first[0][0], torch.tensor([0.0, 1.0, 0.0]), atol=0.05)


def test_height_above_plane_is_zero_on_the_plane_and_camera_height_at_the_camera():
    normal, offset = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([1.65])
    points = torch.tensor(
        [[[0.0, 3.0, -2.0], [1.65, 0.0, 1.0], [5.0, 7.0, 9.0]]]
    )  # (1, 3, 3): columns are points
    heights = M.height_above_plane(points, normal, offset)
    assert torch.allclose(heights, torch.tensor([[[0.0, 1.65, 0.65]]]))


def test_ground_mask_marks_road_but_not_the_car_or_the_wall():
    depth, car, car_height = _scene_with_car()
    plane = M.fit_ground_plane(depth, _K())
    ground = M.ground_mask(depth, _K(), plane, tolerance=0.15)
    road = (depth < WALL) & ~car
    assert ground[road].all()
    assert not ground[car & (car_height > 0.5)].any()
    assert not ground[depth == WALL].any()
    # A known camera height in metres gives the same answer on metric depth.
    assert torch.equal(M.ground_mask(depth, _K(), plane, 0.15, camera_height=CAMERA_HEIGHT), ground)


def test_dynamic_mask_unflags_ground_but_keeps_objects_above_it():
    single, car, car_height = _scene_with_car()
    patch = torch.zeros_like(car)
    patch[0, 0, 36:45, 30:46] = True  # road pixels whose multi-frame depth is wrong (a false alarm)
    multi = torch.where(car | patch, 3.0 * single, single)
    without = M.compute_dynamic_mask(multi, single, _K(), align_median=False, ground_check=False)
    assert torch.equal(without, car | patch)
    with_check = M.compute_dynamic_mask(multi, single, _K(), align_median=False, ground_check=True)
    assert not with_check[patch].any()
    assert with_check[car & (car_height > 0.5)].all()


def test_dynamic_mask_accepts_mask_config_fields():
    import dataclasses

    from mfdepth.config import MaskConfig

    single, car, _ = _scene_with_car()
    multi = torch.where(car, 3.0 * single, single)
    cfg = dataclasses.replace(MaskConfig(), align_median=False, ground_check=False, dilation=1,
                              standing_camera_fraction=0.0)
    mask = M.compute_dynamic_mask(multi, single, _K(), **M.rule_settings(cfg))
    assert torch.equal(mask, M.dilate(car, 1))


# ---------------------------------------------------------------------------------------------
# Blobs and dilation


def _mask(rows):
    return torch.tensor([[[[c == "#" for c in row] for row in rows]]])


def test_remove_small_blobs_by_area_and_connectivity():
    mask = _mask(
        [
            "#...##..",
            "....##..",
            "........",
            "........",
            ".#....#.",
            ".#.....#",
            ".###....",
            "........",
        ]
    )
    # components: single (1), square (4), L (5), diagonal pair (2 with 8-connectivity, 2 x 1 with 4)
    keep3 = _mask(
        [
            "....##..",
            "....##..",
            "........",
            "........",
            ".#......",
            ".#......",
            ".###....",
            "........",
        ]
    )
    assert torch.equal(M.remove_small_blobs(mask, 3), keep3)
    with_pair = keep3.clone()
    with_pair[0, 0, 4, 6] = with_pair[0, 0, 5, 7] = True
    assert torch.equal(M.remove_small_blobs(mask, 2, connectivity=8), with_pair)
    assert torch.equal(M.remove_small_blobs(mask, 2, connectivity=4), keep3)
    assert torch.equal(M.remove_small_blobs(mask, 0), mask)


def test_remove_small_blobs_counts_each_image_separately():
    first = _mask(["...", "...", "..#"])
    second = _mask(["...", "...", "###"])  # its label equals the first image's single pixel label
    out = M.remove_small_blobs(torch.cat([first, second]), 2)
    assert not out[0].any()
    assert torch.equal(out[1], second[0])


def test_connected_components_follow_a_long_snake():
    snake = _mask(
        [
            "#######",
            "......#",
            "#######",
            "#......",
            "#######",
        ]
    )
    labels = M.connected_components(snake)
    assert labels[snake].unique().numel() == 1
    assert torch.equal(M.remove_small_blobs(snake, int(snake.sum())), snake)
    assert not M.remove_small_blobs(snake, int(snake.sum()) + 1).any()


def test_dilate_grows_by_a_square_and_clips_at_borders():
    centre = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    centre[0, 0, 2, 2] = True
    grown = M.dilate(centre, 1)
    expected = torch.zeros_like(centre)
    expected[0, 0, 1:4, 1:4] = True
    assert torch.equal(grown, expected)
    assert M.dilate(centre, 2).all()
    assert torch.equal(M.dilate(centre, 0), centre)
    corner = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    corner[0, 0, 0, 0] = True
    assert M.dilate(corner, 1).sum() == 4


# ---------------------------------------------------------------------------------------------
# Distillation masks


def test_reliability_mask_where_teacher_is_no_worse():
    pe_teacher = torch.tensor([[[[0.1, 0.2, 0.3]]]])
    pe_student = torch.tensor([[[[0.2, 0.2, 0.1]]]])
    assert M.reliability_mask(pe_teacher, pe_student).flatten().tolist() == [True, True, False]


def test_cost_volume_inconsistency_ratio_bounds_validity_and_upsampling():
    teacher = torch.full((1, 1, 4, 6), 10.0)
    cost = torch.tensor([[[[10.0, 25.0, 4.0], [20.0, 5.0, 0.0]]]])
    # ratios:               1.0   2.5   0.4   2.0   0.5   no depth
    inconsistent = M.cost_volume_inconsistency(cost, teacher)
    assert inconsistent.shape == (1, 1, 4, 6)
    expected_low_res = torch.tensor([[[[False, True, True], [False, False, True]]]])
    assert torch.equal(inconsistent, expected_low_res.repeat_interleave(2, 2).repeat_interleave(2, 3))
    valid = torch.tensor([[[[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]]])
    unreliable = M.cost_volume_inconsistency(cost, teacher, cost_volume_valid=valid)
    assert unreliable[0, 0, 2:, :2].all() and not unreliable[0, 0, :2, :2].any()


def test_distillation_region_and_loss_follow_the_rule():
    inconsistent = torch.tensor([[[[True, False, False, False]]], [[[False, False, False, False]]]])
    dynamic = torch.tensor([[[[False, True, False, False]]], [[[False, False, False, False]]]])
    static_camera = torch.tensor([False, True])
    reliable = torch.tensor([[[[True, True, True, False]]], [[[True, False, True, True]]]])
    region = M.distillation_region(inconsistent, dynamic, static_camera, reliable)
    assert region.tolist() == [[[[True, True, False, False]]], [[[True, False, True, True]]]]
    assert torch.equal(M.distillation_region(inconsistent), inconsistent)

    student = torch.tensor([[[[2.0, 4.0, 8.0, 8.0]]], [[[1.0, 9.0, 1.0, 1.0]]]])
    teacher = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]]], [[[1.0, 1.0, 1.0, 1.0]]]])
    # Only the distilled pixels count: log 2, log 4 in the first frame, log 1 three times in the second.
    expected = (math.log(2) + math.log(4)) / 5
    assert distillation_loss(student, teacher, region).item() == pytest.approx(expected, rel=1e-6)
    # Where the region is off (wrong depths in frame 0's last pixels, frame 1's second) nothing changes.
    off_changed = student.clone()
    off_changed[0, 0, 0, 2:] = 100.0
    off_changed[1, 0, 0, 1] = 0.01
    assert distillation_loss(off_changed, teacher, region).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Mask quality


def test_mask_quality_on_hand_made_masks():
    pred = _mask(["##..", "##..", "...."])
    truth = _mask([".##.", ".##.", "...."])
    quality = M.mask_quality(pred, truth)
    assert quality == pytest.approx({"iou": 2 / 6, "precision": 0.5, "recall": 0.5})
    empty = torch.zeros_like(pred)
    assert M.mask_quality(empty, empty) == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    assert M.mask_quality(empty, truth) == {"iou": 0.0, "precision": 1.0, "recall": 0.0}
    assert M.mask_quality(pred, empty) == {"iou": 0.0, "precision": 0.0, "recall": 1.0}
    valid = _mask(["#...", "#...", "...."])
    assert M.mask_quality(pred, truth, valid) == {"iou": 0.0, "precision": 0.0, "recall": 1.0}


def test_camera_height_scale_recovers_the_scale_of_a_rendered_road():
    import numpy as np

    from mfdepth.synth.world import CAMERA_HEIGHT as RENDERED_HEIGHT
    from mfdepth.synth.world import render_sequence

    drive = render_sequence(seed=5, num_frames=2, height=64, width=192)
    depth = torch.from_numpy(np.ascontiguousarray(drive.depth[:1]))[None]
    K = torch.from_numpy(drive.K).float()[None]
    for unknown_scale in (0.02, 1.0, 7.0):
        factor = M.camera_height_scale(depth * unknown_scale, K, RENDERED_HEIGHT)
        # Parked cars, kerbs and pedestrians stand on the road; the robust fit still finds the road.
        assert factor.item() == pytest.approx(1.0 / unknown_scale, rel=0.05)


def test_metric_by_camera_height_scales_each_image_and_gives_a_failed_fit_the_others_median():
    import numpy as np

    from mfdepth.synth.world import CAMERA_HEIGHT as RENDERED_HEIGHT
    from mfdepth.synth.world import render_sequence

    drive = render_sequence(seed=5, num_frames=3, height=64, width=192)
    truth = torch.from_numpy(np.ascontiguousarray(drive.depth[:3]))[:, None].float()
    K = torch.from_numpy(drive.K).float()[None].expand(3, 3, 3)
    units = torch.tensor([0.02, 1.0, 7.0]).reshape(3, 1, 1, 1)
    metres = M.metric_by_camera_height(truth * units, K, RENDERED_HEIGHT)
    valid = truth > 0
    assert ((metres - truth).abs()[valid] / truth[valid]).median() < 0.05  # each image at its own scale
    # No depth at all in the second image: no ground to fit; it takes the median factor of the others.
    blind = truth * units
    blind[1] = 0.0
    factors = M.camera_height_scale(blind, K, RENDERED_HEIGHT).flatten()
    assert torch.isnan(factors[1]) and torch.isfinite(factors[[0, 2]]).all()
    fixed = M.metric_by_camera_height(blind, K, RENDERED_HEIGHT)
    assert torch.isfinite(fixed).all()
    assert torch.equal(fixed[1], blind[1] * factors[[0, 2]].median())
    nothing = M.metric_by_camera_height(torch.zeros_like(truth), K, RENDERED_HEIGHT)
    assert torch.equal(nothing, torch.zeros_like(truth))  # every fit failed: factor 1


def test_least_sharp_flags_all_but_each_images_sharpest_share():
    from mfdepth.masks import least_sharp

    sharpness = torch.stack([torch.arange(16.0), torch.arange(16.0).flip(0) * 0.01]).reshape(2, 1, 4, 4)
    flat = least_sharp(sharpness, 0.25)
    assert flat.shape == sharpness.shape and flat.dtype == torch.bool
    kept = ~flat
    assert kept.sum(dim=(1, 2, 3)).tolist() == [4, 4]  # per image, whatever its scale
    assert torch.equal(sharpness[0][kept[0]].sort().values, torch.tensor([12.0, 13.0, 14.0, 15.0]))
    assert not least_sharp(sharpness, 1.0).any()


def test_standing_camera_is_the_share_of_pixels_the_automask_drops():
    kept = torch.ones(3, 1, 4, 5, dtype=torch.bool)
    kept[0] = False  # every pixel matches better unwarped: a standing camera
    kept[1, :, :3] = False  # 15 of 20 pixels
    assert M.standing_camera(kept, 0.9).tolist() == [True, False, False]
    assert M.standing_camera(kept, 0.75).tolist() == [True, True, False]
    assert not M.standing_camera(kept, 0.0).any()  # off


def test_dynamic_mask_is_empty_on_frames_whose_camera_stands():
    single, car, _ = _scene_with_car()
    multi = torch.where(car, 3.0 * single, single).expand(2, -1, -1, -1).clone()
    single = single.expand(2, -1, -1, -1).clone()
    kept = torch.ones_like(single, dtype=torch.bool)
    kept[1] = False  # the second frame's camera stands
    K = _K(2)
    plain = M.compute_dynamic_mask(multi, single, K, ground_check=False)
    assert plain[0].any() and plain[1].any()
    mask = M.compute_dynamic_mask(multi, single, K, ground_check=False, standing_camera_fraction=0.9,
                                  automask_kept=kept)
    assert torch.equal(mask[0], plain[0]) and not mask[1].any()
    with pytest.raises(ValueError, match="automask_kept"):
        M.compute_dynamic_mask(multi, single, K, standing_camera_fraction=0.9)


def test_distillation_region_can_keep_dynamic_pixels_whatever_the_reliability_mask_says():
    inconsistent = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    inconsistent[0, 0, 0, 0] = True
    dynamic = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    dynamic[0, 0, 1, :2] = True
    unreliable = torch.zeros(1, 1, 2, 3, dtype=torch.bool)  # the student warps better everywhere
    assert not M.distillation_region(inconsistent, dynamic, None, unreliable).any()  # METHOD.md
    region = M.distillation_region(inconsistent, dynamic, None, unreliable, reliability_on_dynamic=False)
    assert torch.equal(region, dynamic)  # the inconsistent pixel still needs R; the dynamic ones do not


# ---------------------------------------------------------------------------------------------
# D_o from the cost volume's two-way match


def _sideways_frames(shift_px: int):
    """A smooth texture and its neighbours seen by a camera moved sideways: a point at 4 m moves
    ``shift_px`` pixels, to the right in the previous frame and to the left in the next."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, H // 4, W // 4, generator=generator)
    target = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    sources = {-1: target.roll(shift_px, dims=-1), 1: target.roll(-shift_px, dims=-1)}
    poses = {}
    for offset, sign in ((-1, 1.0), (1, -1.0)):
        T = torch.eye(4)[None].clone()
        T[0, 0, 3] = sign * shift_px * 4.0 / F_PX  # u_source = u + fx * tx / Z
        poses[offset] = T
    return target, sources, poses


def test_two_way_match_takes_the_nearer_match_where_it_warps_better_than_the_single_frame_depth():
    target, sources, poses = _sideways_frames(shift_px=3)
    right, wrong = torch.full((1, 1, H, W), 4.0), torch.full((1, 1, H, W), 1.5)
    output = torch.full((1, 1, H, W), 7.0)
    # One match is right, the other far off (a false far match against one neighbour): the nearer is right,
    # it warps better than a wrong single-frame depth, so D_o is the match.
    far_match = torch.full((1, 1, H // 4, W // 4), 30.0)
    right_match = torch.full((1, 1, H // 4, W // 4), 4.0)
    matched = M.two_way_match_depth(output, wrong, right_match, far_match, target, sources, poses, _K())
    interior = (slice(None), slice(None), slice(None), slice(8, W - 8))  # the rolled columns wrap around
    assert matched.shape == output.shape
    assert torch.equal(matched[interior], right[interior])
    # The single-frame depth is right and both matches are wrong: D_o keeps the multi-frame output.
    matched = M.two_way_match_depth(output, right, far_match, far_match, target, sources, poses, _K())
    assert torch.equal(matched[interior], output[interior])


def test_two_way_match_keeps_the_output_where_the_match_is_nearer_than_it_should_be_on_one_side_only():
    # A match that is right against one neighbour and too near against the other: the nearer (wrong) depth
    # warps worse than the right single-frame depth, so it cannot flag anything.
    target, sources, poses = _sideways_frames(shift_px=3)
    right = torch.full((1, 1, H, W), 4.0)
    output = torch.full((1, 1, H, W), 5.0)
    near_match = torch.full((1, 1, H, W), 1.0)
    matched = M.two_way_match_depth(output, right, right, near_match, target, sources, poses, _K())
    assert torch.equal(matched[..., 8:W - 8], output[..., 8:W - 8])


def test_rule_settings_are_the_rules_keywords():
    import inspect

    from mfdepth.config import MaskConfig

    settings = M.rule_settings(MaskConfig(depth_source="two_way_match"))
    keywords = set(inspect.signature(M.compute_dynamic_mask).parameters)
    assert "depth_source" not in settings
    assert set(settings) <= keywords
    assert keywords - set(settings) == {"depth_multi", "depth_single", "K", "automask_kept", "valid", "generator"}
