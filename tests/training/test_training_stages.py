"""The staged recipe end to end on the tiny synthetic world: every stage runs, resumes exactly, and
stops on a non-finite loss with the step and samples named."""

import copy
import json
import math

import pytest
import torch

from mfdepth.config import load_config
from mfdepth.run_layout import checkpoint_paths
from mfdepth.training import loop
from mfdepth.training.checkpoint import load_checkpoint
from mfdepth.training.recipe import MissingStageError, run_stage
from mfdepth.training.stages import PretrainStage, StudentStage, TeacherStage

TINY = [
    "data.synth_preset=tiny",
    "data.height=64",
    "data.width=192",
    "data.num_workers=0",
    "model.num_depth_bins=8",
    "train.batch_size=2",
    "train.pretrain_steps=2",
    "train.warmup_steps=1",  # both phases of the pretrain stage: single-frame + pose, then with the multi-frame net
    "train.pose_prior_steps=1",
    "train.teacher_steps=2",
    "train.student_steps=2",
    "train.checkpoint_every=1",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from mfdepth.synth import ensure_world

    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny")
    return root


def tiny_config(world, run_dir, *extra):
    return load_config(None, [*TINY, f"data.root={world}", f"run_dir={run_dir}", *extra])


def first_batch(config):
    """The first training batch of two (no masks) in ``config.run_dir``'s data."""
    from torch.utils.data import DataLoader

    from mfdepth.training.recipe import training_dataset

    return next(iter(DataLoader(training_dataset(config, config.run_dir, with_masks=False), batch_size=2)))


def distillation_regions(stage_class, config, batch, monkeypatch, variants):
    """One training forward of ``stage_class`` per override list in ``variants``, on the same batch and
    start (the pretrain stage's multi-frame net has joined); for each, the region its first distillation
    call distils from the single-frame net (the pretrain consistency term, the student's distillation) and
    the pixels the cost-volume target pulls (None where the term is off). Returns ``({key: (region,
    trusted)}, the last stage)``."""
    from mfdepth import losses
    from mfdepth.config import apply_overrides

    runtime = loop.setup_runtime("cpu", "auto", "32")
    seen = {}
    distill, target = losses.distillation_loss, losses.cost_volume_target_loss
    # The cost-volume target term makes a distillation call of its own, after the stage's.
    monkeypatch.setattr(losses, "distillation_loss",
                        lambda d, t, region: seen.setdefault("region", region.clone()) is None or distill(d, t, region))
    monkeypatch.setattr(losses, "cost_volume_target_loss",
                        lambda d, c, trusted: seen.setdefault("trusted", trusted.clone()) is None or target(d, c, trusted))
    regions = {}
    for key, overrides in variants.items():
        torch.manual_seed(0)
        seen.clear()
        stage = stage_class(apply_overrides(config, overrides)).train()
        stage.global_step = config.train.warmup_steps if stage_class is PretrainStage else 0
        loop.forward_under_autocast(stage, batch, loop.step_generator(0, 1), runtime)
        regions[key] = (seen["region"], seen.get("trusted"))
    return regions, stage


def test_all_stages_run_and_write_their_outputs(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run")
    results = run_stage("all", config, config.run_dir, progress=False)
    run_dir = tmp_path / "run"
    assert set(results) == {"pretrain", "masks", "teacher", "student"}
    for stage in ("pretrain", "teacher", "student"):
        checkpoint = load_checkpoint(run_dir / "checkpoints" / f"{stage}.ckpt")
        assert checkpoint["step"] == 2 and checkpoint["stage"] == stage
        assert checkpoint["meta"]["height"] == 64 and checkpoint["meta"]["config"]["data"]["width"] == 192
        # train.precision=auto is stored resolved: what this machine's CPU computed in.
        assert checkpoint["meta"]["precision"] == ("bf16-mixed" if loop.cpu_computes_bfloat16() else "32")
        assert (run_dir / "logs" / f"{stage}.csv").is_file()
    summary = json.loads((run_dir / "masks" / "summary.json").read_text())
    assert 0.0 <= summary["masked_fraction"] <= 1.0
    assert {"iou", "precision", "recall"} <= set(summary)  # the synthetic world has true motion masks
    student = load_checkpoint(run_dir / "checkpoints" / "student.ckpt")
    assert {"multi", "pose", "teacher"} <= set(student["models"])
    assert student["meta"]["d_min"] < student["meta"]["d_max"]
    assert (run_dir / "config.yaml").is_file()
    # A finished stage is not trained again.
    mtime = (run_dir / "checkpoints" / "student.ckpt").stat().st_mtime
    run_stage("student", config, config.run_dir, progress=False)
    assert (run_dir / "checkpoints" / "student.ckpt").stat().st_mtime == mtime


def test_frames_whose_camera_stands_get_an_empty_mask(tiny_world, tmp_path, monkeypatch):
    """``masks.standing_camera_fraction``: the masks stage clears the mask of every frame whose auto-mask
    drops at least that share of its pixels, and of no other (a rule that flags every pixel stands in for M0,
    an auto-mask that drops every pixel of the first item of each batch, none of the second, for S0's)."""
    from mfdepth import losses
    from mfdepth.config import apply_overrides
    from mfdepth.masks import dynamic as dynamic_rules
    from mfdepth.training.recipe import run_masks

    config = tiny_config(tiny_world, tmp_path / "sc", "masks.ground_check=false")
    run_stage("pretrain", config, config.run_dir, progress=False)
    monkeypatch.setattr(dynamic_rules, "depth_inconsistency_mask", lambda depth_multi, *a, **k: torch.ones_like(
        depth_multi, dtype=torch.bool))

    def first_item_stands(target, *args, **kwargs):
        kept = torch.ones_like(target[:, :1], dtype=torch.bool)
        kept[0] = False
        return kept

    monkeypatch.setattr(losses, "automask_of", first_item_stands)
    summaries = {f: run_masks(apply_overrides(config, [f"masks.standing_camera_fraction={f}"]), tmp_path / "sc",
                              progress=False) for f in (0.0, 0.9)}
    off, on = summaries[0.0], summaries[0.9]
    frames = off["frames"]
    assert off["masked_fraction"] == 1.0 and off["standing_camera_frames"] == 0
    standing = (frames + 1) // 2  # batches of 2: the first item of each
    assert on["standing_camera_frames"] == standing
    assert on["masked_fraction"] == pytest.approx(1.0 - standing / frames)


def test_the_masks_stage_compares_the_two_way_match_with_s0(tiny_world, tmp_path, monkeypatch, caplog):
    """``masks.depth_source=two_way_match``: the masks stage runs the two-way match and gives the rule its
    D_o. The real function first (the summary names the source), then a stand-in returning 3x S0's depth on
    the left half and S0's elsewhere: exactly that half is flagged (upper side only, no median alignment),
    and the stand-in saw M0's matches against both neighbours. Without the frame +1 it falls back to M0's
    output and says so."""
    from mfdepth import masks as mask_rules
    from mfdepth.config import apply_overrides
    from mfdepth.training.recipe import run_masks

    config = tiny_config(tiny_world, tmp_path / "tw", "masks.ground_check=false", "masks.lower_ratio=0",
                         "masks.align_median=false", "masks.depth_source=two_way_match", "masks.min_blob_area=0",
                         "masks.dilation=0", "masks.standing_camera_fraction=0")
    run_stage("pretrain", config, config.run_dir, progress=False)
    summary = run_masks(config, config.run_dir, progress=False)
    assert summary["depth_source"] == "two_way_match" and 0.0 <= summary["masked_fraction"] <= 1.0
    seen = []

    def left_half_far(depth_multi, depth_single, match_previous, match_next, target, sources, poses, K, ssim_weight):
        seen.append((tuple(match_previous.shape[1:]), tuple(match_next.shape[1:]), sorted(sources), sorted(poses)))
        far = torch.zeros_like(depth_single, dtype=torch.bool)
        far[..., : far.shape[-1] // 2] = True
        return torch.where(far, 3.0 * depth_single, depth_single)

    monkeypatch.setattr(mask_rules, "two_way_match_depth", left_half_far)
    assert run_masks(config, config.run_dir, progress=False)["masked_fraction"] == 0.5
    height, width = config.data.height, config.data.width
    assert seen and all(previous == following == (1, height // 4, width // 4) for previous, following, _, _ in seen)
    assert all(offsets == pose_offsets == [-1, 1] for _, _, offsets, pose_offsets in seen)
    seen.clear()
    run_masks(apply_overrides(config, ["masks.depth_source=multi"]), config.run_dir, progress=False)
    assert not seen
    with caplog.at_level("WARNING", logger="mfdepth.training.recipe"):
        summary = run_masks(apply_overrides(config, ["data.frame_offsets=[0,-1]"]), config.run_dir, progress=False)
    assert not seen and summary["depth_source"] == "multi"
    assert "needs the frame +1" in caplog.text and "masks.depth_source=multi" in caplog.text


def test_the_masks_stage_scores_the_rule_before_its_dilation(tiny_world, tmp_path, monkeypatch):
    """``masks.dilation``: the stored masks are the rule's flags dilated (a 4 x 4 square of far D_o becomes
    6 x 6 at one pixel), and the summary scores both: its ``before_dilation`` entry equals the quality of the
    same run without dilation."""
    from mfdepth import masks as mask_rules
    from mfdepth.config import apply_overrides
    from mfdepth.training.recipe import run_masks

    config = tiny_config(tiny_world, tmp_path / "dil", "masks.ground_check=false", "masks.lower_ratio=0",
                         "masks.align_median=false", "masks.depth_source=two_way_match", "masks.min_blob_area=0",
                         "masks.dilation=0", "masks.standing_camera_fraction=0")
    run_stage("pretrain", config, config.run_dir, progress=False)

    def square_far(depth_multi, depth_single, *args, **kwargs):
        far = torch.zeros_like(depth_single, dtype=torch.bool)
        far[..., 6:10, 10:14] = True
        return torch.where(far, 3.0 * depth_single, depth_single)

    monkeypatch.setattr(mask_rules, "two_way_match_depth", square_far)
    plain = run_masks(config, config.run_dir, progress=False)
    dilated = run_masks(apply_overrides(config, ["masks.dilation=1"]), config.run_dir, progress=False)
    pixels = config.data.height * config.data.width
    assert plain["masked_fraction"] == pytest.approx(16 / pixels)
    assert dilated["masked_fraction"] == pytest.approx(36 / pixels)
    assert "before_dilation" not in plain and dilated["dilation"] == 1
    for key in ("iou", "precision", "recall"):
        assert dilated["before_dilation"][key] == plain[key]


def test_stage_without_its_input_names_the_command(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "empty")
    with pytest.raises(MissingStageError, match="--stage pretrain"):
        run_stage("teacher", config, config.run_dir, progress=False)


def test_resume_after_interruption_gives_the_same_weights(tiny_world, tmp_path):
    steps = ["train.pretrain_steps=3"]
    straight = tiny_config(tiny_world, tmp_path / "straight", *steps)
    run_stage("pretrain", straight, straight.run_dir, progress=False)

    interrupted = tiny_config(tiny_world, tmp_path / "interrupted", *steps)
    # First call stops after one step, as a killed run would after its checkpoint; the second resumes.
    run_stage("pretrain", interrupted, interrupted.run_dir, progress=False, stop_after=1)
    partial = load_checkpoint(tmp_path / "interrupted" / "checkpoints" / "pretrain-last.ckpt")
    assert partial["step"] == 1
    assert not (tmp_path / "interrupted" / "checkpoints" / "pretrain.ckpt").exists()
    run_stage("pretrain", interrupted, interrupted.run_dir, progress=False)

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "pretrain.ckpt")["models"]
    b = load_checkpoint(tmp_path / "interrupted" / "checkpoints" / "pretrain.ckpt")["models"]
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after resume"


def test_nan_loss_stops_with_step_and_samples_named(tiny_world, tmp_path, monkeypatch):
    config = tiny_config(tiny_world, tmp_path / "nan", "train.pretrain_steps=3")
    original = PretrainStage.forward
    calls = {"n": 0}

    def poisoned(self, batch, generator):
        loss, scalars, images = original(self, batch, generator)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), scalars, images

    monkeypatch.setattr(PretrainStage, "forward", poisoned)
    with pytest.raises(loop.NonFiniteLossError) as info:
        run_stage("pretrain", config, config.run_dir, progress=False)
    message = str(info.value)
    assert "step 2" in message and "2026_01_01" in message and "pretrain-last.ckpt" in message
    # The checkpoint of step 2 was due, but the weights it would hold gave the NaN: step 1's is kept.
    kept = load_checkpoint(tmp_path / "nan" / "checkpoints" / "pretrain-last.ckpt")
    assert kept["step"] == 1
    for state in kept["models"].values():
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_depth_pinned_at_its_bound_stops_the_stage_and_keeps_the_checkpoint_from_before(tiny_world, tmp_path,
                                                                                          monkeypatch):
    config = tiny_config(tiny_world, tmp_path / "pinned", "train.pretrain_steps=6", "train.collapse_guard_steps=2")
    original = PretrainStage.forward
    calls = {"n": 0}

    def collapsing(self, batch, generator):
        loss, scalars, images = original(self, batch, generator)
        calls["n"] += 1
        assert 0 <= float(scalars["pinned_fraction"]) < 0.95  # the real start: no pixel near a bound
        if calls["n"] >= 3:
            scalars = {**scalars, "pinned_fraction": torch.tensor(1.0)}
        return loss, scalars, images

    monkeypatch.setattr(PretrainStage, "forward", collapsing)
    with pytest.raises(loop.DepthCollapseError) as info:
        run_stage("pretrain", config, config.run_dir, progress=False)
    message = str(info.value)
    assert "up to step 3" in message and "train.grad_clip" in message and "pretrain-last.ckpt" in message
    # Steps 2 and 3 saw a pinned depth: the checkpoints due after steps 2 and 3 were never written.
    assert load_checkpoint(tmp_path / "pinned" / "checkpoints" / "pretrain-last.ckpt")["step"] == 1
    assert calls["n"] == 4


def test_a_depth_started_at_the_lower_bound_trips_the_guard(tiny_world, tmp_path):
    # The sigmoid starts where the depth is 1.001 x model.min_depth: every pixel is pinned from the first step.
    at_bound = ["train.pretrain_steps=3", "model.min_depth=0.01", "model.initial_depth=0.01001"]
    config = tiny_config(tiny_world, tmp_path / "on", *at_bound, "train.collapse_guard_steps=2")
    with pytest.raises(loop.DepthCollapseError, match=r"\[0.01, 100\] m for the 2 steps up to step 1,"):
        run_stage("pretrain", config, config.run_dir, progress=False)
    off = tiny_config(tiny_world, tmp_path / "off", *at_bound, "train.collapse_guard_steps=0")
    run_stage("pretrain", off, off.run_dir, progress=False)  # the guard off: the stage runs to its end
    assert load_checkpoint(tmp_path / "off" / "checkpoints" / "pretrain.ckpt")["step"] == 3


def test_batch_sampler_order_is_a_function_of_seed_and_epoch():
    full = list(loop.ResumableBatchSampler(10, 3, seed=1, epoch=2))
    assert len(full) == 3 and full != [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    resumed = list(loop.ResumableBatchSampler(10, 3, seed=1, epoch=2, skip_batches=1))
    assert resumed == full[1:]
    other_epoch = list(loop.ResumableBatchSampler(10, 3, seed=1, epoch=3))
    assert other_epoch != full
    ranks = [list(loop.ResumableBatchSampler(10, 2, seed=1, epoch=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == 8


def test_learning_rate_schedule():
    assert loop.learning_rate(1e-4, 0, 0) == 1e-4
    assert loop.learning_rate(1e-4, 99, 100) == 1e-4
    assert loop.learning_rate(1e-4, 100, 100) == pytest.approx(1e-5)


def test_cosine_schedule_with_linear_warm_up():
    assert loop.learning_rate(1e-3, 0, 0, "cosine", 100, 10) == pytest.approx(1e-4)
    assert loop.learning_rate(1e-3, 9, 0, "cosine", 100, 10) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.09))))
    assert loop.learning_rate(1e-3, 50, 0, "cosine", 100, 10) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert loop.learning_rate(1e-3, 100, 0, "cosine", 100, 0) == pytest.approx(1e-5)


@pytest.mark.parametrize("per_network", [False, True])
def test_a_network_joining_late_gets_its_own_schedule(per_network):
    config = load_config(None, ["train.lr_schedule=cosine", "train.learning_rate=1e-3", "train.warmup_steps=100",
                                f"train.lr_per_network={str(per_network).lower()}"])
    stage = PretrainStage(config)
    groups = loop.parameter_groups(stage)
    assert [g["network"] for g in groups] == ["single", "multi", "pose"]
    assert sum(len(g["params"]) for g in groups) == len([p for p in stage.parameters() if p.requires_grad])
    optimizer = loop.make_optimizer(groups, config.train)
    loop.Schedule(config.train, 200, stage.first_step).apply(optimizer, 100)
    rates = {g["network"]: g["lr"] for g in optimizer.param_groups}
    assert rates["single"] == rates["pose"] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # half-way down
    # The multi-frame net's first step: the full rate when it has its own schedule, else the shared one.
    assert rates["multi"] == pytest.approx(1e-3 if per_network else rates["single"])
    loop.Schedule(config.train, 200, stage.first_step).apply(optimizer, 199)
    assert {g["network"]: g["lr"] for g in optimizer.param_groups}["multi"] == pytest.approx(
        loop.learning_rate(1e-3, 99 if per_network else 199, 0, "cosine", 100 if per_network else 200))


def test_each_stage_peaks_at_its_own_rate_where_given():
    config = load_config(None, ["train.lr_schedule=cosine", "train.learning_rate=2e-4",
                                "train.teacher_learning_rate=5e-5"])
    # Step 0 of a cosine schedule is its peak; the student stage keeps train.learning_rate.
    assert loop.Schedule(config.train, 100, stage="teacher").rate(0) == pytest.approx(5e-5)
    assert loop.Schedule(config.train, 100, stage="teacher").rate(100) == pytest.approx(5e-7)
    assert loop.Schedule(config.train, 100, stage="student").rate(0) == pytest.approx(2e-4)
    assert loop.Schedule(config.train, 100, stage="pretrain").rate(0) == pytest.approx(5e-4)  # its own default
    unset = load_config(None, ["train.learning_rate=3e-4", "train.pretrain_learning_rate=null"])
    assert loop.Schedule(unset.train, 100, stage="pretrain").rate(0) == pytest.approx(3e-4)
    config = load_config(None, ["train.student_learning_rate=1e-4"])
    assert loop.Schedule(config.train, 100, stage="student").rate(0) == pytest.approx(1e-4)
    assert loop.Schedule(config.train, 100, stage="teacher").rate(0) == pytest.approx(config.train.learning_rate)
    with pytest.raises(Exception, match="train.teacher_learning_rate"):
        load_config(None, ["train.teacher_learning_rate=0"])
    with pytest.raises(Exception, match="train.pretrain_learning_rate"):
        load_config(None, ["train.pretrain_learning_rate=-1e-4"])


def test_the_pose_net_runs_at_its_fraction_of_each_stages_rate():
    config = load_config(None, ["train.lr_schedule=cosine", "train.learning_rate=2e-4",
                                "train.pretrain_learning_rate=1e-3", "train.pose_learning_rate_scale=0.5"])
    pretrain = loop.Schedule(config.train, 100, stage="pretrain")
    assert pretrain.rate(0, "pose") == pytest.approx(5e-4)
    assert pretrain.rate(0, "single") == pytest.approx(1e-3)
    assert pretrain.rate(50, "pose") == pytest.approx(0.5 * pretrain.rate(50, "single"))  # the same schedule
    assert loop.Schedule(config.train, 100, stage="teacher").rate(0, "pose") == pytest.approx(1e-4)
    assert loop.Schedule(config.train, 100, stage="teacher").rate(0, "teacher") == pytest.approx(2e-4)
    with pytest.raises(Exception, match="train.pose_learning_rate_scale"):
        load_config(None, ["train.pose_learning_rate_scale=0"])
    after = load_config(None, ["train.lr_schedule=cosine", "train.pretrain_learning_rate=1e-3",
                               "train.pose_learning_rate_scale=0.5", "train.pose_learning_rate_scale_after_prior=true",
                               "train.pose_prior_steps=20"])
    pretrain = loop.Schedule(after.train, 100, stage="pretrain")
    assert pretrain.rate(19, "pose") == pytest.approx(pretrain.rate(19, "single"))  # the prior still holds it
    assert pretrain.rate(20, "pose") == pytest.approx(0.5 * pretrain.rate(20, "single"))


def test_cost_volume_range_starts_at_the_teachers_depth(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run", "model.adaptive_range_momentum=0.99")
    stage = PretrainStage(config)
    teacher = torch.linspace(2.0, 20.0, 64 * 192).reshape(1, 1, 64, 192)
    stage.update_depth_range(stage.multi, teacher, first=True)
    low, high = torch.quantile(teacher.flatten(), torch.tensor([0.01, 0.99]))
    assert stage.multi.d_min.item() == pytest.approx(low.item(), rel=1e-4)
    assert stage.multi.d_max.item() == pytest.approx(high.item(), rel=1e-4)
    stage.update_depth_range(stage.multi, teacher * 2.0)  # later calls follow the running average
    assert stage.multi.d_max.item() == pytest.approx(0.99 * high.item() + 0.01 * 2.0 * high.item(), rel=1e-4)
    plain = PretrainStage(load_config(None, [*TINY, f"data.root={tiny_world}", "model.range_from_teacher=false"]))
    plain.update_depth_range(plain.multi, teacher, first=True)
    assert plain.multi.d_max.item() == pytest.approx(0.99 * 100.0 + 0.01 * high.item(), rel=1e-4)


def test_warm_up_trains_the_single_frame_and_pose_nets_alone_with_the_pose_prior(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run", "train.warmup_steps=1", "train.pose_prior_steps=1")
    checkpoint = run_stage("pretrain", config, config.run_dir, progress=False)
    assert (tmp_path / "run" / "pose_prior.npz").is_file()
    rows = loop.read_loss_log(tmp_path / "run", "pretrain")
    assert rows[0]["step"] == 1 and rows[0]["pose_prior"] >= 0 and math.isnan(rows[0].get("multi_photometric", math.nan))
    assert not math.isnan(rows[1]["multi_photometric"]) and math.isnan(rows[1].get("pose_prior", math.nan))
    assert load_checkpoint(checkpoint)["step"] == 2


def test_multi_frame_net_can_join_as_a_copy_of_the_single_frame_net(tiny_world, tmp_path):
    # A learning rate far below float precision: the checkpoint holds the weights the net joined with.
    config = tiny_config(tiny_world, tmp_path / "run", "train.warmup_steps=1", "train.multi_from_single=true",
                         "train.pretrain_learning_rate=1e-30")
    run_stage("pretrain", config, config.run_dir, progress=False)
    # The raw weights travel in the rolling checkpoint (the final one holds the averages only).
    models = load_checkpoint(checkpoint_paths(config.run_dir, "pretrain")[1])["models"]
    single, multi = models["raw.single"], models["raw.multi"]
    for key in ("decoder.disp_convs.0.weight", "encoder.layer3.0.conv1.weight"):
        assert key in multi and torch.equal(multi[key], single[key])
    assert multi["reduce.0.weight"][:, 64:].abs().max() < 1e-20  # the cost volume's weights start at 0
    plain = tiny_config(tiny_world, tmp_path / "plain", "train.warmup_steps=1", "train.multi_from_single=false",
                        "train.pretrain_learning_rate=1e-30")
    run_stage("pretrain", plain, plain.run_dir, progress=False)
    plain_multi = load_checkpoint(checkpoint_paths(plain.run_dir, "pretrain")[1])["models"]["raw.multi"]
    assert not torch.equal(plain_multi["decoder.disp_convs.0.weight"], single["decoder.disp_convs.0.weight"])


def test_weight_averaging_follows_its_decay_and_resumes_exactly(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run", "train.ema_decay=0.5")
    stage = TeacherStage(config)
    stage.global_step = 100  # past the warm-up: the decay is 0.5
    stage.after_optimizer_step()  # the average starts as a copy
    weight = next(iter(stage.teacher.parameters()))
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    stage.after_optimizer_step()
    average = next(iter(stage.evaluation_networks()["teacher"].parameters()))
    assert torch.allclose(average, before + 0.5)
    states = stage.checkpoint_models()
    assert torch.allclose(next(iter(states["teacher"].values())), before + 0.5)  # what later stages load
    assert torch.allclose(next(iter(states["raw.teacher"].values())), before + 1.0)  # what resuming loads
    again = TeacherStage(config)
    again.load_checkpoint_models(states)
    assert torch.allclose(next(iter(again.teacher.parameters())), before + 1.0)
    assert torch.allclose(next(iter(again.evaluation_networks()["teacher"].parameters())), before + 0.5)
    # Early steps average over a short window: step 0 gives decay 1/10.
    stage.global_step = 0
    with torch.no_grad():
        weight.add_(1.0)
    stage.after_optimizer_step()
    assert torch.allclose(next(iter(stage.evaluation_networks()["teacher"].parameters())),
                          0.1 * (before + 0.5) + 0.9 * (before + 2.0), atol=1e-6)


def test_each_network_starts_from_its_own_seed_whatever_the_others_look_like():
    def starts(*overrides):
        stage = PretrainStage(load_config(None, ["model.encoder_layers=18", *overrides]))
        return {name: net.state_dict() for name, net in stage.saved_networks().items()}

    plain = starts("model.fine_matching=false")
    fine = starts("model.fine_matching=true")
    other_seed = starts("model.fine_matching=true", "train.seed=1")
    for name in ("single", "pose"):
        assert all(torch.equal(plain[name][k], fine[name][k]) for k in plain[name])
        assert not all(torch.equal(fine[name][k], other_seed[name][k]) for k in fine[name])
    assert plain["multi"]["reduce.0.weight"].shape != fine["multi"]["reduce.0.weight"].shape
    state = torch.random.get_rng_state()
    starts()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched


def test_prior_warp_steps_warp_with_the_prior_direction_then_with_the_pose_net():
    config = tiny_config(None, "unused", "train.pose_prior_steps=4", "train.pose_prior_warp_steps=2")
    stage = PretrainStage(config)
    predicted = torch.eye(4).repeat(2, 1, 1)
    predicted[:, :3, 3] = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    prior = torch.eye(4).repeat(2, 2, 1, 1)  # (batch, source, 4, 4): sources -1 and +1
    prior[:, :, 0, 3] = 1.0  # direction +x
    batch = {"pose_prior": prior, "pose_prior_valid": torch.tensor([[True, True], [False, True]]),
             "offsets": torch.tensor([[0, -1, 1]] * 2)}
    poses = {-1: predicted, 1: predicted}
    stage.train()
    stage.global_step = 1
    warping = stage.warping_poses(batch, poses)
    torch.testing.assert_close(warping[-1][0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))  # length 2, along +x
    torch.testing.assert_close(warping[-1][1], predicted[1])  # no prior for this pair: the pose net's
    torch.testing.assert_close(warping[1][1, :3, 3], torch.tensor([1.0, 0.0, 0.0]))
    stage.global_step = 2  # the warp steps are over
    assert stage.warping_poses(batch, poses) is poses
    stage.global_step = 1
    stage.eval()  # evaluation never sees the prior
    assert stage.warping_poses(batch, poses) is poses


def test_prior_warp_steps_stop_with_the_prior_steps(tiny_world):
    config = tiny_config(tiny_world, "unused", "train.pose_prior_steps=1", "train.pose_prior_warp_steps=5")
    stage = PretrainStage(config).train()
    prior = torch.eye(4).repeat(1, 2, 1, 1)
    prior[:, :, 0, 3] = 1.0
    batch = {"pose_prior": prior, "pose_prior_valid": torch.ones(1, 2, dtype=torch.bool), "offsets": torch.tensor([[0, -1, 1]])}
    poses = {-1: torch.eye(4)[None], 1: torch.eye(4)[None]}
    stage.global_step = 0
    assert stage.warping_poses(batch, poses) is not poses
    stage.global_step = 1  # the prior's steps are over, so is the warp
    assert stage.warping_poses(batch, poses) is poses


def test_auto_precision_uses_bfloat16_only_on_a_cpu_that_computes_it(monkeypatch):
    monkeypatch.setattr(loop, "cpu_computes_bfloat16", lambda: True)
    assert loop.setup_runtime("cpu", "auto", "auto").autocast_dtype == torch.bfloat16
    monkeypatch.setattr(loop, "cpu_computes_bfloat16", lambda: False)
    assert loop.setup_runtime("cpu", "auto", "auto").autocast_dtype is None
    assert loop.setup_runtime("cpu", "auto", "32").autocast_dtype is None  # an explicit choice stands


def test_bfloat16_mixed_precision_runs_on_cpu_with_the_float32_loss(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "bf16", "train.pose_prior_steps=0")
    batch = first_batch(config)
    stage = PretrainStage(config).train()
    stage.global_step = config.train.warmup_steps  # the multi-frame net and its cost volume take part
    losses = {}
    for precision in ("32", "bf16-mixed"):
        runtime = loop.setup_runtime("cpu", "auto", precision)
        loss, scalars, _ = loop.forward_under_autocast(stage, batch, loop.step_generator(0, 1), runtime)
        losses[precision] = loss
    assert loop.setup_runtime("cpu", "auto", "bf16-mixed").autocast_dtype == torch.bfloat16
    assert loop.setup_runtime("cpu", "auto", "16-mixed").autocast_dtype is None  # float16 is for GPUs
    assert losses["bf16-mixed"].dtype == torch.float32 and torch.isfinite(losses["bf16-mixed"])
    # Same weights, same batch: only the networks' arithmetic is coarser.
    assert losses["bf16-mixed"].item() == pytest.approx(losses["32"].item(), rel=0.01)
    losses["bf16-mixed"].backward()
    assert all(torch.isfinite(p.grad).all() for p in stage.parameters() if p.grad is not None)


def test_cost_volume_target_term_is_logged_in_the_stages_that_train_the_multi_frame_net(tiny_world, tmp_path):
    import csv

    config = tiny_config(tiny_world, tmp_path / "cv", "loss.cost_volume_target_weight=0.5")
    run_stage("all", config, config.run_dir, progress=False)
    for stage, joined_rows in (("pretrain", slice(1, None)), ("student", slice(0, None))):
        rows = list(csv.DictReader((tmp_path / "cv" / "logs" / f"{stage}.csv").open()))
        values = [float(row["cost_volume_target"]) for row in rows[joined_rows]]
        assert values and all(math.isfinite(v) and v >= 0 for v in values), (stage, values)
    warm_up = list(csv.DictReader((tmp_path / "cv" / "logs" / "pretrain.csv").open()))[0]
    assert math.isnan(float(warm_up["cost_volume_target"]))  # the multi-frame net has not joined yet


def test_consistency_weight_scales_the_pretrain_consistency_term(tiny_world, tmp_path):
    from mfdepth.config import apply_overrides

    config = tiny_config(tiny_world, tmp_path / "cw", "train.pose_prior_steps=0")
    batch = first_batch(config)
    runtime = loop.setup_runtime("cpu", "auto", "32")
    results = {}
    for weight in (1.0, 0.25):
        torch.manual_seed(0)
        stage = PretrainStage(apply_overrides(config, [f"loss.consistency_weight={weight}"])).train()
        stage.global_step = config.train.warmup_steps  # the multi-frame net has joined
        loss, scalars, _ = loop.forward_under_autocast(stage, batch, loop.step_generator(0, 1), runtime)
        results[weight] = (loss.item(), scalars["consistency"].item())
    (full, term), (quarter, term_again) = results[1.0], results[0.25]
    assert term > 0 and term_again == pytest.approx(term)
    assert full - quarter == pytest.approx(0.75 * term, rel=1e-4, abs=1e-6)


def test_the_photometric_gate_hands_pixels_from_the_consistency_term_to_the_match(tiny_world, tmp_path, monkeypatch):
    """``loss.consistency_photometric_gate``: the pretrain consistency region loses exactly the pixels whose
    lowest-cost depth warps at least as well as S0's, and the cost-volume target pulls M0 there instead."""
    # A narrow band makes most matches distrusted, so the gate has pixels to take from the first step.
    config = tiny_config(tiny_world, tmp_path / "pg", "train.pose_prior_steps=0", "train.static_camera_prob=0",
                         "train.zero_cost_volume_prob=0", "loss.consistency_low=0.95", "loss.consistency_high=1.05")
    batch = first_batch(config)
    regions, stage = distillation_regions(PretrainStage, config, batch, monkeypatch, {
        gate: [f"loss.consistency_photometric_gate={gate}"] for gate in (False, True)})
    (ungated, ungated_trusted), (gated, gated_trusted) = regions[False], regions[True]
    assert torch.equal(ungated_trusted, ~ungated) and torch.equal(gated_trusted, ~gated)
    assert not (gated & ~ungated).any()  # the gate only takes pixels from the consistency term
    assert (ungated & ~gated).any()  # an untrained S0 warps worse than some of the matches it distrusts

    # The gate's own known answers: against a reference error below any photometric error no match is
    # better, against an infinite one every reliable match of an informative item is, and none of an item
    # whose volume was zeroed.
    target_img, _, sources, _, K, _ = stage.unpack(batch)
    poses = {o: torch.eye(4).expand(target_img.shape[0], 4, 4) for o in sources}
    h, w = target_img.shape[-2:]
    net_out = {"cost_volume_depth": torch.full((2, 1, h // 4, w // 4), 5.0),
               "cost_volume_valid": torch.ones(2, 1, h // 4, w // 4, dtype=torch.bool)}
    net_out["cost_volume_valid"][:, :, :2] = False
    nothing_zeroed = torch.tensor([False, False])
    unbeatable = torch.full((2, 1, h, w), -1.0)
    assert not stage.match_warps_better_than_single(target_img, sources, net_out, unbeatable, poses, K,
                                                    nothing_zeroed).any()
    hopeless = torch.full((2, 1, h, w), float("inf"))
    better = stage.match_warps_better_than_single(target_img, sources, net_out, hopeless, poses, K, nothing_zeroed)
    assert not better[:, :, :8].any() and better[:, :, 8:].all()
    zeroed_first = torch.tensor([True, False])
    better = stage.match_warps_better_than_single(target_img, sources, net_out, hopeless, poses, K, zeroed_first)
    assert not better[0].any() and better[1, :, 8:].all()


@pytest.mark.parametrize("stage_class, switch, extra", [
    (PretrainStage, "consistency_standing_camera", []),
    (StudentStage, "distill_standing_camera", ["loss.reliability_mask=false"]),
])
def test_frames_whose_camera_stands_are_distilled_whole(stage_class, switch, extra, tiny_world, tmp_path, monkeypatch):
    """``loss.consistency_standing_camera`` (pretrain: M0 from S0) and ``loss.distill_standing_camera``
    (student: M from S*, as METHOD.md's static-camera frames; R off here, so whole means every pixel): a frame
    the standing-camera detector names joins the distillation region whole, as the static-camera
    augmentation's items do (so the cost-volume target leaves it alone); the other frame's region does not
    change. Neither switch may be on without the detector."""
    from mfdepth import masks as mask_rules
    from mfdepth.config import ConfigError

    config = tiny_config(tiny_world, tmp_path / "st", "train.pose_prior_steps=0", "train.static_camera_prob=0",
                         "train.zero_cost_volume_prob=0", "masks.standing_camera_fraction=0.9", *extra)
    monkeypatch.setattr(mask_rules, "standing_camera", lambda kept, fraction: torch.tensor([True, False]))
    captured, _ = distillation_regions(stage_class, config, first_batch(config), monkeypatch, {
        on: [f"loss.{switch}={on}"] for on in (False, True)})
    regions = {on: region for on, (region, _) in captured.items()}
    assert not regions[False][0].all()  # an untrained net's matches are not all distrusted
    assert regions[True][0].all() and torch.equal(regions[True][1], regions[False][1])
    with pytest.raises(ConfigError, match=f"loss.{switch} needs masks.standing_camera_fraction"):
        load_config(None, [f"loss.{switch}=true", "masks.standing_camera_fraction=0"])


def test_the_far_only_gate_hands_only_far_matches_and_their_own_target_pulls_there(tiny_world, tmp_path):
    """``loss.consistency_gate_far_only`` keeps in the consistency term every pixel whose match is not
    beyond ``consistency_high`` times S0's depth; ``loss.handed_match_weight`` pulls M0 toward the match on
    the handed pixels alone (mean over them): with M0 at 1 m and the match at 5 m, exactly weight * log 5."""

    from mfdepth.config import apply_overrides

    config = tiny_config(tiny_world, tmp_path / "gf", "train.pose_prior_steps=0")
    batch = first_batch(config)
    gate = ["loss.consistency_photometric_gate=true", "loss.handed_match_weight=0.5"]
    both = PretrainStage(apply_overrides(config, gate)).train()
    far = PretrainStage(apply_overrides(config, [*gate, "loss.consistency_gate_far_only=true"])).train()
    off = PretrainStage(apply_overrides(config, ["loss.handed_match_weight=0.5"])).train()
    target_img, _, sources, _, K, _ = both.unpack(batch)
    poses = {o: torch.eye(4).expand(target_img.shape[0], 4, 4) for o in sources}
    h, w = target_img.shape[-2:]
    match = torch.ones(2, 1, h // 4, w // 4)
    match[..., : w // 8] = 5.0  # the left half matches 5x farther than S0, the right half as far
    net_out = {"cost_volume_depth": match, "cost_volume_valid": torch.ones(2, 1, h // 4, w // 4, dtype=torch.bool),
               "depth": [torch.ones(2, 1, h, w, requires_grad=True)]}
    teacher = torch.ones(2, 1, h, w)
    hopeless = torch.full((2, 1, h, w), float("inf"))  # S0 warps worse than any match
    no_item_uninformative = torch.tensor([False, False])
    args = (target_img, sources, net_out, hopeless, poses, K, no_item_uninformative, teacher)
    assert off.pixels_handed_to_match(*args) is None
    assert both.pixels_handed_to_match(*args).all()
    handed = far.pixels_handed_to_match(*args)
    assert handed[..., : w // 2].all() and not handed[..., w // 2:].any()

    term = far.handed_match_term(net_out, handed)
    assert term.item() == pytest.approx(0.5 * math.log(5.0), rel=1e-5)
    term.backward()
    gradient = net_out["depth"][0].grad
    assert (gradient[..., w // 2:] == 0).all() and (gradient[..., : w // 2] < 0).all()  # only the handed pull, farther
    assert off.handed_match_term(net_out, None) is None
    assert PretrainStage(apply_overrides(config, gate[:1])).handed_match_term(net_out, handed) is None


def test_the_optimiser_is_adams_fused_kernel_and_steps_as_the_reference_loop():
    torch.manual_seed(0)
    # No batch norm: a bias before it has a zero gradient up to rounding, whose Adam step is noise.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ELU(), torch.nn.Conv2d(8, 1, 1))
    start = [p.detach().clone() for p in net.parameters()]
    reference_net = copy.deepcopy(net)
    config = load_config(None, ["train.learning_rate=1e-2"])
    fast = loop.make_optimizer([{"params": list(net.parameters()), "network": "net"}], config.train)
    assert fast.defaults["fused"] is True  # CPU parameters: the fused kernel, not the per-tensor loop
    reference = torch.optim.Adam(reference_net.parameters(), lr=1e-2, foreach=False)
    x = torch.randn(2, 3, 9, 9)
    for _ in range(5):
        for model, optimizer in ((net, fast), (reference_net, reference)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for got, expected in zip(net.parameters(), reference_net.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert all((p - p0).abs().max() > 1e-3 for p, p0 in zip(net.parameters(), start, strict=True))


def test_the_student_stage_weighs_the_cost_volume_target_on_its_own(tiny_world, tmp_path):
    """``loss.student_cost_volume_target_weight`` scales the student's term (null: the shared weight) and
    leaves the pretrain stage's alone."""

    from mfdepth.config import ConfigError, apply_overrides

    config = tiny_config(tiny_world, tmp_path / "sw", "train.pose_prior_steps=0", "train.static_camera_prob=0",
                         "train.zero_cost_volume_prob=0")
    batch = first_batch(config)
    runtime = loop.setup_runtime("cpu", "auto", "32")

    def term(stage_class, *overrides):
        torch.manual_seed(0)
        stage = stage_class(apply_overrides(config, list(overrides))).train()
        if stage_class is PretrainStage:
            stage.global_step = config.train.warmup_steps  # its multi-frame net has joined
        _, scalars, _ = loop.forward_under_autocast(stage, batch, loop.step_generator(0, 1), runtime)
        return scalars.get("cost_volume_target")

    shared = term(StudentStage)
    assert shared is not None and shared > 0
    assert term(StudentStage, "loss.student_cost_volume_target_weight=0.25").item() == pytest.approx(
        0.25 * shared.item(), rel=1e-5)
    assert term(StudentStage, "loss.student_cost_volume_target_weight=0") is None
    pretrain = term(PretrainStage)
    assert term(PretrainStage, "loss.student_cost_volume_target_weight=0").item() == pytest.approx(pretrain.item())
    with pytest.raises(ConfigError, match="loss.student_cost_volume_target_weight"):
        load_config(None, ["loss.student_cost_volume_target_weight=-1"])


def _student_target_pixels(tiny_world, tmp_path, monkeypatch, variants):
    """One student training forward per override in ``variants`` on the same batch and start; for each,
    the pixels the cost-volume target pulls and the lowest-cost depth it pulls toward. Returns
    ``(pulled {override: (trusted, match)}, the last stage, the batch)``."""

    from mfdepth import losses
    from mfdepth.config import apply_overrides

    config = tiny_config(tiny_world, tmp_path / "st", "train.pose_prior_steps=0", "train.static_camera_prob=0",
                         "train.zero_cost_volume_prob=0")
    batch = first_batch(config)
    runtime = loop.setup_runtime("cpu", "auto", "32")
    seen = {}
    original = losses.cost_volume_target_loss

    def spy(depth, cost_volume_depth, trusted):
        seen["pulled"] = (trusted.clone(), cost_volume_depth.detach().clone())
        return original(depth, cost_volume_depth, trusted)

    monkeypatch.setattr(losses, "cost_volume_target_loss", spy)
    pulled = {}
    for override in variants:
        torch.manual_seed(0)
        stage = StudentStage(apply_overrides(config, [override])).train()
        loop.forward_under_autocast(stage, batch, loop.step_generator(0, 1), runtime)
        pulled[override] = seen["pulled"]
    return pulled, stage, batch


def test_the_student_pulls_only_its_sharpest_matches_toward_the_cost_volume(tiny_world, tmp_path, monkeypatch):
    """``loss.cost_volume_target_sharp_fraction``: the target's pixels are the trusted ones among each image's
    sharpest matches, so at most that share of the image; at 1 every trusted pixel."""
    everywhere_key = "loss.cost_volume_target_sharp_fraction=1.0"
    sharpest_key = "loss.cost_volume_target_sharp_fraction=0.3"
    pulled, _, _ = _student_target_pixels(tiny_world, tmp_path, monkeypatch, [everywhere_key, sharpest_key])
    everywhere, sharpest = pulled[everywhere_key][0], pulled[sharpest_key][0]
    assert everywhere.float().mean() > 0.3
    assert sharpest.float().mean() <= 0.3 + 0.01  # ties at the quantile: a cell or two more
    assert sharpest.any() and not (sharpest & ~everywhere).any()  # a subset of the trusted pixels


def test_the_student_pulls_toward_its_match_only_where_the_match_explains_the_images_as_well(
        tiny_world, tmp_path, monkeypatch):
    """``loss.cost_volume_target_photometric_gate``: the target's pixels are the trusted ones where warping
    with the lowest-cost depth is no worse than with the student's depth; a student whose depth is the
    match itself loses no pixel to the gate."""
    from mfdepth import losses

    off, on = "loss.cost_volume_target_photometric_gate=false", "loss.cost_volume_target_photometric_gate=true"
    pulled, stage, batch = _student_target_pixels(tiny_world, tmp_path, monkeypatch, [off, on])
    (ungated, _), (gated, match) = pulled[off], pulled[on]
    assert ungated.float().mean() > 0.3
    assert gated.any() and not (gated & ~ungated).any()  # a subset of the trusted pixels
    assert gated.sum() < ungated.sum()  # an untrained student is not better than its match everywhere

    target, _, sources, _, K, _ = stage.unpack(batch)
    poses = {}
    for offset in sources:
        poses[offset] = torch.eye(4).expand(target.shape[0], 4, 4).clone()
        poses[offset][:, 2, 3] = 0.05 * offset  # a step along the optical axis per frame
    as_target = torch.nn.functional.interpolate(match, size=tuple(target.shape[-2:]), mode="nearest")
    student_error, _ = losses.min_reprojection_error(target, sources, as_target, poses, K)
    worse = stage.match_explains_worse(target, sources, {"cost_volume_depth": match}, student_error, poses, K)
    assert worse is not None and not worse.any()
    # A student depth that warps better than the match somewhere takes those pixels from the gate.
    student_error = torch.zeros_like(student_error)
    assert stage.match_explains_worse(target, sources, {"cost_volume_depth": match}, student_error,
                                      poses, K).float().mean() > 0.5


def test_the_teacher_stage_uses_the_pose_prior_only_when_told_to():
    frames = torch.rand(1, 3, 3, 64, 192, generator=torch.Generator().manual_seed(0))
    K = torch.tensor([[100.0, 0.0, 96.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]]).expand(1, 3, 3, 3)
    prior = torch.eye(4).repeat(1, 2, 1, 1)
    prior[:, :, 2, 3] = 1.0
    batch = {"frames": frames, "frames_aug": frames, "K": K, "offsets": torch.tensor([[0, -1, 1]]),
             "pose_prior": prior, "pose_prior_valid": torch.ones(1, 2, dtype=torch.bool)}
    logged = {}
    for setting in ("true", "false"):
        stage = TeacherStage(tiny_config(None, "unused", "train.pose_prior_steps=4",
                                         f"train.pose_prior_in_teacher={setting}")).train()
        stage.global_step = 0
        loss, scalars, _ = stage.forward(batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
        logged[setting] = scalars
    assert logged["true"]["pose_prior"] > 0  # the pose net starts untrained: far from the prior
    assert "pose_prior" not in logged["false"]
