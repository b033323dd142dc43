"""The two-view pose prior against the synthetic world's true camera motion."""

import numpy as np
import pytest
import torch

from mfdepth.data.two_view import TwoViewPoseEstimator, attach_pose_priors, pose_prior_table
from mfdepth.synth.world import render_sequence


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from mfdepth.synth import ensure_world

    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny")
    return root


@pytest.fixture(scope="module")
def drive():
    return render_sequence(seed=3, num_frames=4, height=96, width=320, profile="normal")


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1)))


def test_essential_matrix_pose_matches_the_true_motion(drive):
    estimator = TwoViewPoseEstimator()
    T, info = estimator.relative_pose(drive.images[2], drive.images[1], drive.K)
    true = np.linalg.inv(drive.poses[1]) @ drive.poses[2]  # T_source_target, source = the earlier frame
    assert T is not None, info
    assert np.linalg.norm(T[:3, 3]) == pytest.approx(1.0)
    assert _angle(T[:3, 3], true[:3, 3]) < 10.0
    rotation = T[:3, :3].T @ true[:3, :3]
    assert np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))) < 1.0
    # The inliers it reports satisfy the epipolar constraint of the recovered pose: x_s^T E x_t ~ 0.
    pt, ps = info["inlier_target_px"], info["inlier_source_px"]
    assert len(pt) == len(ps) == info["inliers"]
    K_inv = np.linalg.inv(drive.K)
    xt = (K_inv @ np.c_[pt, np.ones(len(pt))].T).T
    xs = (K_inv @ np.c_[ps, np.ones(len(ps))].T).T
    t = T[:3, 3]
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T[:3, :3]
    assert np.median(np.abs(np.einsum("ni,ij,nj->n", xs, E, xt))) < 1e-2


def test_a_static_camera_has_no_prior(drive):
    T, info = TwoViewPoseEstimator().relative_pose(drive.images[1], drive.images[1].copy(), drive.K)
    assert T is None
    assert info["parallax_px"] < 0.75


def test_table_and_flip_augmentation_on_the_tiny_world(tiny_world):
    from mfdepth.config import load_config
    from mfdepth.data import build_dataset
    from mfdepth.evaluation.poses import true_relative_poses

    config = load_config(None, [f"data.root={tiny_world}"])
    dataset = build_dataset(config.data, "train", augment=False)
    table = pose_prior_table(dataset)
    assert table["poses"].shape == (len(dataset), 2, 4, 4)
    previous = list(table["offsets"]).index(-1)
    true = true_relative_poses(tiny_world, dataset.sample_ids)
    moving = np.linalg.norm(true[:, :3, 3], axis=1) > 0.05
    usable = table["valid"][:, previous] & moving
    assert usable.sum() >= moving.sum() // 2
    errors = [_angle(p[:3, 3], t[:3, 3]) for p, t in zip(table["poses"][usable, previous], true[usable])]
    assert np.median(errors) < 15.0

    attach_pose_priors(dataset, table)
    plain = dataset[0]
    dataset.augment, dataset.hflip, dataset.color_jitter = True, True, False
    # Find an epoch whose draw flips item 0, then check T -> F T F.
    for epoch in range(16):
        dataset.set_epoch(epoch)
        flipped = dataset[0]
        if not torch.equal(flipped["frames"], plain["frames"]):
            break
    else:
        pytest.skip("no flip drawn in 16 epochs")
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(flipped["pose_prior"], mirror @ plain["pose_prior"] @ mirror)
    assert torch.equal(flipped["pose_prior_valid"], plain["pose_prior_valid"])
