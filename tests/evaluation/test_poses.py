"""Pose evaluation against the synthetic world's true camera poses."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mfdepth.data import build_dataset
from mfdepth.evaluation.poses import evaluate_poses, true_relative_poses
from mfdepth.synth import ensure_world
from mfdepth.synth.writer import read_poses

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
from inference_helpers import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny")
    return root


def _test_ids(root: Path) -> list[str]:
    from mfdepth.config import load_config

    config = load_config(overrides=[f"data.root={root}", "data.synth_preset=tiny", "data.frame_offsets=[0,-1]"])
    return [record.sample_id for record in build_dataset(config.data, "test", augment=False).records]


def test_true_relative_poses_point_from_target_to_previous_camera(tiny_world):
    ids = _test_ids(tiny_world)
    T = true_relative_poses(tiny_world, ids)
    assert T.shape == (len(ids), 4, 4)
    # The car drives forward: the target camera's centre lies ahead of (z > 0 in) the previous camera.
    assert (T[:, 2, 3] > -1e-6).all() and T[:, 2, 3].max() > 0.1
    folder, frame = ids[0].split()[:2]
    poses = read_poses(tiny_world / folder / "gt" / "poses.txt")
    step = np.linalg.norm(poses[int(frame)][:3, 3] - poses[int(frame) - 1][:3, 3])
    assert np.linalg.norm(T[0, :3, 3]) == pytest.approx(step)
    with pytest.raises(FileNotFoundError, match="poses.txt"):
        true_relative_poses(tiny_world / "elsewhere", ids[:1])


@pytest.mark.parametrize("stage", ["student", "pretrain"])
def test_evaluate_poses_scores_every_test_pair(tiny_world, tmp_path, stage):
    checkpoint = make_checkpoint(tmp_path / f"{stage}.ckpt", stage=stage)
    errors = evaluate_poses(checkpoint, overrides=[f"data.root={tiny_world}", "data.synth_preset=tiny"])
    assert errors["num_pairs"] == len(_test_ids(tiny_world))
    assert errors["num_moving"] > 0
    for key in ("rotation_deg", "direction_deg", "translation_m"):
        assert math.isfinite(errors[key]) and errors[key] >= 0


def test_evaluate_command_prints_depth_table_and_pose_errors(tiny_world, tmp_path, capsys):
    import json

    from mfdepth.cli import main

    checkpoint = make_checkpoint(tmp_path / "student.ckpt")
    out = tmp_path / "result.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--poses", "--quiet", "--json", str(out),
                 f"data.root={tiny_world}", "data.synth_preset=tiny"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "abs_rel" in printed.lower() and "pose net on" in printed
    assert "all" in json.loads(out.read_text())["metrics"]
