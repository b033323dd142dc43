"""The owners of the shared contracts (issue 13): layering, checkpoints' networks, devices, the camera."""

import ast
from pathlib import Path

import pytest
import torch

from mfdepth.checkpoint import CheckpointError, restore_networks
from mfdepth.config import load_config
from mfdepth.data.camera import camera_meta
from mfdepth.devices import cpu_computes_bfloat16, resolve_device
from mfdepth.errors import DeviceError, UserError
from mfdepth.inference.intrinsics import checkpoint_intrinsics

SRC = Path(__file__).resolve().parents[1] / "src" / "mfdepth"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules(*parts: str) -> list[Path]:
    out = []
    for part in parts:
        path = SRC / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return out


@pytest.mark.parametrize(("lower", "upper"), [
    (("data", "models", "losses", "masks", "geometry"),
     ("mfdepth.training", "mfdepth.inference", "mfdepth.evaluation", "mfdepth.cli")),
    (("inference", "evaluation"), ("mfdepth.training", "mfdepth.cli")),
])
def test_lower_layers_do_not_import_upper_ones(lower, upper):
    for path in _modules(*lower):
        bad = [name for name in _imports(path) if name.startswith(upper)]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_restore_networks_names_what_is_missing_or_does_not_fit():
    net = torch.nn.Linear(2, 3)
    checkpoint = {"models": {"pose": torch.nn.Linear(2, 3).state_dict()}, "meta": {"stage": "teacher", "version": "x"}}
    restore_networks(checkpoint, {"pose": net}, "a.ckpt")
    assert torch.equal(net.weight, checkpoint["models"]["pose"]["weight"])
    with pytest.raises(CheckpointError, match="a.ckpt holds no 'multi' network"):
        restore_networks(checkpoint, {"multi": net}, "a.ckpt")
    checkpoint["models"]["pose"] = {"other.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="'pose' network does not match"):
        restore_networks(checkpoint, {"pose": net}, "a.ckpt")


def test_one_device_resolver():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"--device cuda:1: no CUDA device .* --device cpu") as info:
            resolve_device("cuda:1")
        assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
        with pytest.raises(DeviceError, match=r"train.accelerator=gpu: .* train.accelerator=cpu"):
            resolve_device("gpu", "train.accelerator")


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the CPU's flags are read from Linux's /proc/cpuinfo")
def test_the_bfloat16_probe_agrees_with_the_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    has_hardware = bool({"amx_tile", "avx512_bf16"} & flags)
    if hasattr(torch.cpu, "_is_amx_tile_supported"):
        assert cpu_computes_bfloat16() == has_hardware
    else:
        assert cpu_computes_bfloat16() is False


def test_training_stores_the_camera_prediction_reads():
    config = load_config(overrides=["data.height=64", "data.width=192"])
    meta = camera_meta(config.data)
    assert meta["intrinsics"]["width"] == 192 and meta["intrinsics"]["height"] == 64
    stored, where = checkpoint_intrinsics(meta, config, "x.ckpt")
    derived, where_derived = checkpoint_intrinsics({}, config, "x.ckpt")
    assert where == where_derived == "the synthetic world's camera"
    assert stored.size == derived.size and (stored.K == derived.K).all()
    cityscapes = load_config(overrides=["data.dataset=cityscapes"])
    assert camera_meta(cityscapes.data) == {}
