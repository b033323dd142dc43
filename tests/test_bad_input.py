"""Bad input, interruptions and lost work (issue 12): every failure is one clear line that names the key
or file and the fix, nothing is silently wrong, and no file of an existing run changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mfdepth.cli import main
from mfdepth.config import ConfigError, load_config


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and exactly one line on stderr; return that line."""
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    assert "Traceback" not in message
    return message


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes (to show that nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# (1) Config validation at load time, before any data is read


@pytest.mark.parametrize(
    "override, needles",
    [
        ("train.batch_size=-2", ["train.batch_size", "1 or more"]),
        ("train.batch_size=0", ["train.batch_size", "1 or more"]),
        ("train.checkpoint_every=0", ["train.checkpoint_every", "1 or more"]),
        ("train.log_every=0", ["train.log_every", "1 or more"]),
        ("train.image_log_every=0", ["train.image_log_every", "1 or more"]),
        ("train.pretrain_steps=-5", ["train.pretrain_steps", "1 or more"]),
        ("train.teacher_steps=0", ["train.teacher_steps", "1 or more"]),
        ("train.student_steps=0", ["train.student_steps", "1 or more"]),
        ("train.lr_decay_step=-1", ["train.lr_decay_step", "0 or more"]),
        ("data.num_workers=-1", ["data.num_workers", "0 or more"]),
        ("data.stride=0", ["data.stride", "1 or more"]),
        ("model.num_depth_bins=0", ["model.num_depth_bins", "2 or more"]),
        ("model.num_depth_bins=1", ["model.num_depth_bins", "2 or more"]),
        ("data.frame_offsets=[0]", ["data.frame_offsets", "-1"]),
        ("data.frame_offsets=[0, 1]", ["data.frame_offsets", "-1"]),
        ("data.frame_offsets=[0, -1, -1]", ["data.frame_offsets", "distinct"]),
        ("train.learning_rate=-1", ["train.learning_rate", "positive"]),
        ("train.learning_rate=0", ["train.learning_rate", "positive"]),
        ("train.learning_rate=.nan", ["train.learning_rate", "finite"]),
        ("train.learning_rate=.inf", ["train.learning_rate", "finite"]),
        ("loss.ssim_weight=.nan", ["loss.ssim_weight", "finite"]),
        ("masks.camera_height=.nan", ["masks.camera_height", "finite"]),
        ("masks.camera_height=-1.65", ["masks.camera_height", "positive"]),
        ("data.focal_px=.nan", ["data.focal_px", "finite"]),
        ("data.focal_px=-300", ["data.focal_px", "positive"]),
        ("eval.min_depth=90", ["eval.min_depth", "min_depth < max_depth"]),
        ("eval.max_depth=-1", ["eval.min_depth", "min_depth < max_depth"]),
        ("train.static_camera_prob=2", ["train.static_camera_prob", "between 0 and 1"]),
        ("loss.num_scales=0", ["loss.num_scales", "between 1 and 4"]),
        ("train.accelerator=tpu", ["train.accelerator", "auto, cpu, gpu"]),
        ("train.strategy=fsdp", ["train.strategy", "auto, ddp"]),
        ("train.precision=16", ["train.precision", "16-mixed"]),
        ("data.dataset=kiti", ["data.dataset", "kitti"]),
        ("eval.protocol=kiti", ["eval.protocol", "kitti"]),
        ("data.synth_preset=huge", ["data.synth_preset", "tiny, demo"]),
    ],
)
def test_bad_settings_are_refused_at_load_time_naming_the_key(capsys, tmp_path, override, needles):
    world, run_dir = tmp_path / "world", tmp_path / "run"
    message = one_line_error(
        capsys, ["train", "--quiet", "--run-dir", str(run_dir), f"data.root={world}", "data.synth_preset=tiny",
                 override],
    )
    for needle in needles:
        assert needle in message, message
    # Refused before anything was read or written: no world rendered, no run directory.
    assert not world.exists() and not run_dir.exists()


def test_inverted_eval_range_is_refused_by_train_as_by_evaluate():
    with pytest.raises(ConfigError, match="eval.min_depth"):
        load_config(None, ["eval.min_depth=90", "eval.max_depth=10"])
    assert load_config(None, ["eval.min_depth=1", "eval.max_depth=10"]).eval.max_depth == 10.0


def test_a_bad_key_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  batchsize: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "recipe.yaml" in str(info.value) and "train.batchsize" in str(info.value)


# ---------------------------------------------------------------------------------------------
# (2) Text settings are taken literally, never parsed as YAML


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("run_dir=runs/exp #2", "run_dir", "runs/exp #2"),
        ("data.root=/data/frames #2", "data.root", "/data/frames #2"),
        ("data.root=[a, b]", "data.root", "[a, b]"),
        ("data.root=yes", "data.root", "yes"),
        ("data.root=007", "data.root", "007"),
        ("data.intrinsics=K: 1.yaml", "data.intrinsics", "K: 1.yaml"),
        ("data.intrinsics=null", "data.intrinsics", None),
        ("model.pretrained_weights=", "model.pretrained_weights", None),
        ("train.precision=32", "train.precision", "32"),
    ],
)
def test_text_settings_are_taken_literally(override, key, expected):
    config = load_config(None, [override])
    section, _, name = key.rpartition(".")
    value = getattr(getattr(config, section) if section else config, name)
    assert value == expected


