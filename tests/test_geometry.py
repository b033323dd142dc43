"""Camera geometry against analytic answers."""

import math

import pytest
import torch

from mfdepth import geometry as g


def _K(batch=1, fx=120.0, fy=110.0, cx=63.5, cy=31.5):
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).clone()


def _translation(tx=0.0, ty=0.0, tz=0.0, batch=1):
    T = torch.eye(4).expand(batch, 4, 4).clone()
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = tx, ty, tz
    return T


def _texture(h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4, w // 4, generator=gen)
    fine = torch.rand(1, 3, h, w, generator=gen)
    return 0.7 * torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear") + 0.3 * fine


def test_backproject_then_project_at_identity_returns_pixel_grid():
    h, w = 24, 40
    depth = torch.rand(2, 1, h, w) * 50 + 1
    K = _K(2)
    pixels, z = g.project(g.backproject(depth, K), K)
    grid = g.pixel_grid(h, w)[:2].reshape(2, h, w)
    assert torch.allclose(pixels, grid.expand_as(pixels), atol=1e-3)
    assert torch.allclose(z, depth, rtol=1e-5)


def test_plane_translation_matches_analytic_pixel_shift():
    # A fronto-parallel plane at depth Z seen after the camera moves by t: u' = u - fx * tx / Z.
    h, w, Z, tx, ty = 32, 64, 8.0, 0.4, -0.2
    K = _K()
    depth = torch.full((1, 1, h, w), Z)
    # Source camera sits at +t in target coordinates: X_source = X_target - t.
    pixels, z = g.reproject_pixels(depth, _translation(-tx, -ty), K)
    grid = g.pixel_grid(h, w)[:2].reshape(2, h, w)
    assert torch.allclose(pixels[0, 0] - grid[0], torch.full((h, w), -K[0, 0, 0] * tx / Z), atol=1e-4)
    assert torch.allclose(pixels[0, 1] - grid[1], torch.full((h, w), -K[0, 1, 1] * ty / Z), atol=1e-4)
    assert torch.allclose(z, depth)


def test_forward_motion_scales_about_principal_point():
    h, w, Z, tz = 32, 64, 10.0, 2.0
    K = _K()
    pixels, z = g.reproject_pixels(torch.full((1, 1, h, w), Z), _translation(tz=-tz), K)
    grid = g.pixel_grid(h, w)[:2].reshape(2, h, w)
    centre = torch.tensor([K[0, 0, 2], K[0, 1, 2]]).reshape(2, 1, 1)
    expected = centre + (grid - centre) * Z / (Z - tz)
    assert torch.allclose(pixels[0], expected, atol=1e-4)
    assert torch.allclose(z, torch.full_like(z, Z - tz))


def test_translation_parallax_is_the_analytic_shift_and_zero_for_a_turning_camera():
    # A fronto-parallel plane at Z and a sideways step tx move every pixel by fx * tx / Z; a pure rotation
    # moves pixels too but gives no parallax, and a standing camera none at all.
    h, w, Z, tx = 32, 64, 8.0, 0.4
    K = _K(3)
    depth = torch.full((3, 1, h, w), Z)
    T = torch.eye(4).expand(3, 4, 4).clone()
    T[0, 0, 3] = -tx
    T[1, :3, :3] = g.axis_angle_to_matrix(torch.tensor([[0.0, 0.05, 0.02]]))[0]
    T[1, 0, 3] = -tx
    T[2, :3, :3] = T[1, :3, :3]  # only turning
    parallax = g.translation_parallax(depth, T, K)
    assert parallax[0].item() == pytest.approx(K[0, 0, 0].item() * tx / Z, rel=1e-4)
    assert parallax[1].item() == pytest.approx(K[0, 0, 0].item() * tx / Z, rel=0.05)  # turned, then stepped
    assert parallax[2].item() == pytest.approx(0.0, abs=1e-4)
    assert g.translation_parallax(depth * 2, T, K)[0].item() == pytest.approx(parallax[0].item() / 2, rel=1e-4)


@pytest.mark.parametrize("angle", [1e-9, 1e-3, 0.5, 2.0, math.pi - 1e-4])
def test_axis_angle_round_trip(angle):
    gen = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen), dim=-1)
    aa = axis * angle
    R = g.axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(6), atol=1e-5)
    back = g.matrix_to_axis_angle(R)
    # float32 acos loses digits next to pi; the rotation is still recovered to 1e-3.
    tolerance = 1e-3 if angle > math.pi - 1e-3 else 1e-5
    assert torch.allclose(g.axis_angle_to_matrix(back), R, atol=tolerance)
    if angle < math.pi - 1e-3:
        assert torch.allclose(back, aa, atol=1e-5)


def test_axis_angle_matches_known_rotation():
    R = g.axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(R[0], expected, atol=1e-6)


def test_pose_vector_invert_and_invert_transform_agree():
    gen = torch.Generator().manual_seed(2)
    aa, t = torch.randn(4, 3, generator=gen) * 0.3, torch.randn(4, 3, generator=gen)
    T = g.pose_vector_to_matrix(aa, t)
    T_inv = g.pose_vector_to_matrix(aa, t, invert=True)
    assert torch.allclose(T_inv, g.invert_transform(T), atol=1e-6)
    assert torch.allclose(T @ T_inv, torch.eye(4).expand(4, 4, 4), atol=1e-5)
    aa2, t2 = g.matrix_to_pose_vector(T)
    assert torch.allclose(aa2, aa, atol=1e-5) and torch.allclose(t2, t, atol=1e-6)


