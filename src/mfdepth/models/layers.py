"""Building blocks shared by the networks: ResNet encoders, the U-Net disparity decoder, disp -> depth."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mfdepth.models.convolution import use_matmul_weight_gradients

# ImageNet statistics used by torchvision's ResNets, applied inside the encoder so callers pass [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_resnet_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict from a local file (e.g. ``resnet18-f37072fd.pth``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights not found: {path}; give the path of a torchvision ResNet state dict "
            "(model.pretrained_weights) or leave it empty to train from scratch"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


RESNET_BLOCKS = {18: (torchvision.models.resnet.BasicBlock, (2, 2, 2, 2)),
                 50: (torchvision.models.resnet.Bottleneck, (3, 4, 6, 3))}


def resnet_trunk(num_layers: int, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-18/50 with every stage's channel count times ``width``.

    ``width`` 1 is torchvision's own model (same parameter names, same initialisation, so seeded runs
    and ImageNet state dicts are unchanged). Other widths build the same blocks with
    ``round(64 * width)``, ``round(128 * width)``, ... planes and torchvision's initialisation: a lighter
    encoder for CPU training from scratch (``model.encoder_width``).
    """
    if width == 1.0:
        return {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[num_layers](weights=None)
    return scaled_resnet_trunk(num_layers, width)


def scaled_resnet_trunk(num_layers: int, width: float) -> nn.Module:
    """The stem and four stages of a ResNet-18/50 with ``width`` times torchvision's channels, built from
    torchvision's own blocks with its initialisation (no classifier head)."""
    if not 0.0 < width <= 4.0:
        raise ValueError(f"encoder width must lie in (0, 4], got {width}")
    block, counts = RESNET_BLOCKS[num_layers]
    planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(planes[0])
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = planes[0]
    for index, (plane, count, stride) in enumerate(zip(planes, counts, (1, 2, 2, 2), strict=True)):
        downsample = None
        if stride != 1 or inplanes != plane * block.expansion:
            downsample = nn.Sequential(torchvision.models.resnet.conv1x1(inplanes, plane * block.expansion, stride),
                                       nn.BatchNorm2d(plane * block.expansion))
        blocks = [block(inplanes, plane, stride, downsample)]
        inplanes = plane * block.expansion
        blocks += [block(inplanes, plane) for _ in range(1, count)]
        setattr(net, f"layer{index + 1}", nn.Sequential(*blocks))
    for module in net.modules():  # torchvision's ResNet initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return net


class ResnetEncoder(nn.Module):
    """torchvision ResNet-18/50 trunk returning 5 feature maps (1/2, 1/4, 1/8, 1/16, 1/32).

    ``width`` scales every stage's channels (:func:`resnet_trunk`); ``num_ch_enc`` gives the result.

    Parameter names equal torchvision's (``conv1.weight``, ``layer1.0.conv1.weight``, ...), so an
    ImageNet state dict loads directly. With ``num_input_images`` > 1 the images are stacked on
    channels and the first convolution's ImageNet kernel is repeated and divided by the count.

    Input ``(B, 3 * num_input_images, H, W)`` in [0, 1]; H and W multiples of 32.
    """

    def __init__(self, num_layers: int = 18, num_input_images: int = 1, weights_path: str | Path | None = None,
                 width: float = 1.0):
        super().__init__()
        if num_layers not in RESNET_BLOCKS:
            raise ValueError(f"ResNet depth {num_layers} is not supported (use 18 or 50)")
        if width != 1.0 and weights_path is not None:
            raise ValueError(f"ImageNet weights fit a full-width ResNet only; encoder width {width} needs weights_path=None")
        net = resnet_trunk(num_layers, width)
        planes = net.conv1.out_channels
        if num_input_images > 1:
            net.conv1 = nn.Conv2d(3 * num_input_images, planes, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        use_matmul_weight_gradients(self)
        last_norm = "bn2" if num_layers == 18 else "bn3"  # a stage's output channels
        self.num_ch_enc = [planes] + [getattr(layer[-1], last_norm).num_features
                                      for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.num_input_images = num_input_images
        mean = torch.tensor(IMAGENET_MEAN * num_input_images).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD * num_input_images).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        if weights_path is not None:
            self.load_imagenet(load_resnet_weights(weights_path))

    def load_imagenet(self, state: dict[str, torch.Tensor]) -> None:
        if self.num_input_images > 1 and "conv1.weight" in state:
            state = dict(state)
            state["conv1.weight"] = state["conv1.weight"].repeat(1, self.num_input_images, 1, 1) / self.num_input_images
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or missing:
            raise ValueError(
                f"ImageNet weights do not match a ResNet encoder: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """1/2-resolution features ``(B, 64, H/2, W/2)``."""
        return self.relu(self.bn1(self.conv1((x - self.mean) / self.std)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.stem(x)
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


class ConvBlock(nn.Module):
    """3x3 convolution with reflection padding, then ELU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")
        self.act = nn.ELU(inplace=True)

    def forward(self, x):
        return self.act(self.conv(x))


class DepthDecoder(nn.Module):
    """U-Net decoder with skip connections: encoder features -> sigmoid disparity at 4 scales.

    Output: list of ``(B, 1, H / 2**s, W / 2**s)`` in (0, 1) for s = 0..3 (s = 0 is the input size).
    """

    def __init__(self, num_ch_enc: list[int], num_scales: int = 4, initial_disp: float | None = None):
        super().__init__()
        self.num_ch_dec = [16, 32, 64, 128, 256]
        self.num_scales = num_scales
        self.up0 = nn.ModuleList()
        self.up1 = nn.ModuleList()
        for i in range(5):
            in_ch = num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            self.up0.append(ConvBlock(in_ch, self.num_ch_dec[i]))
            skip = num_ch_enc[i - 1] if i > 0 else 0
            self.up1.append(ConvBlock(self.num_ch_dec[i] + skip, self.num_ch_dec[i]))
        self.disp_convs = nn.ModuleList(
            nn.Conv2d(self.num_ch_dec[s], 1, 3, padding=1, padding_mode="reflect") for s in range(num_scales)
        )
        if initial_disp is not None:
            # Start the sigmoid near ``initial_disp`` (in (0, 1)) instead of 0.5: sets the initial depth.
            if not 0.0 < initial_disp < 1.0:
                raise ValueError(f"initial_disp must lie in (0, 1), got {initial_disp}")
            for conv in self.disp_convs:
                nn.init.constant_(conv.bias, math.log(initial_disp / (1.0 - initial_disp)))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]
        disps: list[torch.Tensor | None] = [None] * self.num_scales
        for i in range(4, -1, -1):
            x = F.interpolate(self.up0[i](x), scale_factor=2.0, mode="nearest")
            if i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.up1[i](x)
            if i < self.num_scales:
                # Float32 from here under mixed precision: depths feed geometry and the losses.
                disps[i] = torch.sigmoid(self.disp_convs[i](x).float())
        return disps


def sigmoid_for_depth(depth: float, min_depth: float, max_depth: float) -> float:
    """The sigmoid output that :func:`disp_to_depth` maps to ``depth`` (inverse of its mapping)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - min_disp) / (max_disp - min_disp)


def bound_fractions(depth: torch.Tensor, min_depth: float, max_depth: float,
                    margin: float = 1.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractions (0-dim tensors) of ``depth`` (any shape, metres) within a factor ``margin`` of the lower
    bound ``min_depth`` and of the upper bound ``max_depth`` of the range :func:`disp_to_depth` maps to.
    A pixel there sits where the sigmoid saturates: it gets almost no gradient back."""
    low = (depth <= min_depth * margin).float().mean()
    high = (depth >= max_depth / margin).float().mean()
    return low, high


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output in (0, 1) -> (scaled disparity in [1/max, 1/min], depth in [min, max] metres)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled
