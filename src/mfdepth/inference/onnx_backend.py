"""ONNX Runtime inference with the interface of :class:`~mfdepth.inference.predictor.DepthPredictor`.

The graph (from :func:`mfdepth.inference.onnx_export.export_onnx`) carries its own description in its
metadata (network, resolution, the checkpoint's meta and training config), so an ``.onnx`` file runs
with no checkpoint at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mfdepth.config import config_from_dict
from mfdepth.data.errors import DataError
from mfdepth.inference.onnx_export import META_KEY, ort_session
from mfdepth.inference.predictor import finish_depth, resize_to_network


class OnnxDepthPredictor:
    """Depth from an exported mfdepth ONNX graph on the CPU.

    Args:
        path: ``.onnx`` file written by ``mfdepth export``.
        threads: intra-op threads of ONNX Runtime (None = its default, all cores).

    The multi-frame graph has no feature cache: each call runs the encoder on both frames.
    """

    device = torch.device("cpu")

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnx

        path = Path(path)
        if not path.is_file():
            raise DataError(f"ONNX model not found: {path}; write one with mfdepth export --format onnx")
        try:
            metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as err:  # onnx raises DecodeError and others for foreign files
            raise DataError(f"cannot read ONNX model {path} ({err.__class__.__name__}: {err})") from None
        if META_KEY not in metadata:
            raise DataError(f"{path} is not an mfdepth ONNX export (no '{META_KEY}' metadata); re-export it")
        description = json.loads(metadata[META_KEY])
        self.path = path
        self.network = description["network"]
        self.height, self.width = int(description["height"]), int(description["width"])
        self.meta = description["meta"]
        self.config = config_from_dict(self.meta["config"])
        self.checkpoint = Path(description.get("checkpoint", path))
        self.session = ort_session(path, threads)
        self.input_names = [node.name for node in self.session.get_inputs()]

    @property
    def is_multi_frame(self) -> bool:
        return self.network == "multi"

    def to_network_size(self, images: torch.Tensor, K: torch.Tensor | None):
        return resize_to_network(images, K, self.height, self.width)

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The raw graph on network-size inputs (see :mod:`mfdepth.inference.onnx_export`) -> ``(B,1,H,W)``."""
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
                for name, t in zip(self.input_names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    @torch.inference_mode()
    def predict(
        self,
        target: torch.Tensor,
        previous: torch.Tensor | None = None,
        K: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Same contract as :meth:`DepthPredictor.predict`: ``(B,3,h,w)`` frames, K in pixels of ``target``."""
        target = target.float().cpu()
        size = output_size or tuple(target.shape[-2:])
        net_target, net_K = self.to_network_size(target, None if K is None else K.float().cpu())
        if self.is_multi_frame:
            if net_K is None:
                raise ValueError("the multi-frame network needs intrinsics K (pixels of the target image)")
            # The graph reads "previous == target" as "no previous frame" (zeroed cost volume).
            source = net_target if previous is None else self.to_network_size(previous.float().cpu(), None)[0]
            depth = self.run(net_target, source, net_K)
        else:
            depth = self.run(net_target)
        return finish_depth(self.config, depth, net_K, size)
