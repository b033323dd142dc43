"""Plane-sweep depth labels: known depths of a constructed scene, the loss's known values, the labels'
travel through the dataset (flips, caching) and into the pretrain stage's loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfdepth import losses
from mfdepth.geometry import pose_vector_to_matrix
from mfdepth.training.stereo_prior import CELL, stereo_depth_labels

H, W, F_PX, MARGIN = 64, 96, 40.0, 12


def _texture(h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4, w // 4, generator=gen)
    fine = torch.rand(1, 3, h, w, generator=gen)
    return 0.6 * F.interpolate(coarse, (h, w), mode="bilinear", align_corners=False) + 0.4 * fine


def _K():
    return torch.tensor([[[F_PX, 0.0, (W - 1) / 2], [0.0, F_PX, (H - 1) / 2], [0.0, 0.0, 1.0]]])


def _plane_views(shift: int):
    """A fronto-parallel textured plane seen from three cameras on a line: the previous one one unit to
    the right (x + 1), the next one unit to the left, so the plane lies at ``F_PX / shift`` units."""
    canvas = _texture(H, W + 2 * MARGIN)
    target = canvas[..., MARGIN:MARGIN + W]
    previous = canvas[..., MARGIN - shift:MARGIN - shift + W]
    following = canvas[..., MARGIN + shift:MARGIN + shift + W]
    rotation = torch.zeros(1, 3)
    T_previous = pose_vector_to_matrix(rotation, torch.tensor([[1.0, 0.0, 0.0]]))
    T_following = pose_vector_to_matrix(rotation, torch.tensor([[-1.0, 0.0, 0.0]]))
    return target, previous, following, T_previous, T_following


@pytest.mark.parametrize("shift", [2, 5])
def test_labels_find_the_planes_depth_in_translation_lengths(shift):
    target, previous, following, T_previous, T_following = _plane_views(shift)
    labels = stereo_depth_labels(target, previous, following, T_previous, T_following, _K())
    assert labels.shape == (1, 1, H // CELL, W // CELL)
    labelled = labels > 0
    assert labelled.float().mean() > 0.2  # the sharpest half of the cells that both matches agree on
    depth = F_PX / shift
    # Hypotheses are 5.7% apart in log depth: the label is the nearest one.
    assert ((labels[labelled] / depth - 1.0).abs() < 0.06).float().mean() > 0.95


def test_a_static_camera_gives_no_labels():
    target = _texture(H, W)
    T = pose_vector_to_matrix(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]]))
    # Source frames equal to the target: every hypothesis but the farthest matches equally badly or well.
    labels = stereo_depth_labels(target, target.clone(), target.clone(), T, torch.linalg.inv(T), _K())
    assert (labels == 0).all()


def test_stereo_prior_loss_sees_the_shape_not_the_scale():
    labels = torch.rand(2, 1, 4, 6) + 0.5  # every cell labelled
    labels[1, 0, 0, :5] = 0.0
    labels[1, 0, 1:] = 0.0  # image 1: one labelled cell, fewer than the minimum: ignored
    depth = 3.0 * F.interpolate(labels, scale_factor=4, mode="nearest")  # the labels' shape at another scale
    depth[0, 0, :4, :4] *= 2.0  # one cell of image 0 twice as far as the labels say
    depth.requires_grad_(True)
    loss = losses.stereo_prior_loss(depth, labels)
    assert loss.item() == pytest.approx(np.log(2.0) / 24, rel=1e-5)  # median residual = log 3
    loss.backward()
    assert depth.grad[0].abs().sum() > 0 and depth.grad[1].abs().sum() == 0
    rescaled = losses.stereo_prior_loss(depth.detach() * 7.0, labels)
    assert rescaled.item() == pytest.approx(loss.item(), rel=1e-5)
    empty = losses.stereo_prior_loss(depth, torch.zeros_like(labels))
    assert empty.item() == 0.0 and empty.requires_grad


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from mfdepth.synth import ensure_world

    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny")
    return root


def test_labels_are_cached_and_travel_with_their_sample_and_flip_with_it(tiny_world, tmp_path):
    from test_training_stages import tiny_config

    from mfdepth.data.augment import draw_augmentation, item_generator
    from mfdepth.run_layout import stereo_prior_path
    from mfdepth.training.recipe import training_dataset

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=2")
    dataset = training_dataset(config, tmp_path / "run", with_masks=False, stereo_labels="stereo_prior_steps")
    cache = stereo_prior_path(tmp_path / "run")
    assert cache.is_file()
    with np.load(cache) as data:
        table = data["depth"]
    assert table.shape == (len(dataset), 1, 64 // CELL, 192 // CELL) and (table > 0).any()
    flips = [draw_augmentation(item_generator(dataset.seed, dataset.epoch, i), True, False).flip
             for i in range(len(dataset))]
    assert any(flips) and not all(flips)
    for index, flipped in enumerate(flips):
        expected = torch.from_numpy(table[index])
        got = dataset[index]["stereo_depth"]
        torch.testing.assert_close(got, expected.flip(-1) if flipped else expected, rtol=0, atol=0)
    mtime = cache.stat().st_mtime
    training_dataset(config, tmp_path / "run", with_masks=False, stereo_labels="stereo_prior_steps")
    assert cache.stat().st_mtime == mtime  # read back, not computed again


def test_the_pretrain_stage_adds_the_stereo_term_only_within_its_steps(tiny_world, tmp_path):
    from test_training_stages import tiny_config

    from mfdepth.training.recipe import run_stage

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=1", "train.warmup_steps=2")
    run_stage("pretrain", config, config.run_dir, progress=False)
    import csv

    with (tmp_path / "run" / "logs" / "pretrain.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # Step 0 logs the term (it may be 0 when the batch's images have too few labelled cells); step 1 has none.
    assert float(rows[0]["stereo_prior"]) >= 0 and rows[1]["stereo_prior"] == ""


def test_the_stereo_prior_says_why_it_cannot_label():
    from mfdepth.config import load_config, stereo_prior_unavailable

    assert stereo_prior_unavailable(load_config(None, [])) is None
    assert "train.pose_prior_steps" in stereo_prior_unavailable(load_config(None, ["train.pose_prior_steps=0"]))
    assert "data.frame_offsets" in stereo_prior_unavailable(load_config(None, ["data.frame_offsets=[0,-1]"]))


def test_without_the_next_frame_the_run_trains_without_labels_and_says_so(tiny_world, tmp_path, caplog):
    import logging

    from test_training_stages import tiny_config

    from mfdepth.run_layout import stereo_prior_path
    from mfdepth.training.recipe import training_dataset

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=2", "data.frame_offsets=[0,-1]")
    with caplog.at_level(logging.WARNING, logger="mfdepth.training.recipe"):
        dataset = training_dataset(config, tmp_path / "run", with_masks=False, stereo_labels="stereo_prior_steps")
    assert "train.stereo_prior_steps=2" in caplog.text and "data.frame_offsets" in caplog.text
    assert "stereo_depth" not in dataset[0] and not stereo_prior_path(tmp_path / "run").exists()


def test_a_band_ignores_labels_far_off_the_depth():
    labels = torch.ones(1, 1, 4, 6)
    depth = torch.ones(1, 1, 16, 24)
    depth[0, 0, :4, :4] = 3.0  # one cell 3x off, one 1.5x off, the rest exact (median residual 0)
    depth[0, 0, 4:8, :4] = 1.5
    everything = losses.stereo_prior_loss(depth, labels)
    banded = losses.stereo_prior_loss(depth, labels, band=2.0)
    assert everything.item() == pytest.approx((np.log(3.0) + np.log(1.5)) / 24, rel=1e-5)
    assert banded.item() == pytest.approx(np.log(1.5) / 23, rel=1e-5)  # the 3x cell no longer counts


@pytest.mark.parametrize("override, key", [("loss.stereo_prior_network=all", "loss.stereo_prior_network"),
                                           ("loss.stereo_prior_band=0.5", "loss.stereo_prior_band")])
def test_bad_stereo_settings_name_their_key(override, key):
    from mfdepth.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_labels_on_the_multi_frame_net_leave_the_single_frame_net_photometric(tiny_world, tmp_path):
    import csv

    from test_training_stages import tiny_config

    from mfdepth.training.recipe import run_stage

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=2", "loss.stereo_prior_network=multi")
    run_stage("pretrain", config, config.run_dir, progress=False)
    with (tmp_path / "run" / "logs" / "pretrain.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # Step 0 is the warm-up (no multi-frame net yet), step 1 the joint step: the term is M0's only.
    assert all(not row.get("stereo_prior") for row in rows)
    assert rows[0]["multi_stereo_prior"] == "nan" and float(rows[1]["multi_stereo_prior"]) >= 0


def test_labels_on_both_nets_reach_the_multi_frame_net_once_it_joins(tiny_world, tmp_path):
    import csv

    from test_training_stages import tiny_config

    from mfdepth.training.recipe import run_stage

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=2", "loss.stereo_prior_network=both")
    run_stage("pretrain", config, config.run_dir, progress=False)
    with (tmp_path / "run" / "logs" / "pretrain.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # S0's term in both steps, M0's from its first (joint) step on.
    assert all(row["stereo_prior"] and float(row["stereo_prior"]) >= 0 for row in rows)
    assert rows[0]["multi_stereo_prior"] == "nan" and float(rows[1]["multi_stereo_prior"]) >= 0


def test_an_identity_margin_drops_what_barely_moves_and_keeps_the_parallax():
    target, previous, following, T_previous, T_following = [t.clone() for t in _plane_views(5)]
    # The right half: a smooth object a quarter pixel apart in each frame, as if it drove with the camera
    # (under the static-world assumption it sits ~130 units away), and sensor noise in every frame.
    smooth = F.interpolate(torch.rand(1, 3, H // 8, W // 8 + 2, generator=torch.Generator().manual_seed(3)),
                           (H, W + 16), mode="bicubic", align_corners=False)
    noise = torch.Generator().manual_seed(5)
    for image, shift in ((target, 0.0), (previous, -0.25), (following, 0.25)):
        x = torch.arange(W // 2, W).float() + 8 + shift
        left = x.floor().long()
        weight = x - left
        image[..., W // 2:] = smooth[..., left] * (1 - weight) + smooth[..., left + 1] * weight
        image += 0.02 * torch.randn(image.shape, generator=noise)
    half = W // CELL // 2
    labels = {margin: stereo_depth_labels(target, previous, following, T_previous, T_following, _K(), keep_sharpest=1.0,
                                          identity_margin=margin)[0, 0] for margin in (None, 1.0)}
    assert (labels[None][:, half:] > 0).float().mean() > 0.2  # the far false depth is labelled without the check
    assert (labels[1.0][:, half:] > 0).float().mean() < 0.02
    # The plane's parallax is kept (a cell or two may change with the per-image agreement offset).
    assert (labels[1.0][:, :half] > 0).sum() >= 0.95 * (labels[None][:, :half] > 0).sum()


def test_a_negative_identity_margin_names_its_key():
    from mfdepth.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.stereo_prior_identity_margin"):
        load_config(None, ["train.stereo_prior_identity_margin=-0.1"])
    assert load_config(None, ["train.stereo_prior_identity_margin=0.25"]).train.stereo_prior_identity_margin == 0.25


def _select_labels_one_image_at_a_time(depth_p, depth_f, both, sharp, agreement, keep_sharpest):
    """The selection written per image, as plainly as possible: the reference for the batched one."""
    labels = torch.zeros_like(depth_p)
    log_ratio = torch.log(depth_p) - torch.log(depth_f)
    for i in range(depth_p.shape[0]):
        if both[i].sum() < 8:
            continue
        offset = log_ratio[i][both[i]].median()
        agree = both[i] & ((log_ratio[i] - offset).abs() < np.log1p(agreement))
        if agree.sum() < 8:
            continue
        threshold = torch.quantile(sharp[i][agree], 1.0 - keep_sharpest)
        labels[i] = torch.where(agree & (sharp[i] >= threshold), depth_p[i], torch.zeros_like(depth_p[i]))
    return labels


@pytest.mark.parametrize("agreement, keep_sharpest", [(0.2, 0.5), (0.1, 1.0), (0.3, 0.25)])
def test_batched_label_selection_equals_the_per_image_reference(agreement, keep_sharpest):
    from mfdepth.training.stereo_prior import select_labels

    gen = torch.Generator().manual_seed(7)
    shape = (5, 1, 16, 48)
    depth_p = torch.exp(torch.rand(shape, generator=gen) * 4)
    scale = torch.tensor([1.0, 0.7, 1.3, 2.0, 1.0]).view(5, 1, 1, 1)  # one length ratio per image
    depth_f = depth_p * scale * torch.exp(0.3 * torch.randn(shape, generator=gen))
    both = torch.rand(shape, generator=gen) < 0.6
    both[3] = torch.rand(shape[1:], generator=gen) < 0.01  # an image with too few usable cells
    sharp = torch.rand(shape, generator=gen)
    batched = select_labels(depth_p, depth_f, both, sharp, agreement, keep_sharpest)
    reference = _select_labels_one_image_at_a_time(depth_p, depth_f, both, sharp, agreement, keep_sharpest)
    assert (reference > 0).sum() > 100 and (reference[3] == 0).all()
    assert torch.equal(batched, reference)


def test_the_teacher_labels_skip_the_cells_the_mask_touches():
    from mfdepth.config import load_config
    from mfdepth.training.stages import TeacherStage

    stage = TeacherStage(load_config(None, ["train.stereo_prior_teacher_steps=1"])).train()
    labels = torch.ones(1, 1, 4, 6)
    depth = torch.ones(1, 1, 16, 24)
    depth[0, 0, :4, :4] = 3.0  # one cell 3x off, the rest exact
    batch = {"stereo_depth": labels}
    assert stage.labels_term(batch, depth, 1).item() == pytest.approx(np.log(3.0) / 24, rel=1e-5)
    moving = torch.zeros(1, 1, 16, 24, dtype=torch.bool)
    moving[0, 0, 3, 3] = True  # a single pixel of the bad cell
    assert stage.labels_term(batch, depth, 1, moving).item() == pytest.approx(0.0, abs=1e-7)
    stage.global_step = 1
    assert stage.labels_term(batch, depth, 1) is None  # past its steps


def test_the_labels_fade_linearly_over_their_last_steps():
    from mfdepth.config import load_config
    from mfdepth.training.stages import TeacherStage

    stage = TeacherStage(load_config(None, ["train.stereo_prior_fade_steps=4"])).train()
    labels = torch.ones(1, 1, 4, 6)
    depth = torch.ones(1, 1, 16, 24)
    depth[0, 0, :4, :4] = 3.0
    full = np.log(3.0) / 24
    batch = {"stereo_depth": labels}
    expected = {0: full, 5: full, 6: full, 7: 0.75 * full, 9: 0.25 * full}  # 10 steps, the last 4 fading
    for step, value in expected.items():
        stage.global_step = step
        assert stage.labels_term(batch, depth, 10).item() == pytest.approx(value, rel=1e-5), step
    stage.global_step = 10
    assert stage.labels_term(batch, depth, 10) is None


def test_the_teacher_and_student_stages_learn_from_the_labels_within_their_steps(tiny_world, tmp_path):
    import csv

    from test_training_stages import tiny_config

    from mfdepth.run_layout import stereo_prior_path
    from mfdepth.training.recipe import run_stage

    config = tiny_config(tiny_world, tmp_path / "run", "train.stereo_prior_steps=0", "train.stereo_prior_teacher_steps=1",
                         "train.stereo_prior_student_steps=1")
    for stage in ("pretrain", "masks"):
        run_stage(stage, config, config.run_dir, progress=False)
    assert not stereo_prior_path(tmp_path / "run").exists()  # the pretrain stage asked for none
    for stage in ("teacher", "student"):
        run_stage(stage, config, config.run_dir, progress=False)
        assert stereo_prior_path(tmp_path / "run").is_file()
        with (tmp_path / "run" / "logs" / f"{stage}.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert float(rows[0]["stereo_prior"]) >= 0 and rows[1]["stereo_prior"] == ""


def test_the_labels_give_the_translation_length_of_a_depth_in_its_own_unit():
    labels = torch.rand(3, 1, 4, 6) + 0.5
    labels[0, 0, 0, :3] = 0.0  # unlabelled cells do not count
    labels[2, 0, 1:] = 0.0  # image 2: fewer labelled cells than the minimum
    lengths = torch.tensor([0.02, 1.5, 4.0])
    depth = lengths.view(3, 1, 1, 1) * F.interpolate(labels, scale_factor=4, mode="nearest")
    depth[0, 0, 4:8, 4:8] *= 10.0  # one wrong label: the median ignores it
    log_length, enough = losses.label_translation_length(depth, labels)
    assert enough.tolist() == [True, True, False]
    torch.testing.assert_close(log_length[:2], torch.log(lengths[:2]), rtol=0, atol=1e-5)


def test_the_pose_length_loss_moves_the_translation_toward_the_labels_length_and_never_the_depth():
    labels = torch.rand(2, 1, 4, 6) + 0.5
    depth = 0.3 * F.interpolate(labels, scale_factor=4, mode="nearest")  # the previous translation is 0.3 long
    depth.requires_grad_(True)
    translation = torch.tensor([[0.0, 0.0, 0.6], [0.3, 0.0, 0.0]], requires_grad=True)  # 2x too long, exact
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, :3, 3] = translation
    loss = losses.pose_length_loss(T, depth, labels)
    assert loss.item() == pytest.approx(np.log(2.0) / 2, rel=1e-5)
    loss.backward()
    assert depth.grad is None or depth.grad.abs().sum() == 0
    assert translation.grad[0, 2] > 0 and translation.grad[1].abs().sum() == 0  # shorten the long one only
    empty = losses.pose_length_loss(T, depth.detach(), torch.zeros_like(labels))
    assert empty.item() == 0.0


def test_the_pose_length_term_is_on_while_the_labels_are():
    from mfdepth.config import load_config
    from mfdepth.training.stages import PretrainStage

    stage = PretrainStage(load_config(None, ["loss.pose_length_weight=0.5"])).train()
    labels = torch.ones(1, 1, 4, 6)
    depth = 2.0 * torch.ones(1, 1, 16, 24)  # the labels say the previous translation is 2 long
    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = 2.0 * np.e  # e times too long
    batch = {"stereo_depth": labels}
    assert stage.pose_length_term(batch, {-1: T, 1: T}, depth, 10).item() == pytest.approx(0.5, rel=1e-5)
    assert stage.pose_length_term(batch, {1: T}, depth, 10) is None  # no previous frame
    stage.global_step = 10
    assert stage.pose_length_term(batch, {-1: T}, depth, 10) is None  # past the labels' steps
    off = PretrainStage(load_config(None, ["loss.pose_length_weight=0"])).train()
    assert off.pose_length_term(batch, {-1: T}, depth, 10) is None


def test_the_scale_anchor_term_is_weighted_and_switched_off_at_zero():
    from mfdepth.config import load_config
    from mfdepth.training.stages import PretrainStage, TeacherStage

    depth = 0.2 * np.e * torch.ones(2, 1, 8, 12)  # the default initial depth 0.2 times e: (log e) ** 2 = 1
    anchored = PretrainStage(load_config(None, ["loss.scale_anchor_weight=0.5"])).train()
    assert anchored.scale_anchor_term(depth).item() == pytest.approx(0.5, rel=1e-5)
    assert anchored.eval().scale_anchor_term(depth) is None  # a training term only
    assert PretrainStage(load_config(None, ["loss.scale_anchor_weight=0"])).train().scale_anchor_term(depth) is None
    teacher = TeacherStage(load_config(None, [])).train()  # the default weight, 0.1, on the teacher too
    assert teacher.scale_anchor_term(depth).item() == pytest.approx(0.1, rel=1e-5)
