"""Losses against analytic answers and constructed scenes."""

import math

import pytest
import torch
import torch.nn.functional as F

from mfdepth import losses as L
from mfdepth.geometry import pose_vector_to_matrix

# A textured fronto-parallel plane at depth Z seen by cameras translated along x by +-T: with f * T / Z an
# integer, every view is an exact crop of one wide texture, so the true depth and pose warp each source
# onto the target exactly (no resampling blur) and the known answer is "zero error".
H, W, F_PX, Z, T = 32, 48, 40.0, 4.0, 0.2
SHIFT = round(F_PX * T / Z)  # 2 pixels
MARGIN = 4


def _K(batch=1):
    K = torch.tensor([[F_PX, 0.0, (W - 1) / 2], [0.0, F_PX, (H - 1) / 2], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).clone()


def _texture(h, w, seed=0, batch=1):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(h // 4, 1), max(w // 4, 1), generator=gen)
    fine = torch.rand(batch, 3, h, w, generator=gen)
    return 0.6 * F.interpolate(coarse, (h, w), mode="bilinear", align_corners=False) + 0.4 * fine


def _plane_scene(batch=2):
    """Target and two sources of the plane; source i sits where ``X_source = X_target + (tx_i, 0, 0)``."""
    canvas = _texture(H, W + 2 * MARGIN, batch=batch)
    target = canvas[..., MARGIN : MARGIN + W]
    # u_source = u_target + f * tx / Z, so source(u) = target(u - shift) = canvas(u - shift + MARGIN).
    source_prev = canvas[..., MARGIN - SHIFT : MARGIN - SHIFT + W]  # tx = +T
    source_next = canvas[..., MARGIN + SHIFT : MARGIN + SHIFT + W]  # tx = -T
    return target, [source_prev, source_next], [T, -T]


def _poses(translations_x, batch, requires_grad=False):
    axis_angle = torch.zeros(batch, 3, requires_grad=requires_grad)
    vectors = []
    for tx in translations_x:
        t = torch.zeros(batch, 3)
        t[:, 0] = tx
        vectors.append(t.requires_grad_(requires_grad))
    return axis_angle, vectors, [pose_vector_to_matrix(axis_angle, t) for t in vectors]


def _depth_pyramid(depth_full):
    return [depth_full] + [F.avg_pool2d(depth_full, 2**s) for s in range(1, 4)]


# ---------------------------------------------------------------------------------------------
# SSIM and photometric error


def test_box_mean_equals_average_pooling_with_its_gradient():
    x = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 3, 7, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = L.box_mean_3x3(x)
    reference = F.avg_pool2d(x, 3, 1)
    assert torch.allclose(fast, reference, atol=1e-12)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), x)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.allclose(grad_fast, grad_reference, atol=1e-12)
    # A hand-checked window: the values 0..8 have mean 4.
    ramp = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert L.box_mean_3x3(ramp).item() == pytest.approx(4.0)


def test_ssim_of_image_with_itself_is_one():
    x = _texture(16, 20, batch=2)
    assert torch.allclose(L.ssim(x, x), torch.ones_like(x), atol=1e-5)
    assert torch.allclose(L.ssim_dissimilarity(x, x), torch.zeros_like(x), atol=1e-5)


def test_ssim_of_constant_images_matches_formula():
    # Zero variance leaves only the luminance term: (2ab + C1) / (a^2 + b^2 + C1).
    # float64: in float32 the window variance E[x^2] - E[x]^2 of a constant keeps ~1e-8 of rounding.
    a, b = 0.3, 0.7
    x, y = torch.full((1, 3, 6, 6), a, dtype=torch.float64), torch.full((1, 3, 6, 6), b, dtype=torch.float64)
    expected = (2 * a * b + L.SSIM_C1) / (a * a + b * b + L.SSIM_C1)
    assert torch.allclose(L.ssim(x, y), torch.full_like(x, expected), atol=1e-6)


def test_photometric_error_zero_for_identical_and_positive_otherwise():
    x = _texture(16, 20)
    y = _texture(16, 20, seed=1)
    assert L.photometric_error(x, x).shape == (1, 1, 16, 20)
    assert L.photometric_error(x, x).abs().max() < 1e-6
    assert (L.photometric_error(x, y) > 0).all()