def test_scale_intrinsics_keeps_pixel_edges_aligned():
    K = _K(1, fx=100.0, fy=100.0, cx=99.5, cy=49.5)  # image 200x100, centre exactly in the middle
    half = g.scale_intrinsics(K, 0.5, 0.5)
    assert torch.allclose(half[0, :2, 2], torch.tensor([49.5, 24.5]))
    assert torch.allclose(half[0, 0, 0], torch.tensor(50.0))
    pyramid = g.intrinsics_pyramid(K, 4)
    assert pyramid.shape == (1, 4, 3, 3)
    assert torch.allclose(pyramid[0, 2], g.scale_intrinsics(K, 0.25, 0.25)[0])
    flipped = g.flip_intrinsics_horizontally(_K(cx=60.0), width=128)
    assert flipped[0, 0, 2] == 67.0


def _plane_scene(h=48, w=96, Z=6.0, tx=0.3):
    """A textured plane at depth Z seen by a source camera shifted by tx (metres) to the right."""
    K = _K(1, fx=80.0, fy=80.0, cx=(w - 1) / 2, cy=(h - 1) / 2)
    big = _texture(h, w * 2)
    # The source image is a window of the plane texture; the target sees it shifted by fx * tx / Z pixels.
    shift = int(round(80.0 * tx / Z))  # 4 px: an exact integer shift keeps the ground truth exact
    source = big[..., :, w // 2 : w // 2 + w]
    target = big[..., :, w // 2 - shift : w // 2 - shift + w]
    T_source_target = _translation(tx=-tx)  # source camera is at +tx in target coordinates
    return source, target, torch.full((1, 1, h, w), Z), T_source_target, K, shift


def test_warp_with_true_depth_reproduces_target_and_wrong_depth_does_not():
    source, target, depth, T, K, shift = _plane_scene()
    warped, valid = g.inverse_warp(source, depth, T, K)
    inside = valid.bool().expand_as(target)
    assert inside.float().mean() > 0.9
    assert (warped - target)[inside].abs().max() < 1e-4
    wrong, valid_wrong = g.inverse_warp(source, depth * 0.5, T, K)
    both = (valid * valid_wrong).bool().expand_as(target)
    assert (wrong - target)[both].abs().mean() > 0.05


def test_valid_mask_marks_points_outside_or_behind():
    source, _, depth, T, K, shift = _plane_scene()
    _, valid = g.inverse_warp(source, depth, T, K)
    # Target columns whose rays land left of the source image are invalid: exactly `shift` columns.
    assert valid[0, 0, :, :shift].sum() == 0 and valid[0, 0, :, shift + 1 :].min() == 1
    _, behind = g.inverse_warp(source, depth, _translation(tz=-10.0), K)
    assert behind.sum() == 0


def test_gradients_flow_through_warp_to_depth_and_pose():
    source, target, depth, _, K, _ = _plane_scene()
    depth = depth.clone().requires_grad_(True)
    axis_angle = torch.zeros(1, 3, requires_grad=True)
    translation = torch.tensor([[-0.25, 0.0, 0.0]], requires_grad=True)
    T = g.pose_vector_to_matrix(axis_angle, translation)
    warped, _ = g.inverse_warp(source, depth, T, K)
    (warped - target).abs().mean().backward()
    for tensor in (depth, axis_angle, translation):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_with_rotation_and_direction_keeps_length_takes_the_rest():
    R = g.axis_angle_to_matrix(torch.tensor([[0.0, 0.1, 0.0], [0.02, 0.0, 0.0]]))
    T = g.pose_vector_to_matrix(torch.tensor([[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]),
                                torch.tensor([[3.0, 0.0, 4.0], [0.0, 0.0, 2.0]])).requires_grad_(True)
    reference = torch.eye(4).repeat(2, 1, 1)
    reference[:, :3, :3] = R
    reference[:, :3, 3] = torch.tensor([[0.0, 0.0, 10.0], [0.0, 6.0, 8.0]])
    mixed = g.with_rotation_and_direction(T, reference, torch.tensor([True, False]))
    # Replaced: the reference's rotation, its direction (0, 0, 1), T's length 5.
    torch.testing.assert_close(mixed[0, :3, :3], R[0])
    torch.testing.assert_close(mixed[0, :3, 3], torch.tensor([0.0, 0.0, 5.0]))
    torch.testing.assert_close(mixed[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    # Not replaced: T itself.
    torch.testing.assert_close(mixed[1], T[1])
    # The gradient reaches T's translation along its own direction only (the length).
    mixed[0, 2, 3].backward()
    torch.testing.assert_close(T.grad[0, :3, 3], torch.tensor([0.6, 0.0, 0.8]))
    assert T.grad[0, :3, :3].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_geometry_stays_float32_under_mixed_precision(dtype):
    # A 640-wide image, a depth the network hands over in half precision, as in mixed-precision training.
    h, w = 48, 640
    K = _K(fx=720.0, fy=720.0, cx=319.5, cy=23.5)
    depth = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0)) * 40 + 2
    T = _translation(0.3, -0.05, -1.2)
    T[0, :3, :3] = g.axis_angle_to_matrix(torch.tensor([[0.01, 0.02, -0.005]]))[0]
    reference, _ = g.reproject_pixels(depth.to(dtype).float(), T, K)
    with torch.autocast("cpu", dtype=dtype):
        guarded, _ = g.reproject_pixels(depth.to(dtype), T, K)
        unguarded, _ = g.project.__wrapped__(
            g.transform_points.__wrapped__(T, g.backproject.__wrapped__(depth.to(dtype), K)), K)
    assert guarded.dtype == torch.float32
    assert (guarded - reference).abs().max() < 1e-3
    # Without the guard the same computation lands pixels a tenth of a pixel or more off.
    assert (unguarded.float() - reference).abs().max() > 0.1
