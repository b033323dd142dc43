"""A faster weight gradient for the encoders' widest convolutions on CPU.

oneDNN's float32 weight gradient of a convolution with a large kernel tensor (ResNet's 512 x 512 x 3 x 3)
over few output positions (batch x height x width, e.g. 4 x 2 x 6 at the encoder's 1/32 scale of a
64x192 input) takes 4-7x as long as the same product written as one matrix multiply of the unfolded
input (``benchmarks/weight_gradient.py``): the three such layers of a ResNet-18 took 22% of a
single-frame net's backward pass. :class:`GemmWeightGradConv2d` keeps the forward pass and the input
gradient of :class:`torch.nn.Conv2d` and computes the weight gradient by that matrix multiply where it is
measured faster; everywhere else (GPU, bfloat16 / autocast, no gradient, many positions) it is the plain
layer. Parameters, state-dict names and initialisation are those of ``nn.Conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Where the matrix multiply is measured faster (2-core AMD EPYC, torch 2.14, float32): kernels of at
# least 512 x 512 x 3 x 3 weights, up to ~192 output positions (1.26x there, 3-7x at 12-96 positions,
# 0.83x at 384). The limits keep a margin on both sides.
MIN_WEIGHT_ELEMENTS = 512 * 512 * 3 * 3
MAX_OUTPUT_POSITIONS = 128


class _WeightGradByMatmul(torch.autograd.Function):
    """``conv2d`` whose backward computes the weight gradient as ``grad_out @ unfold(input)^T``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        out_channels = weight.shape[0]
        grad_rows = grad_out.reshape(grad_out.shape[0], out_channels, -1)  # (B, C_out, L)
        if ctx.needs_input_grad[1]:
            columns = F.unfold(x, weight.shape[-2:], padding=ctx.padding, stride=ctx.stride)  # (B, C_in*k*k, L)
            grad_weight = torch.mm(
                grad_rows.transpose(0, 1).reshape(out_channels, -1),
                columns.transpose(1, 2).reshape(-1, columns.shape[1]),
            ).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum((0, 2))
        return grad_x, grad_weight, grad_bias, None, None


class GemmWeightGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (groups 1, dilation 1, zero padding) with the matrix-multiply weight gradient where
    :meth:`uses_matmul_weight_gradient` says so. Input ``(B, C_in, H, W)``, output as ``nn.Conv2d``."""

    def uses_matmul_weight_gradient(self, x: torch.Tensor) -> bool:
        if not (torch.is_grad_enabled() and self.weight.requires_grad and x.device.type == "cpu"):
            return False
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return False
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        positions = x.shape[0] * ((x.shape[-2] + 2 * ph - kh) // sh + 1) * ((x.shape[-1] + 2 * pw - kw) // sw + 1)
        return positions <= MAX_OUTPUT_POSITIONS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_matmul_weight_gradient(x):
            return _WeightGradByMatmul.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def use_matmul_weight_gradients(module: nn.Module) -> int:
    """Turn every plain ``nn.Conv2d`` in ``module`` with at least :data:`MIN_WEIGHT_ELEMENTS` weights
    into a :class:`GemmWeightGradConv2d`, in place; returns how many.

    The class is swapped on the existing layers rather than rebuilt, so their parameters, hooks and the
    random stream of a seeded initialisation stay exactly as they were.
    """
    count = 0
    for layer in module.modules():
        if (type(layer) is nn.Conv2d and layer.weight.numel() >= MIN_WEIGHT_ELEMENTS and layer.groups == 1
                and layer.dilation == (1, 1) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)):
            layer.__class__ = GemmWeightGradConv2d
            count += 1
    return count
