"""Depth from a trained checkpoint with no flags.

The checkpoint's metadata says the network resolution, the depth range, the architecture (MSFF on or
off) and the full training config, so ``DepthPredictor("student.ckpt")`` is all a user writes.
Inputs of any size are resized to the network resolution (intrinsics scaled to match) and the depth
comes back at the input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mfdepth.checkpoint import (
    MULTI,
    POSE,
    SINGLE,
    TEACHER,
    CheckpointError,
    default_network,
    load_checkpoint,
    restore_networks,
    single_frame_name,
)
from mfdepth.config import config_from_dict
from mfdepth.geometry import scale_intrinsics
from mfdepth.losses import normalise_depths
from mfdepth.models import prepare_for_inference
from mfdepth.models.factory import build_multi, build_pose, build_single

NETWORKS = ("auto", "multi", "single")


def resize_to_network(
    images: torch.Tensor, K: torch.Tensor | None, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize ``(B,3,h,w)`` images to ``height`` x ``width`` and scale ``(B,3,3)`` K (pixels of the input) alike.

    Antialiased bilinear, so a large frame is low-pass filtered before it is shrunk. Every backend
    (PyTorch, ONNX Runtime, streaming) resizes through here, so they all see the same network input.
    """
    h, w = images.shape[-2:]
    if (h, w) != (height, width):
        images = F.interpolate(images, (height, width), mode="bilinear", align_corners=False, antialias=True)
        if K is not None:
            K = scale_intrinsics(K, width / w, height / h)
    return images, K


def finish_depth(config, depth: torch.Tensor, net_K: torch.Tensor | None, size) -> torch.Tensor:
    """A network-size depth ``(B,1,H,W)`` as every backend returns it: normalised as in training
    (``model.scale_normalisation``), then resized to ``size`` (H, W)."""
    mode = config.model.scale_normalisation
    if mode != "none":
        if net_K is None:
            raise ValueError("this network normalises its depth with the intrinsics: give K")
        depth = normalise_depths([depth], net_K.to(depth.dtype), mode, config.masks.camera_height)[0]
    if tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth, tuple(size), mode="bilinear", align_corners=False)
    return depth


class DepthPredictor:
    """Runs the multi-frame network (with its pose net) or a single-frame network of a checkpoint.

    Args:
        checkpoint: path of an mfdepth checkpoint (any stage).
        network: ``multi`` (needs a multi-frame net in the checkpoint), ``single`` (the teacher S* of a
            teacher/student checkpoint, or S0 of a pretrain checkpoint), or ``auto`` (multi when present).
        device: torch device.
    """

    def __init__(self, checkpoint: str | Path, network: str = "auto", device: str | torch.device = "cpu"):
        if network not in NETWORKS:
            raise ValueError(f"network '{network}' is not one of {', '.join(NETWORKS)}")
        self.device = torch.device(device)
        self.checkpoint = Path(checkpoint)
        state = load_checkpoint(checkpoint, map_location=self.device)
        meta = state["meta"]
        self.meta = meta
        self.config = config_from_dict(meta["config"])
        self.height, self.width = int(meta["height"]), int(meta["width"])
        models = state["models"]
        if network == "auto":
            network = default_network(models)
        self.network = network
        self.multi = self.pose = self.single = None
        if network == "multi":
            if MULTI not in models or POSE not in models:
                hint = "; use --network single" if (TEACHER in models or SINGLE in models) else ""
                raise CheckpointError(f"{checkpoint} holds no multi-frame network (stage {meta.get('stage')}){hint}")
            self.multi = build_multi(self.config, msff=bool(meta.get("msff", self.config.model.msff)),
                                     fine_matching=bool(meta.get("fine_matching", self.config.model.fine_matching)),
                                     cost_hint=bool(meta.get("cost_hint", False)),
                                     msff_residual=bool(meta.get("msff_residual", False)))
            self.pose = build_pose(self.config)
            restore_networks(state, {MULTI: self.multi, POSE: self.pose}, checkpoint)
        else:
            key = single_frame_name(models)
            if key not in models:
                raise CheckpointError(f"{checkpoint} holds no single-frame network (stage {meta.get('stage')})")
            self.single = build_single(self.config)
            restore_networks(state, {key: self.single}, checkpoint)
        nets = [net.to(self.device) for net in (self.multi, self.pose, self.single) if net is not None]
        prepare_for_inference(*nets)

    @property
    def is_multi_frame(self) -> bool:
        return self.multi is not None

    def to_network_size(self, images: torch.Tensor, K: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Resize ``(B,3,h,w)`` images to the network size; scale ``(B,3,3)`` K (pixels of the input) alike."""
        return resize_to_network(images, K, self.height, self.width)

    @torch.inference_mode()
    def predict(
        self,
        target: torch.Tensor,
        previous: torch.Tensor | None = None,
        K: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Depth of ``target``.

        Args:
            target: ``(B,3,h,w)`` float in [0,1], any size.
            previous: ``(B,3,h,w)`` the frame before ``target`` (multi-frame); None = single-frame
                fallback (zeroed cost volume), as for the first frame of a video.
            K: ``(B,3,3)`` intrinsics in pixels of ``target``; required by the multi-frame network.
            output_size: ``(H, W)`` of the returned depth; default the input size.
        Returns:
            ``(B,1,H,W)`` depth in metres: fixed by the camera height when the network was trained with
            ``model.scale_normalisation``, else up to the scale the network learned.
        """
        target = target.to(self.device, torch.float32)
        size = output_size or tuple(target.shape[-2:])
        net_target, net_K = self.to_network_size(target, None if K is None else K.to(self.device, torch.float32))
        if self.multi is None:
            depth = self.single(net_target)["depth"][0]
        else:
            if net_K is None:
                raise ValueError("the multi-frame network needs intrinsics K (pixels of the target image)")
            b = net_target.shape[0]
            if previous is None:
                source = net_target
                pose = torch.eye(4, device=self.device).expand(b, 4, 4)
                zeroed = torch.ones(b, dtype=torch.bool, device=self.device)
            else:
                source, _ = self.to_network_size(previous.to(self.device, torch.float32), None)
                pose = self.pose(net_target, source, source_is_before=True)
                zeroed = None
            depth = self.multi(net_target, source, pose, net_K, zero_cost_volume=zeroed)["depth"][0]
        return finish_depth(self.config, depth, net_K, size)
