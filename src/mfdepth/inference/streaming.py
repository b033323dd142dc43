"""Depth for a stream of frames, each frame costing one pass of the matching encoder.

With the PyTorch backend and a multi-frame network the cache of :class:`mfdepth.models.StreamingDepth`
keeps the previous frame's matching features, so a new frame runs the encoder once (not twice, as a
pair would). Other predictors (ONNX Runtime graphs, single-frame networks) are fed the previous frame
explicitly. Either way frame ``t`` gets exactly the depth the pair predictor gives for
``(frame t-1, frame t)``, and the first frame the single-frame fallback (zeroed cost volume).
"""

from __future__ import annotations

import torch

from mfdepth.inference.predictor import DepthPredictor, finish_depth, resize_to_network


class StreamingPredictor:
    """Wraps a predictor (:class:`DepthPredictor` or :class:`~mfdepth.inference.onnx_backend.OnnxDepthPredictor`).

    Call :meth:`reset` between unrelated sequences.
    """

    def __init__(self, predictor):
        self.predictor = predictor
        self._cache = None
        if isinstance(predictor, DepthPredictor) and predictor.is_multi_frame:
            from mfdepth.models import StreamingDepth

            self._cache = StreamingDepth(predictor.multi, predictor.pose)
        self._previous: torch.Tensor | None = None

    @property
    def caches_features(self) -> bool:
        """True when each frame costs one matching-encoder pass (PyTorch multi-frame network)."""
        return self._cache is not None

    def reset(self) -> None:
        self._previous = None
        if self._cache is not None:
            self._cache.reset()

    @torch.inference_mode()
    def step(self, image: torch.Tensor, K: torch.Tensor | None) -> torch.Tensor:
        """Depth of the next frame.

        Args:
            image: ``(B,3,h,w)`` float in [0,1], any size (each frame may differ).
            K: ``(B,3,3)`` intrinsics in pixels of ``image``; needed by multi-frame networks.
        Returns:
            ``(B,1,h,w)`` depth in metres at the frame's size.
        """
        predictor = self.predictor
        if self._cache is None:
            previous = self._previous if predictor.is_multi_frame else None
            depth = predictor.predict(image, previous, K)
            self._previous = image
            return depth
        if K is None:
            raise ValueError("the multi-frame network needs intrinsics K (pixels of the frame)")
        device = predictor.device
        net_image, net_K = resize_to_network(
            image.to(device, torch.float32), K.to(device, torch.float32), predictor.height, predictor.width
        )
        depth = self._cache.step(net_image, net_K)["depth"][0]
        return finish_depth(predictor.config, depth, net_K, tuple(image.shape[-2:]))