def test_photometric_error_of_constant_images_matches_formula():
    a, b = 0.2, 0.5
    x, y = torch.full((1, 3, 5, 5), a, dtype=torch.float64), torch.full((1, 3, 5, 5), b, dtype=torch.float64)
    s = (2 * a * b + L.SSIM_C1) / (a * a + b * b + L.SSIM_C1)
    expected = 0.85 * (1 - s) / 2 + 0.15 * abs(a - b)
    assert torch.allclose(L.photometric_error(x, y), torch.full_like(x[:, :1], expected), atol=1e-6)
    assert torch.allclose(L.photometric_error(x, y, ssim_weight=0.0), torch.full_like(x[:, :1], abs(a - b)))


# ---------------------------------------------------------------------------------------------
# Minimum reprojection and auto-masking


def test_min_over_sources_picks_the_smaller_error_per_pixel():
    first = torch.tensor([[[[0.1, 0.5], [0.3, 0.0]]]])
    second = torch.tensor([[[[0.2, 0.4], [0.3, 0.9]]]])
    minimum, index = L.min_over_sources([first, second])
    assert torch.equal(minimum, torch.tensor([[[[0.1, 0.4], [0.3, 0.0]]]]))
    assert torch.equal(index, torch.tensor([[[[0, 1], [0, 0]]]]))


