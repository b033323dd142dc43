"""The renderer's ground truth against geometry: depth, poses, motion and instances agree with the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfdepth.geometry import backproject, inverse_warp, reproject_pixels
from mfdepth.synth import CAMERA_HEIGHT, SEMANTIC_CLASSES, intrinsics, render_sequence

H, W, FRAMES = 64, 192, 8
ROAD = SEMANTIC_CLASSES.index("road")


@pytest.fixture(scope="module")
def sequences():
    """Two normal-driving sequences plus one of each other profile (rendered once for the module)."""
    return {
        "normal": [render_sequence(seed, FRAMES, H, W, "normal") for seed in (0, 1)],
        "stop": render_sequence(2, 12, H, W, "stop"),
        "fast": render_sequence(3, FRAMES, H, W, "fast"),
    }


def _tensors(seq):
    images = torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(seq.depth)[:, None]
    poses = torch.from_numpy(seq.poses)
    K = torch.from_numpy(seq.K).float()[None]
    return images, depth, poses, K


def _relative(poses, source, target):
    """T_source_target from camera-to-world poses."""
    return (torch.linalg.inv(poses[source]) @ poses[target]).float()[None]


def _camera_points(seq, frame):
    """``(H, W, 3)`` camera-frame points of the GT depth, via mfdepth.geometry."""
    depth = torch.from_numpy(seq.depth[frame])[None, None]
    return backproject(depth, torch.from_numpy(seq.K).float()[None])[0].permute(1, 2, 0).numpy()


def test_arrays_have_the_documented_shapes_and_types(sequences):
    seq = sequences["normal"][0]
    assert seq.images.shape == (FRAMES, H, W, 3) and seq.images.dtype == np.uint8
    assert seq.depth.shape == (FRAMES, H, W) and seq.depth.dtype == np.float32
    assert seq.dynamic.shape == (FRAMES, H, W) and seq.dynamic.dtype == bool
    assert seq.instance.shape == (FRAMES, H, W) and seq.instance.dtype == np.uint16
    assert seq.poses.shape == (FRAMES, 4, 4) and seq.poses.dtype == np.float64
    np.testing.assert_allclose(seq.K, [[0.58 * W, 0, (W - 1) / 2], [0, 1.92 * H, (H - 1) / 2], [0, 0, 1]])
    np.testing.assert_array_equal(seq.K, intrinsics(H, W))
    # Every moving pixel belongs to an object. Sky has no depth: above the horizon (level camera), or
    # just below it where the modelled road would be over 150 m away.
    assert not (seq.dynamic & (seq.instance == 0)).any()
    sky_rows = np.nonzero(seq.depth == 0)[1]
    below = sky_rows[sky_rows > seq.K[1, 2]]
    assert sky_rows.size > 0
    assert (CAMERA_HEIGHT * seq.K[1, 1] / (below - seq.K[1, 2]) > 150.0).all()


def test_road_points_lie_camera_height_below_the_camera(sequences):
    seq = sequences["normal"][0]
    for frame in (0, FRAMES - 1):
        road = seq.semantic[frame] == ROAD
        assert road.sum() > 0.15 * H * W
        y = _camera_points(seq, frame)[..., 1][road]
        np.testing.assert_allclose(y, CAMERA_HEIGHT, atol=2e-3)
        # Road is below the horizon, and its depth grows toward the horizon as 1.65 * fy / (v - cy).
        v = np.nonzero(road)[0]
        expected = CAMERA_HEIGHT * seq.K[1, 1] / (v - seq.K[1, 2])
        np.testing.assert_allclose(seq.depth[frame][road], expected, rtol=1e-4)


def test_object_pixels_lie_on_the_surface_of_their_own_box(sequences):
    seq = sequences["normal"][1]
    boxes = {o.instance: o for o in seq.objects if o.instance}
    for frame in (0, FRAMES // 2):
        points = _camera_points(seq, frame)
        world = points @ seq.poses[frame][:3, :3].T + seq.poses[frame][:3, 3]
        ids = seq.instance[frame]
        checked = 0
        for instance in np.unique(ids[ids > 0]):
            box = boxes[int(instance)]
            centre = box.centres[frame]
            p = world[ids == instance] - centre
            outside = np.abs(p) - box.half  # 0 on a face, negative inside
            assert (outside < 2e-3).all(), f"instance {instance} ({box.role}) has points off its box"
            assert (np.abs(outside).min(axis=1) < 2e-3).all(), f"instance {instance} has points inside its box"
            checked += 1
        assert checked >= 3


def test_depth_and_poses_are_geometrically_consistent_between_frames(sequences):
    # A static point seen at t reprojects into t-1 at exactly the depth t-1 sees there. Inverse depth
    # is affine in (u, v) on a plane, so its bilinear sample between pixel centres is exact away from
    # depth edges and disocclusions (measured: median relative error 1e-7, 83-92% of pixels below 1e-3).
    for seq in [*sequences["normal"], sequences["fast"]]:
        _, depth, poses, K = _tensors(seq)
        for t in (1, FRAMES - 1):
            T = _relative(poses, t - 1, t)
            source = depth[t - 1 : t]
            inverse_source = torch.where(source > 0, 1.0 / source.clamp(min=1e-6), torch.zeros(()))
            sampled, valid = inverse_warp(inverse_source, depth[t : t + 1], T, K, padding_mode="zeros")
            _, z = reproject_pixels(depth[t : t + 1], T, K)
            static = (depth[t, 0] > 0) & ~torch.from_numpy(seq.dynamic[t]) & (valid[0, 0] > 0)
            relative = (sampled[0, 0] * z[0, 0] - 1.0).abs()[static]
            assert relative.numel() > 0.5 * H * W
            assert relative.median() < 1e-4
            assert (relative < 1e-3).float().mean() > 0.75


def test_warping_with_true_depth_and_pose_explains_static_pixels_not_moving_ones(sequences):
    # Margins measured over seeds 0-5: static L1 0.017-0.025 (hard window edges resample imperfectly),
    # depth scaled by 0.7 gives 1.5-2.2x that, moving objects 2.7-6.6x.
    for seq in sequences["normal"]:
        images, depth, poses, K = _tensors(seq)
        static_err, moving_err, wrong_err = [], [], []
        for t in range(1, FRAMES):
            T = _relative(poses, t - 1, t)
            warped, valid = inverse_warp(images[t - 1 : t], depth[t : t + 1], T, K)
            wrong, _ = inverse_warp(images[t - 1 : t], depth[t : t + 1] * 0.7, T, K)
            err = (warped - images[t : t + 1]).abs().mean(1)[0]
            err_wrong = (wrong - images[t : t + 1]).abs().mean(1)[0]
            ok = (valid[0, 0] > 0) & (depth[t, 0] > 0)
            moving = torch.from_numpy(seq.dynamic[t])
            static_err.append(err[ok & ~moving])
            wrong_err.append(err_wrong[ok & ~moving])
            moving_err.append(err[ok & moving])
        static, wrong, moving = (torch.cat(e) for e in (static_err, wrong_err, moving_err))
        assert moving.numel() > 500
        assert static.mean() < 0.035
        assert wrong.mean() > 1.3 * static.mean()
        assert moving.mean() > 2.0 * static.mean()


def test_lead_car_moves_with_the_camera_and_looks_static(sequences):
    for seq in sequences["normal"]:
        lead = next(o for o in seq.objects if o.role == "lead")
        world_step = np.linalg.norm(np.diff(lead.centres, axis=0), axis=1)
        camera_step = np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1)
        assert (world_step >= 0.25).all()
        np.testing.assert_allclose(world_step, camera_step, atol=0.15)
        centroids = []
        for frame in range(FRAMES):
            v, u = np.nonzero(seq.instance[frame] == lead.instance)
            assert u.size > 20, "the lead car must be in view"
            assert seq.dynamic[frame][v, u].all()
            centroids.append((u.mean(), v.mean()))
        image_step = np.linalg.norm(np.diff(np.array(centroids), axis=0), axis=1)
        assert image_step.max() < 1.5  # pixels, while the car travels 0.3-1.5 m per frame


def test_parked_cars_are_objects_but_never_dynamic_and_oncoming_cars_approach(sequences):
    seq = sequences["normal"][0]
    roles = {o.instance: o.role for o in seq.objects if o.instance}
    parked = [i for i, role in roles.items() if role == "parked"]
    seen_parked = np.isin(seq.instance, parked)
    assert seen_parked.any()
    assert not seq.dynamic[seen_parked].any()
    for obj in seq.objects:
        if obj.role == "oncoming":
            camera_frame = [
                np.linalg.inv(seq.poses[f]) @ np.append(obj.centres[f], 1.0) for f in range(FRAMES)
            ]
            assert np.all(np.diff([p[2] for p in camera_frame]) < -1.0)  # closing faster than 1 m/frame
    assert {"lead", "oncoming", "parked"} <= set(roles.values())


def test_camera_profiles_move_as_specified(sequences):
    def steps(seq):
        return np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1)

    for seq in sequences["normal"]:
        assert ((steps(seq) >= 0.3 - 1e-9) & (steps(seq) <= 1.5 + 1e-9)).all()
        yaw = np.degrees(np.arctan2(seq.poses[:, 0, 2], seq.poses[:, 2, 2]))
        assert np.abs(yaw).max() < 5.0
        # Level camera: rotation only about the vertical axis.
        np.testing.assert_allclose(seq.poses[:, 1, :3], np.tile([0.0, 1.0, 0.0], (FRAMES, 1)), atol=1e-12)
    assert (steps(sequences["fast"]) > 2.0).all()

    stop = sequences["stop"]
    halted = steps(stop) == 0
    assert halted.sum() >= 3 and (steps(stop) > 0).any()
    # While the camera stands still, crossing traffic passes in front of it.
    frames_halted = np.flatnonzero(halted)[1:]
    roles = {o.instance: o.role for o in stop.objects if o.instance}
    moving_roles = {roles[int(i)] for i in np.unique(stop.instance[frames_halted][stop.dynamic[frames_halted]])}
    assert "crossing" in moving_roles
    assert all(np.array_equal(stop.poses[f], stop.poses[f + 1]) for f in frames_halted)


def test_same_seed_same_arrays_and_other_seed_other_world():
    a = render_sequence(7, 3, 32, 96)
    b = render_sequence(7, 3, 32, 96)
    c = render_sequence(8, 3, 32, 96)
    for name in ("images", "depth", "dynamic", "instance", "poses"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.depth, c.depth)


def test_textures_carry_detail_at_several_scales(sequences):
    # Self-supervision needs gradients: fine (pixel) and coarse (8-pixel) intensity differences are
    # both present on static surfaces, not only at object edges.
    seq = sequences["normal"][0]
    grey = seq.images[0].astype(np.float32).mean(-1)
    wall = seq.semantic[0] == SEMANTIC_CLASSES.index("building")
    road = seq.semantic[0] == ROAD
    for region in (wall, road):
        fine = np.abs(np.diff(grey, axis=1))[region[:, 1:] & region[:, :-1]]
        coarse = np.abs(grey[:, 8:] - grey[:, :-8])[region[:, 8:] & region[:, :-8]]
        assert np.median(fine) > 0.5 and np.median(coarse) > np.median(fine)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="profile"):
        render_sequence(0, 3, 32, 96, profile="reverse")
    with pytest.raises(ValueError, match="at least 2 frames"):
        render_sequence(0, 1, 32, 96)
    with pytest.raises(ValueError, match="too small"):
        render_sequence(0, 3, 4, 96)
