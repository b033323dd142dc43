"""The convergence judge's scores against nets that output the world's truth at known scales."""

import pytest
import torch
from torch import nn

from mfdepth.config import load_config
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.evaluation.poses import true_relative_poses
from mfdepth.synth import ensure_world


class _Replay(nn.Module):
    """Returns precomputed outputs in the order the judge asks for them."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs, self.calls = outputs, 0

    def forward(self, *args, **kwargs):
        out = self.outputs[self.calls]
        self.calls += 1
        return out


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny")
    return ConvergenceJudge(load_config(None, [f"data.root={root}", "data.height=64", "data.width=192"]))


@pytest.mark.parametrize("depth_scale, pose_scale", [(0.5, 0.5), (0.5, 1.0), (0.01, 0.04)])
def test_the_judge_reads_how_far_the_depth_and_pose_scales_disagree(judge, depth_scale, pose_scale):
    truth = torch.stack([torch.from_numpy(g) for g in judge.gts])[:, None].float()
    truth = torch.where(truth > 0, truth, torch.full_like(truth, 80.0))  # sky: any depth, it is not scored
    depth = depth_scale * torch.nn.functional.interpolate(truth, size=judge.target.shape[-2:], mode="nearest")
    poses = torch.from_numpy(judge.true_poses).float().clone()
    poses[:, :3, 3] *= pose_scale
    nets = {"pose": _Replay([poses, poses]),
            "single": _Replay([{"depth": [depth[i:i + 8]]} for i in range(0, len(depth), 8)])}
    row = judge.score(nets, with_multi=False)
    assert row["single"]["abs_rel"] < 0.05  # the truth's shape, resized
    assert row["pose_direction_deg"] < 1e-3
    assert row["pose_scale"] == pytest.approx(1.0 / pose_scale, rel=1e-4)
    assert row["scale_consistency"] == pytest.approx(pose_scale / depth_scale, rel=0.02)


def _true_depth(judge):
    truth = torch.stack([torch.from_numpy(g) for g in judge.gts])[:, None].float()
    truth = torch.where(truth > 0, truth, torch.full_like(truth, 80.0))
    return torch.nn.functional.interpolate(truth, size=judge.target.shape[-2:], mode="nearest")


def test_the_held_out_photometric_error_is_lowest_for_the_true_depth_and_motion(judge):
    """The world keeps brightness constant, so warping with its true depth and poses leaves only occlusions,
    moving objects and resampling; a flat depth (same median) or the two sources' poses swapped warp the wrong pixels."""
    ids = judge.sample_ids
    true_poses = {o: torch.from_numpy(true_relative_poses(judge.config.data.root, ids, o)).float() for o in (-1, 1)}
    truth = _true_depth(judge)

    def photometric(depth, poses):
        nets = {"pose": _Replay([poses[-1], poses[1]]),
                "single": _Replay([{"depth": [depth[i:i + 8]]} for i in range(0, len(depth), 8)])}
        return judge.score(nets, with_multi=False)["single"]["photometric"]

    at_truth = photometric(truth, true_poses)
    flat = photometric(torch.full_like(truth, float(truth.median())), true_poses)
    swapped = photometric(truth, {-1: true_poses[1], 1: true_poses[-1]})
    assert at_truth < 0.5 * flat
    assert at_truth < 0.5 * swapped


@pytest.mark.parametrize("unit", [0.01, 0.5])
def test_the_judge_makes_the_truth_metric_from_the_camera_height_whatever_its_unit(judge, unit):
    """The world's own camera height (its world.json) fixes the scale: the true depth in any unit scores
    near 0 without median scaling, where the unscaled AbsRel is that of the wrong unit."""
    assert judge.camera_height == pytest.approx(1.65)
    depth = unit * _true_depth(judge)
    nets = {"pose": _Replay([torch.from_numpy(judge.true_poses).float()] * 2),
            "single": _Replay([{"depth": [depth[i:i + 8]]} for i in range(0, len(depth), 8)])}
    scores = judge.score(nets, with_multi=False)["single"]
    assert scores["abs_rel_camera_height"] < 0.05
    assert scores["abs_rel_metric"] == pytest.approx(abs(1 - unit), rel=0.05)


def test_a_camera_height_in_the_config_overrides_the_worlds(judge):
    from mfdepth.config import apply_overrides
    from mfdepth.evaluation.convergence import known_camera_height

    assert known_camera_height(apply_overrides(judge.config, ["masks.camera_height=2.0"])) == 2.0
    assert known_camera_height(apply_overrides(judge.config, ["data.dataset=folder"])) is None


@pytest.mark.parametrize("source", ["multi", "two_way_match"])
def test_the_judges_mask_compares_the_configured_depth_with_the_single_frame_one(judge, source, monkeypatch):
    """``masks.depth_source``: the judge's mask rule reads D_o from M0's output or from the two-way match,
    which gets M0's match against the previous frame and, from a second pass, against the next. Here the
    output agrees with S0 everywhere and the two-way match (a stand-in) is 5x farther on the truly moving
    pixels: the mask finds them exactly with the match and nothing with the output."""
    from mfdepth import masks as mask_rules
    from mfdepth.config import apply_overrides

    config = apply_overrides(judge.config, [f"masks.depth_source={source}", "masks.ground_check=false",
                                            "masks.lower_ratio=0", "masks.min_blob_area=0", "masks.dilation=0",
                                            "masks.standing_camera_fraction=0"])
    scored = ConvergenceJudge.__new__(ConvergenceJudge)
    scored.__dict__.update(judge.__dict__, config=config)
    truth = _true_depth(judge)
    moving = torch.stack([torch.from_numpy(m) for m in judge.motion])[:, None].float()
    moving = torch.nn.functional.interpolate(moving, size=truth.shape[-2:], mode="nearest") > 0.5
    chunks = range(0, len(truth), 8)
    previous_match, next_match = 2.0, 3.0
    multi_outputs = []
    for i in chunks:
        part = truth[i:i + 8]
        multi_outputs.append({"depth": [part], "cost_volume_depth": previous_match * part})
        if source == "two_way_match":
            multi_outputs.append({"depth": [part], "cost_volume_depth": next_match * part})
    seen = []

    def stand_in(depth_multi, depth_single, match_previous, match_next, target, sources, poses, K, ssim_weight):
        seen.append((match_previous / depth_single, match_next / depth_single, sorted(sources), sorted(poses)))
        start = 8 * (len(seen) - 1)
        return torch.where(moving[start:start + len(depth_multi)], 5.0 * depth_single, depth_single)

    monkeypatch.setattr(mask_rules, "two_way_match_depth", stand_in)
    poses = torch.from_numpy(judge.true_poses).float()
    nets = {"pose": _Replay([poses, poses]),
            "single": _Replay([{"depth": [truth[i:i + 8]]} for i in chunks]),
            "multi": _Replay(multi_outputs)}
    row = scored.score(nets)
    if source == "multi":
        assert not seen and row["masked_fraction"] == 0.0
        return
    assert len(seen) == len(chunks)
    for to_previous, to_next, offsets, pose_offsets in seen:
        assert torch.allclose(to_previous, torch.tensor(previous_match))
        assert torch.allclose(to_next, torch.tensor(next_match))
        assert offsets == pose_offsets == [-1, 1]
    assert row["mask_iou"] == pytest.approx(1.0)
    assert row["masked_fraction"] == pytest.approx(float(moving.float().mean()))