def test_per_pixel_min_uses_the_source_that_sees_each_pixel():
    # Source A equals the target on the left half, source B on the right half; identity pose.
    target = _texture(H, W)
    noise = _texture(H, W, seed=5)
    left = torch.zeros(1, 1, H, W, dtype=torch.bool)
    left[..., : W // 2] = True
    source_a = torch.where(left, target, noise)
    source_b = torch.where(left, noise, target)
    identity = [torch.eye(4)[None], torch.eye(4)[None]]
    out = L.self_supervised_loss(
        target, [source_a, source_b], [torch.full((1, 1, H, W), 5.0)], identity, _K()
    )
    error = out["reprojection_error"]
    away_from_seam = torch.ones_like(error, dtype=torch.bool)
    away_from_seam[..., W // 2 - 2 : W // 2 + 2] = False
    assert error[away_from_seam].max() < 1e-5
    single = L.photometric_error(source_a, target)
    assert single[..., W // 2 + 2 :].min() > 1e-3  # one source alone would not explain the right half


def test_automask_ignores_a_static_scene():
    target = _texture(H, W, batch=2)
    sources = [target.clone(), target.clone()]
    identity = [torch.eye(4).expand(2, 4, 4)] * 2
    depth = torch.rand(2, 1, H, W, generator=torch.Generator().manual_seed(3)) * 10 + 1
    out = L.self_supervised_loss(target, sources, _depth_pyramid(depth), identity, _K(2))
    assert out["automask"].dtype == torch.bool
    assert not out["automask"].any()
    assert not out["loss_mask"].any()
    assert out["photometric"].item() == 0.0
    assert torch.isfinite(out["loss"])


def test_automask_keeps_pixels_that_the_warp_explains_better():
    reprojection = torch.tensor([[[[0.1, 0.2, 0.3]]]])
    identity = torch.tensor([[[[0.2, 0.2, 0.1]]]])
    assert L.compute_automask(reprojection, identity).tolist() == [[[[True, False, False]]]]


# ---------------------------------------------------------------------------------------------
# Smoothness


def test_smoothness_zero_for_constant_disparity():
    image = _texture(16, 20)
    assert L.smoothness_loss(torch.full((1, 1, 16, 20), 0.3), image).item() == 0.0


def test_smoothness_is_scale_invariant_and_cheaper_at_image_edges():
    disp = torch.ones(1, 1, 8, 8)
    disp[..., 4:] = 2.0
    flat = torch.full((1, 3, 8, 8), 0.5)
    edge = flat.clone()
    edge[..., 4:] = 1.0
    # Mean-normalised disparity: a step of 1 over a mean of 1.5, on 8 of the 7 x 8 horizontal gradients.
    expected_flat = (1.0 / 1.5) * 8 / (8 * 7)
    assert L.smoothness_loss(disp, flat).item() == pytest.approx(expected_flat, rel=1e-5)
    assert L.smoothness_loss(10 * disp, flat).item() == pytest.approx(expected_flat, rel=1e-5)
    assert L.smoothness_loss(disp, edge).item() == pytest.approx(expected_flat * math.exp(-0.5), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The composite loss on the textured plane


def test_true_depth_and_pose_explain_the_plane_scene():
    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)
    K = _K(2)
    true = L.self_supervised_loss(target, sources, _depth_pyramid(torch.full((2, 1, H, W), Z)), poses, K)
    assert true["reprojection_error"].max() < 1e-4  # exact up to float rounding of the sampling grid
    assert true["photometric"] < 1e-4
    for wrong_depth in (Z * 0.5, Z * 2.0):
        wrong = L.self_supervised_loss(
            target, sources, _depth_pyramid(torch.full((2, 1, H, W), wrong_depth)), poses, K
        )
        assert wrong["photometric"] > 0.05
        assert wrong["loss"] > 100 * true["loss"]
    assert true["reprojection_error"].shape == (2, 1, H, W)
    assert true["automask"].shape == (2, 1, H, W)
    assert len(true["warped"]) == 2 and true["warped"][0].shape == (2, 3, H, W)
    assert torch.allclose(true["warped"][0][..., : W - SHIFT - 1], target[..., : W - SHIFT - 1], atol=1e-4)


def test_gradients_flow_to_depth_and_pose():
    target, sources, tx = _plane_scene()
    axis_angle, translations, poses = _poses(tx, batch=2, requires_grad=True)
    depth = torch.full((2, 1, H, W), Z * 1.3, requires_grad=True)
    out = L.self_supervised_loss(target, sources, _depth_pyramid(depth), poses, _K(2))
    out["loss"].backward()
    for leaf in (depth, axis_angle, *translations):
        assert leaf.grad is not None
        assert torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0
    # Too far a depth: the loss falls when the depth comes nearer.
    assert depth.grad.sum() > 0


def test_dict_sources_give_the_same_loss_as_lists():
    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)
    depths = _depth_pyramid(torch.full((2, 1, H, W), Z * 1.5))
    as_list = L.self_supervised_loss(target, sources, depths, poses, _K(2))
    as_dict = L.self_supervised_loss(
        target, {-1: sources[0], 1: sources[1]}, depths, {1: poses[1], -1: poses[0]}, _K(2)
    )
    assert torch.equal(as_list["loss"], as_dict["loss"])


def test_exclude_mask_removes_pixels_and_all_excluded_is_finite():
    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)
    depth = torch.full((2, 1, H, W), Z * 2.0, requires_grad=True)
    everything = torch.ones(2, 1, H, W, dtype=torch.bool)
    out = L.self_supervised_loss(
        target, sources, _depth_pyramid(depth), poses, _K(2), exclude_mask=everything
    )
    assert out["photometric"].item() == 0.0
    assert not out["loss_mask"].any()
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(depth.grad).all()

    # Excluding the left half: the photometric term becomes the mean over the right half only.
    half = torch.zeros(2, 1, H, W)
    half[..., : W // 2] = 1.0
    single = [torch.full((2, 1, H, W), Z * 2.0)]
    masked = L.self_supervised_loss(target, sources, single, poses, _K(2), automask=False, exclude_mask=half)
    expected = masked["reprojection_error"][..., W // 2 :].mean()
    assert masked["photometric"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_masked_mean_is_zero_on_empty_mask():
    values = torch.rand(1, 1, 4, 4, requires_grad=True)
    result = L.masked_mean(values, torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    result.backward()
    assert result.item() == 0.0 and torch.equal(values.grad, torch.zeros_like(values))


# ---------------------------------------------------------------------------------------------
# Distillation


def test_distillation_loss_matches_hand_computed_value():
    student = torch.tensor([[[[1.0, math.e, math.e**2, 4.0]]]], requires_grad=True)
    teacher = torch.ones(1, 1, 1, 4, requires_grad=True)
    region = torch.tensor([[[[False, True, True, False]]]])
    loss = L.distillation_loss(student, teacher, region)
    assert loss.item() == pytest.approx(1.5, rel=1e-6)  # mean(|1 - 0|, |2 - 0|)
    loss.backward()
    assert teacher.grad is None  # the teacher is detached
    assert torch.allclose(student.grad, torch.tensor([[[[0.0, 0.5 / math.e, 0.5 / math.e**2, 0.0]]]]))


def test_distillation_loss_is_zero_with_graph_on_empty_region():
    student = torch.full((2, 1, 4, 4), 3.0, requires_grad=True)
    teacher = torch.full((2, 1, 4, 4), 1.0)
    loss = L.distillation_loss(student, teacher, torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


# ---------------------------------------------------------------------------------------------
# Pose prior and metric scale


def test_pose_prior_loss_ignores_the_translation_norm_and_skips_invalid_pairs():
    prior = pose_vector_to_matrix(torch.tensor([[0.0, 0.02, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    same_direction = pose_vector_to_matrix(torch.tensor([[0.0, 0.02, 0.0]]), torch.tensor([[0.0, 0.0, 0.013]]))
    assert L.pose_prior_loss(same_direction, prior).item() == pytest.approx(0.0, abs=1e-6)
    sideways = pose_vector_to_matrix(torch.tensor([[0.0, 0.02, 0.0]]), torch.tensor([[0.5, 0.0, 0.0]]))
    assert L.pose_prior_loss(sideways, prior).item() == pytest.approx(1.0, abs=1e-5)  # 90 deg: 1 - cos = 1
    turned = pose_vector_to_matrix(torch.tensor([[0.0, 0.02 + math.pi / 2, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    # 90 deg of relative rotation: ||R1 - R2||_F^2 / 4 = (1 - cos 90) = 1 (the translation term adds ~0)
    assert L.pose_prior_loss(turned, prior).item() == pytest.approx(1.0, abs=1e-4)
    both = torch.cat([sideways, same_direction])
    assert L.pose_prior_loss(both, prior.expand(2, 4, 4), torch.tensor([False, True])).item() == pytest.approx(0, abs=1e-6)
    assert L.pose_prior_loss(both, prior.expand(2, 4, 4), torch.tensor([False, False])).item() == 0.0


def _road_depth(height=1.65, h=48, w=64, f=50.0, wall=30.0):
    from mfdepth.geometry import pixel_rays

    K = torch.tensor([[[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]]])
    rays = pixel_rays(K, h, w).reshape(1, 3, h, w)
    ground = height / rays[:, 1:2].clamp(min=1e-6)
    return torch.where((rays[:, 1:2] > 0) & (ground < wall), ground, torch.full_like(ground, wall)), K


def test_metric_depths_recover_the_camera_height_from_any_scale():
    depth, K = _road_depth()
    for wrong_scale in (0.01, 1.0, 37.0):
        scaled, factor = L.metric_depths([depth * wrong_scale, F.avg_pool2d(depth, 2) * wrong_scale], K, 1.65)
        assert factor.item() == pytest.approx(1.0 / wrong_scale, rel=1e-3)
        assert torch.allclose(scaled[0], depth, rtol=1e-3)
        assert scaled[1].shape == (1, 1, 24, 32)
    height, found = L.ground_height(depth * 3.0, K)
    assert found.item() and height.item() == pytest.approx(3.0 * 1.65, rel=1e-3)


def test_metric_depths_leave_no_gradient_along_the_global_scale():
    depth, K = _road_depth()
    raw = (depth * 0.2).requires_grad_(True)
    scaled, _ = L.metric_depths([raw], K, 1.65)
    scaled[0].sum().backward()
    # d/dk sum(metric(k * raw)) at k = 1 is sum(raw * grad): zero, the output does not depend on the scale.
    along_scale = (raw.detach() * raw.grad).sum().item()
    assert abs(along_scale) < 1e-4 * (raw.detach() * raw.grad).abs().sum().item()


def test_metric_depths_fall_back_where_no_ground_is_found():
    depth, K = _road_depth()
    flat_wall = torch.full_like(depth, 10.0)
    scaled, factor = L.metric_depths([torch.cat([depth * 2.0, flat_wall])], K.expand(2, 3, 3), 1.65)
    assert factor[0].item() == pytest.approx(0.5, rel=1e-3)
    assert factor[1].item() == pytest.approx(0.5, rel=1e-3)  # the batch's median factor


def test_cost_volume_target_follows_the_lowest_cost_depth_only_where_trusted():
    cost_depth = torch.tensor([[[[2.0, 8.0], [4.0, 1.0]]]])  # (1, 1, 2, 2): one value per 2x2 cell
    target = torch.nn.functional.interpolate(cost_depth, size=(4, 4), mode="nearest")
    trusted = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    trusted[..., :2, :] = True  # the top two cells
    assert L.cost_volume_target_loss(target.clone(), cost_depth, trusted).item() == pytest.approx(0.0, abs=1e-6)
    depth = (target * 2.0).requires_grad_()
    depth.data[..., 2:, :] = 100.0  # untrusted pixels, however wrong, add nothing
    loss = L.cost_volume_target_loss(depth, cost_depth, trusted)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-5)
    loss.backward()
    assert (depth.grad[..., 2:, :] == 0).all() and (depth.grad[..., :2, :] > 0).all()
    none = L.cost_volume_target_loss(depth, cost_depth, torch.zeros_like(trusted))
    assert none.item() == 0.0 and none.requires_grad


def test_own_size_scales_change_nothing_when_every_depth_is_full_size():
    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)
    depths = [torch.full((2, 1, H, W), Z * f) for f in (1.5, 0.7, 1.2, 2.0)]
    full = L.self_supervised_loss(target, sources, depths, poses, _K(2))
    own = L.self_supervised_loss(target, sources, depths, poses, _K(2), full_resolution=False)
    assert torch.equal(full["loss"], own["loss"])


def test_own_size_scales_compare_the_images_shrunk_to_each_scale():
    from mfdepth.geometry import scale_intrinsics

    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)
    depths = _depth_pyramid(torch.full((2, 1, H, W), Z * 1.4))
    out = L.self_supervised_loss(target, sources, depths, poses, _K(2), smoothness_weight=0.0, full_resolution=False)
    # Slow reference: each scale by hand from the public pieces, at the depth's own size.
    terms = []
    for depth in depths:
        h, w = depth.shape[-2:]
        shrink = lambda image, size=(h, w): F.interpolate(image, size=size, mode="area")  # noqa: E731
        small_target, small_sources = shrink(target), [shrink(s) for s in sources]
        K = scale_intrinsics(_K(2), w / W, h / H)
        reprojection, _ = L.min_reprojection_error(small_target, small_sources, depth, poses, K)
        identity = torch.minimum(*[L.photometric_error(s, small_target) for s in small_sources])
        terms.append(L.masked_mean(reprojection, reprojection < identity))
    assert out["photometric"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    assert out["reprojection_error"].shape == (2, 1, H, W)  # scale 0 is reported at full size as before


def test_own_size_scales_prefer_the_true_depth_at_every_scale():
    target, sources, tx = _plane_scene()
    _, _, poses = _poses(tx, batch=2)

    def coarse_term(depth_value, scale):
        depth = torch.full((2, 1, H >> scale, W >> scale), depth_value)
        out = L.self_supervised_loss(target, sources, [depth], poses, _K(2), automask=False, smoothness_weight=0.0,
                                     full_resolution=False)
        assert out["reprojection_error"].shape == depth.shape  # compared at the depth's own size
        return out["photometric"].item()

    for scale in (1, 2):  # at 1/8 the 32x48 scene is 4x6 pixels and its 2-pixel shift a quarter pixel
        true = coarse_term(Z, scale)
        assert all(coarse_term(Z * f, scale) > true + 1e-3 for f in (0.5, 2.0)), scale


def test_scale_anchor_loss_holds_the_mean_log_depth_and_moves_every_pixel_alike():
    # Two images whose pixels' geometric mean is 0.2 * e: the loss is (log e) ** 2 = 1 whatever their shapes.
    depth = torch.tensor([0.2 * math.e**2, 0.2, 0.2 * math.e, 0.2 * math.e]).reshape(2, 1, 1, 2).requires_grad_()
    loss = L.scale_anchor_loss(depth, 0.2)
    assert loss.item() == pytest.approx(1.0, rel=1e-5)
    loss.backward()
    # d loss / d log depth is the same for every pixel: 2 * 1 / N, pushing every depth down alike.
    log_gradient = depth.grad * depth.detach()
    assert torch.allclose(log_gradient, torch.full_like(log_gradient, 2.0 / 4))
    assert L.scale_anchor_loss(0.3 * torch.ones(2, 1, 3, 3), 0.3).item() == pytest.approx(0.0, abs=1e-12)
