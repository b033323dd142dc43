"""Build the networks a config describes (training and inference share these)."""

from __future__ import annotations

from mfdepth.config import Config


def build_single(config: Config):
    """The single-frame depth net S (teacher)."""
    from mfdepth.models import SingleFrameDepthNet

    m = config.model
    return SingleFrameDepthNet(
        m.encoder_layers, m.min_depth, m.max_depth, weights_path=m.pretrained_weights, initial_depth=m.initial_depth,
        encoder_width=m.encoder_width,
    )


def build_multi(config: Config, msff: bool, fine_matching: bool | None = None, cost_hint: bool | None = None,
                msff_residual: bool | None = None):
    """The multi-frame depth net M; ``msff`` picks multi-scale fusion or single-scale matching;
    ``fine_matching`` (default: the config's) adds the full-resolution image cost, ``cost_hint`` (default:
    the config's) the lowest-cost depth as an input, ``msff_residual`` (default: the config's) the
    fusion's residual form."""
    from mfdepth.models import MultiFrameDepthNet

    m = config.model
    return MultiFrameDepthNet(
        m.encoder_layers, m.num_depth_bins, m.min_depth, m.max_depth, msff=msff,
        weights_path=m.pretrained_weights, matching_channels=m.matching_channels, initial_depth=m.initial_depth,
        fine_matching=m.fine_matching if fine_matching is None else fine_matching,
        cost_hint=m.cost_hint if cost_hint is None else cost_hint, encoder_width=m.encoder_width,
        msff_residual=m.msff_residual if msff_residual is None else msff_residual,
        fine_matching_downsample=m.fine_matching_downsample,
    )


def build_pose(config: Config):
    """The pose net P (two stacked frames -> relative pose)."""
    from mfdepth.models import PoseNet

    m = config.model
    return PoseNet(
        m.encoder_layers, weights_path=m.pretrained_weights, input_downsample=m.pose_downsample,
        translation_scale=m.pose_translation_scale, encoder_width=m.encoder_width,
    )
