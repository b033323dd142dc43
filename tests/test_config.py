"""Typed configuration: defaults, YAML, overrides and one-line errors."""

import pytest

from mfdepth.config import Config, ConfigError, config_from_dict, load_config, save_config, to_dict


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 2\nmodel:\n  msff: false\n")
    config = load_config(
        path, ["train.batch_size=8", "data.frame_offsets=[0, -1]", "model.min_depth=1", "train.learning_rate=1e-3"]
    )
    assert config.train.learning_rate == 1e-3
    assert config.train.batch_size == 8
    assert config.model.msff is False
    assert config.data.frame_offsets == [0, -1]
    assert isinstance(config.model.min_depth, float) and config.model.min_depth == 1.0
    assert config.train.seed == Config().train.seed


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, ["run_dir=somewhere", "masks.camera_height=1.65"])
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == config
    assert config_from_dict(to_dict(config)) == config


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.batchsize=3", "train.batchsize"),
        ("train.batch_size=three", "train.batch_size"),
        ("model.msff=1", "model.msff"),
        ("data=5", "data"),
        ("trainbatch", "key=value"),
        ("data.height=100", "multiples of 32"),
        ("model.encoder_layers=34", "model.encoder_layers"),
        ("model.encoder_width=0", "model.encoder_width"),
        ("model.encoder_width=-0.5", "model.encoder_width"),
        ("model.encoder_width=0.5 model.pretrained_weights=r18.pth", "model.encoder_width=0.5"),
        ("masks.depth_source=lowest_cost", "masks.depth_source"),
        ("model.fine_matching_downsample=3", "model.fine_matching_downsample"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, override.split())
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_missing_and_malformed_files_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_shipped_recipes_load_and_synthetic_equals_defaults():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    synthetic = load_config(configs / "synthetic.yaml")
    assert synthetic == load_config(None, ["run_dir=runs/synthetic"])
    kitti = load_config(configs / "kitti.yaml")
    assert (kitti.data.height, kitti.data.width, kitti.train.batch_size) == (192, 640, 12)
    assert kitti.model.num_depth_bins == 96 and kitti.train.learning_rate == 1e-4
    load_config(configs / "cityscapes.yaml")


def test_the_two_way_mask_falls_back_to_the_multi_frame_output_without_the_next_frame():
    from mfdepth.config import mask_depth_source

    assert mask_depth_source(load_config(None)) == ("two_way_match", None)
    source, why = mask_depth_source(load_config(None, ["data.frame_offsets=[0, -1]"]))
    assert source == "multi" and "data.frame_offsets, now [0, -1]" in why
    assert mask_depth_source(load_config(None, ["masks.depth_source=multi"])) == ("multi", None)