def test_run_dir_with_a_hash_is_not_another_run(tmp_path, monkeypatch):
    from mfdepth.training import command

    monkeypatch.chdir(tmp_path)

    class Args:
        overrides: list[str] = []
        config = None
        run_dir = "runs/exp #2"

    assert command.resolve_config(Args()).run_dir == "runs/exp #2"


# ---------------------------------------------------------------------------------------------
# (3) Intrinsics from every source go through one validator


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("K.yaml", "fx: .nan\nfy: 100\ncx: 50\ncy: 25\n", "non-finite"),
        ("K.yaml", "fx: -100\nfy: 100\ncx: 50\ncy: 25\n", "focal lengths must be positive"),
        ("K.json", '{"K": [[100, 0, 50], [0, Infinity, 25], [0, 0, 1]]}', "non-finite"),
        ("K.json", '{"fx": 100, "fy": 0, "cx": 50, "cy": 25}', "focal lengths must be positive"),
        ("K.txt", "nan 0 50\n0 100 25\n0 0 1\n", "non-finite"),
        ("K.txt", "-100 0 50\n0 100 25\n0 0 1\n", "focal lengths must be positive"),
        ("K.txt", "100 0 50\n0 100 25\n0 1 1\n", "last row"),
    ],
)
def test_bad_intrinsics_files_are_refused_naming_the_file(tmp_path, name, content, needle):
    from mfdepth.data.calibration import load_intrinsics_file
    from mfdepth.data.errors import DataError

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_intrinsics_file(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("focal", [float("nan"), float("inf"), -300.0, 0.0])
def test_bad_focal_lengths_are_refused(focal):
    from mfdepth.data.calibration import intrinsics_from_focal
    from mfdepth.data.errors import DataError

    with pytest.raises(DataError, match="focal length must be a positive number of pixels.*--focal or data.focal_px"):
        intrinsics_from_focal(focal, 100, 50)


def test_principal_point_outside_the_image_warns(tmp_path, caplog):
    from mfdepth.data.calibration import load_intrinsics_file
    from mfdepth.inference.intrinsics import user_intrinsics

    inside, outside = tmp_path / "inside.yaml", tmp_path / "outside.yaml"
    inside.write_text("fx: 100\nfy: 100\ncx: 49.5\ncy: 24.5\n")
    outside.write_text("fx: 100\nfy: 100\ncx: 640\ncy: 24.5\n")
    with caplog.at_level("WARNING"):
        user_intrinsics(inside, None, None, (100, 50))
    assert "principal point" not in caplog.text
    with caplog.at_level("WARNING"):
        user_intrinsics(outside, None, None, (100, 50))
    assert "principal point" in caplog.text and "outside.yaml" in caplog.text
    caplog.clear()
    sized = tmp_path / "sized.yaml"
    sized.write_text("fx: 100\nfy: 100\ncx: 640\ncy: 24.5\nwidth: 100\nheight: 50\n")
    with caplog.at_level("WARNING"):
        load_intrinsics_file(sized)
    assert "principal point" in caplog.text


def test_nan_in_a_folders_K_txt_stops_training_with_one_line(capsys, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 32), (i * 40, 0, 0)).save(folder / f"{i:03d}.png")
    (folder / "K.txt").write_text("nan 0 32\n0 50 16\n0 0 1\n")
    message = one_line_error(
        capsys, ["train", "--quiet", "--run-dir", str(tmp_path / "run"), "data.dataset=folder",
                 f"data.root={folder}", "data.num_workers=0", "data.height=32", "data.width=64"],
    )
    assert "K.txt" in message and "non-finite" in message


