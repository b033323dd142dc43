"""The batched cost volume against a slow, obviously-correct reference, and on the synthetic world."""

import pytest
import torch

from mfdepth.geometry import inverse_warp, scale_intrinsics
from mfdepth.models.cost_volume import (
    build_cost_volume,
    finish_cost_volume,
    match_sharpness,
    pooled_cost_volume,
    sweep_grid,
    sweep_pixels,
)


def reference_cost_volume(target, source, T, K, depths):
    """One hypothesis and one batch item at a time, with the generic inverse warp."""
    b, c, h, w = target.shape
    cost = torch.zeros(b, depths.shape[1], h, w)
    valid = torch.zeros(b, depths.shape[1], h, w, dtype=torch.bool)
    for i in range(b):
        for j in range(depths.shape[1]):
            depth = torch.full((1, 1, h, w), float(depths[i, j]))
            warped, ok = inverse_warp(source[i : i + 1], depth, T[i : i + 1], K[i : i + 1], padding_mode="zeros")
            ok = ok[0, 0].bool()
            cost[i, j] = (warped[0] - target[i]).abs().mean(0) * ok
            valid[i, j] = ok
    return cost, valid


def test_batched_cost_volume_equals_reference():
    gen = torch.Generator().manual_seed(0)
    b, c, h, w, d = 2, 5, 12, 20, 7
    target = torch.rand(b, c, h, w, generator=gen)
    source = torch.rand(b, c, h, w, generator=gen)
    K = torch.tensor([[15.0, 0.0, 9.5], [0.0, 14.0, 5.5], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone()
    T = torch.eye(4).expand(b, 4, 4).clone()
    T[0, :3, 3] = torch.tensor([0.3, -0.1, -0.8])
    T[1, :3, 3] = torch.tensor([-0.2, 0.05, 0.5])
    angle = torch.tensor(0.05)
    T[1, 0, 0], T[1, 0, 2], T[1, 2, 0], T[1, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    depths = torch.stack([torch.linspace(1.0, 20.0, d), torch.linspace(2.0, 30.0, d)])
    fast, fast_valid = build_cost_volume(target, source, T, K, depths)
    slow, slow_valid = reference_cost_volume(target, source, T, K, depths)
    # Hypotheses landing exactly on the image border may round either way in the two code paths.
    agree = fast_valid == slow_valid
    assert agree.float().mean() > 0.995
    assert torch.allclose(fast[agree], slow[agree], atol=1e-5)
    assert 0.2 < fast_valid.float().mean() < 1.0  # the test covers both kinds of pixels


def test_sweep_grid_is_the_normalised_sweep_with_its_validity():
    gen = torch.Generator().manual_seed(2)
    b, h, w, d = 2, 10, 16, 9
    K = torch.tensor([[12.0, 0.0, 7.5], [0.0, 11.0, 4.5], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone()
    T = torch.eye(4).expand(b, 4, 4).clone()
    T[:, :3, 3] = torch.randn(b, 3, generator=gen)
    T[1, 2, 3] = -3.0  # the source camera 3 m ahead: the nearest hypotheses lie behind it
    depths = torch.stack([torch.linspace(0.5, 12.0, d), torch.linspace(0.2, 6.0, d)])
    u, v, z = sweep_pixels(T, K, depths, h, w)
    grid, valid = sweep_grid(T, K, depths, h, w)
    expected = torch.stack([(2.0 * u + 1.0) / w - 1.0, (2.0 * v + 1.0) / h - 1.0], dim=-1)
    expected_valid = (expected.abs() <= 1.0).all(dim=-1) & (z > 1e-3)
    assert grid.shape == (b, d, h * w, 2) and valid.shape == (b, d, h * w)
    assert torch.equal(valid, expected_valid)
    assert torch.allclose(grid[valid], expected[valid], atol=1e-5)
    assert torch.isfinite(grid).all()
    assert 0.1 < valid.float().mean() < 0.9 and not (z[1] > 1e-3).all()  # both kinds, and points behind


def test_finish_marks_invalid_and_static_pixels_unreliable():
    cost = torch.tensor([0.5, 0.1, 0.0, 0.3]).reshape(1, 4, 1, 1)
    valid = torch.tensor([True, True, False, True]).reshape(1, 4, 1, 1)
    depths = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    filled, best, reliable = finish_cost_volume(cost * valid, valid, depths)
    assert best.item() == 2.0 and reliable.item() == 1.0  # the invalid zero cost does not win
    assert filled[0, 2, 0, 0] == 0.5
    flat = torch.full((1, 4, 1, 1), 0.2)
    _, _, reliable_flat = finish_cost_volume(flat, torch.ones_like(flat, dtype=torch.bool), depths)
    assert reliable_flat.item() == 0.0


def test_sharpness_is_how_far_the_best_cost_lies_below_the_median():
    distinct = torch.tensor([0.4, 0.1, 0.5, 0.3, 0.2]).reshape(1, 5, 1, 1)
    flat = torch.full((1, 5, 1, 1), 0.2)
    costs = torch.cat([distinct, flat, distinct])
    reliable = torch.tensor([1.0, 1.0, 0.0]).reshape(3, 1, 1, 1)
    sharp = match_sharpness(costs, reliable).flatten()
    assert sharp[0].item() == pytest.approx((0.3 - 0.1) / 0.3)  # median 0.3, lowest 0.1
    assert sharp[1].item() == 0.0  # no hypothesis stands out
    assert sharp[2].item() == 0.0  # an unreliable match is never sharp


def test_argmin_lies_next_to_true_depth_on_the_synthetic_world():
    import torch.nn.functional as F

    from mfdepth.synth import render_sequence

    h, w = 96, 320
    seq = render_sequence(seed=3, num_frames=3, height=h, width=w, profile="normal")
    images = torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255.0
    # Features = the images, each pixel described by its 3x3 neighbourhood (single pixels are ambiguous).
    features = F.unfold(images, 3, padding=1).reshape(3, -1, h, w)
    poses = torch.from_numpy(seq.poses).float()
    T_source_target = (torch.linalg.inv(poses[1]) @ poses[2])[None]
    K = torch.from_numpy(seq.K).float()[None]
    depth = torch.from_numpy(seq.depth[2]).float()
    static = (depth > 0) & ~torch.from_numpy(seq.dynamic[2])
    depths = torch.linspace(2.0, 60.0, 117)[None]  # 0.5 m apart
    # Pixels near the epipole (image centre) have no parallax under forward motion: leave them out.
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    off_centre = ((u - (w - 1) / 2).abs() > w / 5) | ((v - (h - 1) / 2).abs() > h / 4)

    def argmin_error(T):
        cost, valid = build_cost_volume(features[2:3], features[1:2], T, K, depths)
        _, best, reliable = finish_cost_volume(cost, valid, depths)
        usable = static & (depth > 3) & (depth < 40) & off_centre & reliable[0, 0].bool()
        assert usable.sum() > 5000
        return (best[0, 0][usable] - depth[usable]).abs() / depth[usable]

    error = argmin_error(T_source_target)
    assert error.median() < 0.1
    assert (error < 0.15).float().mean() > 0.6
    # A pose with twice the translation explains the images with twice the depth: far from the truth.
    doubled = T_source_target.clone()
    doubled[:, :3, 3] *= 2.0
    assert argmin_error(doubled).median() > 0.5


def test_pooled_cost_is_the_mean_over_the_valid_pixels_of_each_cell():
    gen = torch.Generator().manual_seed(1)
    b, c, h, w, d, cell = 2, 3, 16, 24, 5, 4
    target = torch.rand(b, c, h, w, generator=gen)
    source = torch.rand(b, c, h, w, generator=gen)
    K = torch.tensor([[20.0, 0.0, 11.5], [0.0, 20.0, 7.5], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone()
    T = torch.eye(4).expand(b, 4, 4).clone()
    T[0, :3, 3] = torch.tensor([0.6, 0.0, -0.3])  # large sideways motion: border cells partly invalid
    T[1, :3, 3] = torch.tensor([0.0, 0.1, 0.4])
    depths = torch.stack([torch.linspace(1.0, 10.0, d), torch.linspace(0.5, 5.0, d)])
    pooled, pooled_valid = pooled_cost_volume(target, source, T, K, depths, cell)
    fine, fine_valid = reference_cost_volume(target, source, T, K, depths)
    assert pooled.shape == (b, d, h // cell, w // cell)
    for i in range(h // cell):
        for j in range(w // cell):
            window = (slice(None), slice(None), slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
            count = fine_valid[window].sum(dim=(-2, -1)).float()
            expected_valid = count >= cell * cell / 2
            mean = fine[window].sum(dim=(-2, -1)) / count.clamp(min=1)
            assert torch.equal(pooled_valid[:, :, i, j], expected_valid) or (
                (pooled_valid[:, :, i, j] != expected_valid).float().mean() < 0.05  # border rounding
            )
            both = pooled_valid[:, :, i, j] & expected_valid
            assert torch.allclose(pooled[:, :, i, j][both], mean[both], atol=1e-4)
            assert (pooled[:, :, i, j][~pooled_valid[:, :, i, j]] == 0).all()
    assert 0.0 < (~pooled_valid).float().mean() < 0.5


def test_full_resolution_matching_pooled_to_quarter_beats_quarter_resolution_matching():
    # Why the multi-frame net also matches the images at full resolution (model.fine_matching): on the
    # 1/4 grid of a small image most of the scene moves less than a cell between frames.
    import torch.nn.functional as F

    from mfdepth.synth import render_sequence

    h, w = 64, 192
    seq = render_sequence(seed=3, num_frames=3, height=96, width=320, profile="normal")
    images = F.interpolate(torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255.0, size=(h, w),
                           mode="area")
    poses = torch.from_numpy(seq.poses).float()
    T = (torch.linalg.inv(poses[1]) @ poses[2])[None]
    K = scale_intrinsics(torch.from_numpy(seq.K).float()[None], w / 320, h / 96)
    depth = torch.from_numpy(seq.depth[2]).float()[None, None]
    quarter_depth = F.interpolate(depth, size=(h // 4, w // 4), mode="nearest")[0, 0]
    static = F.interpolate(torch.from_numpy(~seq.dynamic[2] & (seq.depth[2] > 0)).float()[None, None],
                           size=(h // 4, w // 4), mode="nearest")[0, 0].bool()
    depths = torch.linspace(2.0, 80.0, 48)[None]

    def within_25_percent(cost, valid):
        _, best, reliable = finish_cost_volume(cost, valid, depths)
        usable = static & (quarter_depth < 80) & reliable[0, 0].bool()
        ratio = best[0, 0][usable] / quarter_depth[usable]
        return float((torch.maximum(ratio, 1 / ratio) < 1.25).float().mean())

    pooled = within_25_percent(*pooled_cost_volume(images[2:3], images[1:2], T, K, depths, 4))
    small = F.interpolate(images, size=(h // 4, w // 4), mode="area")
    quarter = within_25_percent(*build_cost_volume(small[2:3], small[1:2], T, scale_intrinsics(K, 0.25, 0.25),
                                                   depths))
    assert pooled > 0.5
    assert pooled > quarter + 0.2


def test_cost_volume_at_quarter_resolution_uses_scaled_intrinsics():
    # The network matches at 1/4 resolution: K must be scaled like the image, not copied.
    K = torch.tensor([[[100.0, 0.0, 63.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]]])
    quarter = scale_intrinsics(K, 0.25, 0.25)
    assert torch.allclose(quarter[0, :2, 2], torch.tensor([15.5, 7.5]))
