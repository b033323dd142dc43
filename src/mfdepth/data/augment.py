"""Training augmentation drawn once per sample and applied identically to all of its frames.

Randomness comes from a ``torch.Generator`` seeded from ``(seed, epoch, index)``, so the same item of
the same epoch is augmented the same way in any worker, in any order, and after a resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Monodepth2's ranges: factors drawn uniformly from [1 - s, 1 + s], hue shift from [-h, h] (turns).
BRIGHTNESS = 0.2
CONTRAST = 0.2
SATURATION = 0.2
HUE = 0.1
FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.5


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch, index)`` (well mixed, not summed)."""
    words = np.random.SeedSequence(
        [seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF]
    ).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 32) | int(words[1]))


@dataclass(frozen=True)
class ColorJitter:
    """One draw of colour jitter; ``order`` permutes (brightness, contrast, saturation, hue)."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]


@dataclass(frozen=True)
class Augmentation:
    flip: bool
    jitter: ColorJitter | None


def draw_augmentation(generator: torch.Generator, hflip: bool, color_jitter: bool) -> Augmentation:
    """Draw flip and jitter for one sample.

    The same number of random values is drawn whatever the switches say, so turning flipping off does
    not change which colours a given sample gets.
    """
    uniforms = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    order = tuple(torch.randperm(4, generator=generator).tolist())
    flip = hflip and uniforms[0] < FLIP_PROBABILITY
    jitter = None
    if color_jitter and uniforms[1] < JITTER_PROBABILITY:
        jitter = ColorJitter(
            brightness=1.0 - BRIGHTNESS + 2.0 * BRIGHTNESS * uniforms[2],
            contrast=1.0 - CONTRAST + 2.0 * CONTRAST * uniforms[3],
            saturation=1.0 - SATURATION + 2.0 * SATURATION * uniforms[4],
            hue=-HUE + 2.0 * HUE * uniforms[5],
            order=order,
        )
    return Augmentation(flip=flip, jitter=jitter)


# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def _grey(frames: torch.Tensor) -> torch.Tensor:
    r, g, b = frames.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def shift_hue(frames: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of ``(..., 3, H, W)`` RGB in [0, 1] by ``shift`` turns, keeping saturation and value.

    Same result as torchvision's ``adjust_hue`` (to float rounding) in a few whole-tensor operations:
    hue in sixths of a turn from the largest channel, then the closed form
    ``rgb_n = v - v s clamp(min(k_n, 4 - k_n), 0, 1)`` with ``k_n = (n + 6 h) mod 6``, ``n = 5, 3, 1``.
    """
    value, largest = frames.max(dim=-3)
    chroma = value - frames.min(dim=-3).values  # = value * saturation
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = frames.unbind(dim=-3)
    sixths = torch.where(
        largest == 0, (g - b) / safe, torch.where(largest == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    sixths = torch.remainder(sixths + 6.0 * shift, 6.0)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    k = torch.remainder(n + sixths.unsqueeze(-3), 6.0)
    return value.unsqueeze(-3) - chroma.unsqueeze(-3) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def apply_color_jitter(frames: torch.Tensor, jitter: ColorJitter) -> torch.Tensor:
    """Jitter ``(N, 3, H, W)`` float frames in [0, 1] with one set of factors; returns a new tensor in [0, 1].

    Each step matches torchvision's ``adjust_brightness/contrast/saturation/hue`` (contrast blends each
    frame with its own mean grey level); written out here because torchvision's hue step costs several
    times more and dominated the loading time of a sample.
    """
    out = frames
    for step in jitter.order:
        if step == 0:
            out = (out * jitter.brightness).clamp_(0.0, 1.0)
        elif step == 1:
            mean = _grey(out).mean(dim=(-3, -2, -1), keepdim=True)
            out = (jitter.contrast * out + (1.0 - jitter.contrast) * mean).clamp_(0.0, 1.0)
        elif step == 2:
            out = (jitter.saturation * out + (1.0 - jitter.saturation) * _grey(out)).clamp_(0.0, 1.0)
        else:
            out = shift_hue(out, jitter.hue).clamp_(0.0, 1.0)
    return out
