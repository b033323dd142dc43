"""Helpers of the inference tests: tiny checkpoints built directly (no training), frame conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mfdepth.config import load_config, to_dict
from mfdepth.models.factory import build_multi, build_pose, build_single
from mfdepth.training.checkpoint import make_meta, save_checkpoint

SAMPLES = Path(__file__).parent / "samples"
PAIR = SAMPLES / "manydepth_pair"
HEIGHT, WIDTH = 64, 192
D_MIN, D_MAX = 2.0, 40.0


def _randomise_batch_norm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial running statistics, as a trained network has."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.copy_(0.1 * torch.randn(layer.running_mean.shape, generator=generator))
            layer.running_var.copy_(0.5 + torch.rand(layer.running_var.shape, generator=generator))


def _sensitise(multi, single) -> None:
    """Scale random weights so depth spans ~0.1-1 m and the previous frame moves it by a few per cent.

    At plain initialisation the depth is nearly constant and the cost volume barely matters, so a test
    comparing two paths could pass even if one of them dropped the previous frame.
    """
    with torch.no_grad():
        for net in (multi, single):
            for conv in net.decoder.disp_convs:
                conv.weight.mul_(30.0)
        match_channels = multi.encoder.num_ch_enc[1]
        multi.reduce[0].weight[:, match_channels:].mul_(300.0)


def make_checkpoint(path: Path, dataset: str = "synthetic", stage: str = "student", msff: bool = True,
                    msff_residual: bool | None = True, overrides: tuple[str, ...] = ()) -> Path:
    """A checkpoint of randomly initialised tiny networks (64x192, 8 depth bins) with real metadata;
    ``msff_residual=None`` writes no ``msff_residual`` entry, as checkpoints from before the switch;
    ``overrides`` are further config ``key=value`` pairs."""
    config = load_config(overrides=[
        f"data.height={HEIGHT}", f"data.width={WIDTH}", "model.num_depth_bins=8", f"data.dataset={dataset}",
        *overrides,
    ])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    multi = build_multi(config, msff=msff, msff_residual=bool(msff_residual))
    pose, single = build_pose(config), build_single(config)
    for net in (multi, pose, single):
        _randomise_batch_norm(net, generator)
    _sensitise(multi, single)
    multi.d_min.fill_(D_MIN)
    multi.d_max.fill_(D_MAX)
    models = {"multi": multi.state_dict(), "pose": pose.state_dict(), "teacher": single.state_dict()}
    if stage == "pretrain":
        models = {"single": single.state_dict(), "pose": pose.state_dict()}
    fusion = {} if msff_residual is None else {"msff_residual": multi.msff_residual}
    meta = make_meta(to_dict(config), stage, d_min=D_MIN, d_max=D_MAX, msff=msff, **fusion)
    save_checkpoint(path, {"models": models, "optimizer": None, "step": 0, "stage": stage, "meta": meta})
    return path


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