def test_predict_with_nan_focal_is_refused(capsys, tmp_path):
    pair = Path(__file__).parent / "inference" / "samples" / "manydepth_pair"
    message = one_line_error(
        capsys, ["predict", "--pair", str(pair / "test_sequence_source.jpg"), str(pair / "test_sequence_target.jpg"),
                 "--checkpoint", str(tmp_path / "x.ckpt"), "--focal", "nan", "--quiet"],
    )
    assert "--focal" in message and "positive" in message


# ---------------------------------------------------------------------------------------------
# (4) gt_depths.npz is read without running pickled code


class _Payload:
    """Unpickling this object writes a marker file: what a crafted gt_depths.npz would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_crafted_gt_depths_npz_does_not_run_code(tmp_path):
    import numpy as np

    from mfdepth.data.errors import DataError
    from mfdepth.data.kitti import NpzDepthTable

    marker = tmp_path / "marker"
    maps = np.empty(2, dtype=object)
    maps[0], maps[1] = np.ones((3, 4), np.float32), _Payload(marker)
    crafted = tmp_path / "gt_depths.npz"
    np.savez_compressed(crafted, data=maps)
    with pytest.raises(DataError) as info:
        NpzDepthTable(crafted, expected=2).entry(0)
    assert str(crafted) in str(info.value) and "mfdepth prepare" in str(info.value)
    assert not marker.exists()


def test_ragged_and_plain_gt_depths_npz_still_load(tmp_path):
    import numpy as np

    from mfdepth.data.kitti import NpzDepthTable

    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.full((3, 4), 2.0, np.float32), np.full((5, 6), 3.0, np.float64)
    np.savez_compressed(tmp_path / "ragged.npz", data=ragged)
    table = NpzDepthTable(tmp_path / "ragged.npz", expected=2)
    assert table.entry(1).shape == (5, 6) and table.entry(1).dtype == np.float32 and table.entry(0)[0, 0] == 2.0
    np.savez(tmp_path / "plain.npz", data=np.zeros((2, 3, 4), np.float32))
    assert NpzDepthTable(tmp_path / "plain.npz", expected=2).entry(1).shape == (3, 4)


# ---------------------------------------------------------------------------------------------
# (5) 16-bit frames, (6) natural frame order


def test_16_bit_png_frames_are_scaled_not_white(tmp_path):
    import numpy as np
    from PIL import Image

    from mfdepth.data.files import read_rgb

    ramp = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)  # 0 .. 59900
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    rgb = read_rgb(tmp_path / "grey16.png")
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert rgb.min() == 0 and rgb.max() == 233  # a ramp, not a constant white image
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "grey32.tif")
    assert Image.open(tmp_path / "grey32.tif").mode == "I"
    np.testing.assert_array_equal(read_rgb(tmp_path / "grey32.tif"), rgb)


def test_folder_frames_are_taken_in_natural_order(tmp_path):
    from PIL import Image

    from mfdepth.data.files import list_images
    from mfdepth.data.folder import find_sequences

    for i in range(1, 13):
        Image.new("RGB", (8, 8)).save(tmp_path / f"frame{i}.png")
    names = [p.stem for p in list_images(tmp_path)]
    assert names == [f"frame{i}" for i in range(1, 13)]
    nested = tmp_path / "nested"
    for name in ("seq10", "seq2"):
        (nested / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(nested / name / f"{i}.png")
    assert [s.name for s in find_sequences(nested)] == ["seq2", "seq10"]


# ---------------------------------------------------------------------------------------------
# (7) A file that is not a checkpoint gives one clear line


def _not_a_checkpoint(tmp_path: Path, kind: str) -> Path:
    import os

    import torch

    path = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "object":
        torch.save({"models": {}, "meta": {}, "evil": _Payload(tmp_path / "marker")}, path)
    elif kind == "truncated":
        torch.save({"models": {"x": torch.ones(1000)}, "meta": {}}, path)
        path.write_bytes(path.read_bytes()[:-500])
    return path


@pytest.mark.parametrize("kind, needle", [("empty", "empty"), ("random", "not a PyTorch checkpoint"),
                                          ("object", "refuses to load"), ("truncated", "not a PyTorch checkpoint")])
@pytest.mark.parametrize("command", ["evaluate", "export", "predict"])
def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(capsys, tmp_path, kind, needle, command):
    path = _not_a_checkpoint(tmp_path, kind)
    pair = Path(__file__).parent / "inference" / "samples" / "manydepth_pair"
    argv = {
        "evaluate": ["evaluate", "--checkpoint", str(path)],
        "export": ["export", "--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")],
        "predict": ["predict", "--checkpoint", str(path), "--quiet", "--out", str(tmp_path / "out"), "--pair",
                    str(pair / "test_sequence_source.jpg"), str(pair / "test_sequence_target.jpg")],
    }[command]
    message = one_line_error(capsys, argv)
    assert str(path) in message and needle in message and "mfdepth train" in message, message
    assert "weights_only" not in message
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------------------------------------
# (8) NaN guard, (10) interrupts and killed saves, (12) final checkpoints: nothing lost, nothing poisoned

TINY = [
    "data.synth_preset=tiny", "data.height=64", "data.width=192", "data.num_workers=0", "model.num_depth_bins=8",
    "train.batch_size=2", "train.pretrain_steps=2", "train.teacher_steps=2", "train.student_steps=2",
    "train.warmup_steps=1", "train.pose_prior_steps=1",
    "train.checkpoint_every=1", "train.log_every=1",
]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from mfdepth.synth import ensure_world

    root = tmp_path_factory.mktemp("world")
    ensure_world(root, preset="tiny", progress=False)
    return root


def tiny(world, run_dir, *extra):
    return load_config(None, [*TINY, f"data.root={world}", f"run_dir={run_dir}", *extra])


def test_a_collapsed_depth_is_one_line_naming_the_step_and_the_fix(capsys, tiny_world, tmp_path):
    # The sigmoid starts where every pixel's depth is 1.001 x model.min_depth, so the guard trips at once.
    message = one_line_error(capsys, ["train", "--quiet", "--stage", "pretrain", "--run-dir", str(tmp_path / "run"),
                                      *TINY, f"data.root={tiny_world}", "train.pretrain_steps=4",
                                      "train.collapse_guard_steps=2", "model.min_depth=0.01",
                                      "model.initial_depth=0.01001"])
    assert "collapsed" in message and "up to step 1," in message and "model.min_depth" in message
    assert "train.grad_clip" in message and "train.pretrain_learning_rate" in message


def _max_abs_weight(path: Path) -> float:
    from mfdepth.training.checkpoint import load_checkpoint

    models = load_checkpoint(path)["models"]
    return max(float(v.abs().max()) for state in models.values() for v in state.values() if v.is_floating_point())


def test_divergence_keeps_the_checkpoint_from_before_the_bad_step(tiny_world, tmp_path):
    from mfdepth.training import loop
    from mfdepth.training.recipe import run_stage

    run_dir = tmp_path / "run"
    diverging = tiny(tiny_world, run_dir, "train.pretrain_steps=3", "train.pretrain_learning_rate=1e30")
    with pytest.raises(loop.NonFiniteLossError) as info:
        run_stage("pretrain", diverging, run_dir, progress=False)
    message = str(info.value)
    assert "lower train.pretrain_learning_rate" in message  # the key that set this stage's rate
    last = run_dir / "checkpoints" / "pretrain-last.ckpt"
    # The step whose update blew the weights up had a finite loss; its checkpoint is never written.
    assert not last.exists() or _max_abs_weight(last) < 1e6
    # A rerun with a sane learning rate trains on from what was kept instead of failing at once.
    sane = tiny(tiny_world, run_dir, "train.pretrain_steps=3")
    run_stage("pretrain", sane, run_dir, progress=False)
    assert _max_abs_weight(run_dir / "checkpoints" / "pretrain.ckpt") < 1e6


def test_a_non_finite_checkpoint_is_not_resumed(capsys, tiny_world, tmp_path):
    import torch

    from mfdepth.training.checkpoint import load_checkpoint, save_checkpoint
    from mfdepth.training.recipe import run_stage

    run_dir = tmp_path / "run"
    config = tiny(tiny_world, run_dir, "train.pretrain_steps=3")
    run_stage("pretrain", config, run_dir, progress=False, stop_after=1)
    last = run_dir / "checkpoints" / "pretrain-last.ckpt"
    state = load_checkpoint(last)
    name = next(iter(state["models"]["single"]))
    state["models"]["single"][name] = torch.full_like(state["models"]["single"][name], float("nan"))
    save_checkpoint(last, state)
    before = snapshot(run_dir)
    message = one_line_error(capsys, ["train", "--quiet", "--stage", "pretrain", "--run-dir", str(run_dir),
                                      *TINY, f"data.root={tiny_world}", "train.pretrain_steps=3"])
    assert str(last) in message and "non-finite" in message and "delete it" in message
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")
    }


def test_sigint_saves_a_resumable_checkpoint(tiny_world, tmp_path):
    import os
    import signal

    import torch

    from mfdepth.training.checkpoint import load_checkpoint
    from mfdepth.training.recipe import run_stage

    straight = tiny(tiny_world, tmp_path / "straight", "train.checkpoint_every=50")
    run_stage("pretrain", straight, straight.run_dir, progress=False)

    run_dir = tmp_path / "interrupted"
    config = tiny(tiny_world, run_dir, "train.checkpoint_every=50")

    def press_ctrl_c(step, module, seconds):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, whatever the launching shell left (a background job ignores SIGINT).
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage("pretrain", config, run_dir, progress=False, after_step=press_ctrl_c)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored
    finally:
        signal.signal(signal.SIGINT, launched_with)
    partial = load_checkpoint(run_dir / "checkpoints" / "pretrain-last.ckpt")
    assert partial["step"] == 1 and partial["optimizer"] is not None
    assert not (run_dir / "checkpoints" / "pretrain.ckpt").exists()
    run_stage("pretrain", config, run_dir, progress=False)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "pretrain.ckpt")["models"]
    b = load_checkpoint(run_dir / "checkpoints" / "pretrain.ckpt")["models"]
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after the interrupted run resumed"


def test_final_checkpoints_are_small_and_stale_temporaries_are_removed(tiny_world, tmp_path, caplog):
    from mfdepth.training.checkpoint import load_checkpoint
    from mfdepth.training.recipe import run_stage

    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    stale = folder / ".pretrain-last.ckpt.abc123.tmp"  # what a run killed mid-save leaves
    stale.write_bytes(b"\0" * 1000)
    config = tiny(tiny_world, run_dir)
    run_stage("pretrain", config, run_dir, progress=False)
    assert not stale.exists()
    final, last = folder / "pretrain.ckpt", folder / "pretrain-last.ckpt"
    shared, rolling = load_checkpoint(final), load_checkpoint(last)
    assert shared["optimizer"] is None and rolling["optimizer"] is not None
    # The final file holds what evaluation and the next stage load (the weights' averages), the rolling
    # one the raw weights and Adam's two moments as well: a quarter of its size or less.
    assert sorted(shared["models"]) == ["multi", "pose", "single"]
    assert sorted(rolling["models"]) == ["multi", "pose", "raw.multi", "raw.pose", "raw.single", "single"]
    assert final.stat().st_size < 0.3 * last.stat().st_size
    # A lengthened stage resumes from the full rolling checkpoint (optimizer state included).
    longer = tiny(tiny_world, run_dir, "train.pretrain_steps=3")
    with caplog.at_level("WARNING", logger="mfdepth"):
        run_stage("pretrain", longer, run_dir, progress=False)
    assert load_checkpoint(final)["step"] == 3 and "no optimizer state" not in caplog.text
    # Without the rolling file it goes on from the final weights, and says it is not an exact resume.
    last.unlink()
    run_stage("pretrain", tiny(tiny_world, run_dir, "train.pretrain_steps=4"), run_dir, progress=False)
    assert load_checkpoint(final)["step"] == 4 and "no optimizer state" in caplog.text


# ---------------------------------------------------------------------------------------------
# (9) A bad file read in a DataLoader worker is the same one line as without workers


def test_worker_errors_are_the_same_line_as_without_workers(capsys, tiny_world, tmp_path):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    frames = sorted(world.rglob("image_02/data/*.png"))
    assert frames
    for frame in frames:
        frame.write_bytes(frame.read_bytes()[:64])  # truncated: cannot be decoded
    lines = {}
    for workers in (0, 1):
        run_dir = tmp_path / f"run{workers}"
        lines[workers] = one_line_error(
            capsys, ["train", "--quiet", "--stage", "pretrain", "--run-dir", str(run_dir), *TINY,
                     f"data.root={world}", f"data.num_workers={workers}"],
        )
    assert lines[1] == lines[0]
    assert "cannot decode image" in lines[0] and str(world) in lines[0] and "DataLoader worker" not in lines[0]


def test_unwrap_worker_error_leaves_other_errors_alone():
    from mfdepth.data.errors import DataError, unwrap_worker_error

    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nmfdepth.data.errors.DataError: cannot decode image a.png (bad); fix it'
    )
    unwrapped = unwrap_worker_error(wrapped)
    assert isinstance(unwrapped, DataError) and str(unwrapped) == "cannot decode image a.png (bad); fix it"
    assert unwrap_worker_error(DataError("cannot decode image a.png")) is None


# ---------------------------------------------------------------------------------------------
# (11) Resuming with another model is refused before the run directory changes


@pytest.mark.parametrize("change, key", [("model.msff=false", "model.msff"),
                                         ("model.encoder_layers=50", "model.encoder_layers"),
                                         ("model.num_depth_bins=16", "model.num_depth_bins")])
def test_resuming_with_a_changed_model_is_refused_and_changes_nothing(capsys, tiny_world, tmp_path, change, key):
    from mfdepth.training.recipe import run_stage

    run_dir = tmp_path / "run"
    config = tiny(tiny_world, run_dir, "train.pretrain_steps=3")
    run_stage("pretrain", config, run_dir, progress=False, stop_after=1)
    before = snapshot(run_dir)
    for command in (["train", "--stage", "pretrain"], ["masks"]):
        message = one_line_error(capsys, [*command, "--quiet", "--run-dir", str(run_dir), *TINY,
                                          f"data.root={tiny_world}", "train.pretrain_steps=3", change])
        assert "pretrain-last.ckpt" in message and key in message and "--run-dir" in message
        assert snapshot(run_dir) == before  # config.yaml and the checkpoints are untouched


def test_later_stages_may_change_the_model_on_an_earlier_stages_checkpoints(tiny_world, tmp_path):
    from mfdepth.cli import UserError
    from mfdepth.training.command import check_resume
    from mfdepth.training.recipe import run_stage

    run_dir = tmp_path / "run"
    config = tiny(tiny_world, run_dir, "train.pretrain_steps=1")
    run_stage("pretrain", config, run_dir, progress=False)
    check_resume(tiny(tiny_world, run_dir, "model.msff=false"), ("student",))  # an ablation's student: allowed
    with pytest.raises(UserError, match="model.encoder_layers"):
        check_resume(tiny(tiny_world, run_dir, "model.encoder_layers=50"), ("student",))


# ---------------------------------------------------------------------------------------------
# (12) The default synthetic dataset never fills the user's own folder


def test_a_forgotten_data_dataset_does_not_render_into_the_users_folder(capsys, tmp_path):
    from PIL import Image

    mine = tmp_path / "my_frames"
    mine.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 32)).save(mine / f"{i}.png")
    before = snapshot(mine)
    message = one_line_error(capsys, ["train", "--quiet", "--run-dir", str(tmp_path / "run"), *TINY,
                                      f"data.root={mine}"])
    assert str(mine) in message and "data.dataset" in message and "world.json" in message
    assert snapshot(mine) == before


def test_a_new_folder_gets_the_world_with_a_word_said(tmp_path, caplog):
    from mfdepth.data.factory import ensure_synthetic_world

    root = tmp_path / "typo"
    with caplog.at_level("WARNING"):
        ensure_synthetic_world(root, "tiny")
    assert (root / "world.json").is_file() and "rendering" in caplog.text and str(root) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        ensure_synthetic_world(root, "tiny")  # a world already there: nothing to say
    assert "rendering" not in caplog.text


# ---------------------------------------------------------------------------------------------
# (10) Paths and disks: one line with the fix instead of a traceback


def test_unwritable_paths_are_one_line(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = one_line_error(capsys, ["train", "--quiet", "--run-dir", str(blocker / "run"), *TINY,
                                      f"data.root={tmp_path / 'world'}"])
    assert str(blocker) in message and "give another path" in message
    assert blocker.read_text() == "not a folder"
    # predict --out naming a file: tests/inference/test_inference_inputs.py::test_out_naming_a_file


def test_config_folder_and_missing_pretrained_weights_are_named(capsys, tmp_path):
    message = one_line_error(capsys, ["train", "--config", str(tmp_path)])
    assert "is a folder" in message and "YAML file" in message
    missing = tmp_path / "resnet18.pth"
    message = one_line_error(capsys, ["train", "--run-dir", str(tmp_path / "run"), f"model.pretrained_weights={missing}"])
    assert "model.pretrained_weights" in message and str(missing) in message and "null" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                                                  "failed writing file data/0: file write failed")])
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    import torch

    from mfdepth.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "pretrain-last.ckpt"
    save_checkpoint(path, {"models": {"a": {"w": torch.ones(3)}}, "meta": {}, "step": 1})

    def full_disk(obj, handle, *args, **kwargs):
        handle.write(b"\0" * 100)
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"models": {"a": {"w": torch.zeros(3)}}, "meta": {}, "step": 2})
    message = str(info.value)
    assert str(path) in message and "free disk space" in message and "\n" not in message
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["pretrain-last.ckpt"]  # no temp file left
