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
