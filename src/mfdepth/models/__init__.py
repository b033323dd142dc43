"""Networks: ResNet encoders, U-Net decoder, pose net, adaptive cost volume, MSFF, streaming."""

from mfdepth.models.cost_volume import build_cost_volume, finish_cost_volume, sweep_pixels
from mfdepth.models.layers import DepthDecoder, ResnetEncoder, bound_fractions, disp_to_depth
from mfdepth.models.networks import (
    MultiFrameDepthNet,
    MultiScaleFeatureFusion,
    PoseNet,
    SingleFrameDepthNet,
    StreamingDepth,
    prepare_for_inference,
)

__all__ = [
    "DepthDecoder",
    "MultiFrameDepthNet",
    "MultiScaleFeatureFusion",
    "PoseNet",
    "ResnetEncoder",
    "SingleFrameDepthNet",
    "StreamingDepth",
    "bound_fractions",
    "build_cost_volume",
    "disp_to_depth",
    "finish_cost_volume",
    "prepare_for_inference",
    "sweep_pixels",
]
