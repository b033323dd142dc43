"""Inference: the checkpoint predictor, streaming over videos, output writers, ONNX export and runtime.

* :mod:`~mfdepth.inference.predictor` - :class:`DepthPredictor`, depth from any checkpoint with no flags.
* :mod:`~mfdepth.inference.streaming` - :class:`StreamingPredictor`, one encoder pass per new frame.
* :mod:`~mfdepth.inference.writers` - npy, 16-bit PNG, colour PNG, side-by-side MP4, PLY point clouds.
* :mod:`~mfdepth.inference.onnx_export` / :mod:`~mfdepth.inference.onnx_backend` - ONNX graphs and
  ONNX Runtime inference with the predictor's interface.
* :mod:`~mfdepth.inference.pipeline` - what ``mfdepth predict`` runs (sources, intrinsics, writers).

Submodules are imported on use so that ``import mfdepth.inference`` stays light.
"""
