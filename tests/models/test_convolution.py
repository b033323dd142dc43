"""The matrix-multiply weight gradient against PyTorch's own convolution gradient."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mfdepth.models.convolution import (
    MAX_OUTPUT_POSITIONS,
    GemmWeightGradConv2d,
    use_matmul_weight_gradients,
)
from mfdepth.models.layers import ResnetEncoder


def reference_gradients(layer: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor):
    out = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
    return out, torch.autograd.grad(out, (x, layer.weight, layer.bias), grad_out)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_gradients_equal_the_reference(stride, padding):
    torch.manual_seed(0)
    layer = GemmWeightGradConv2d(6, 10, 3, stride=stride, padding=padding, bias=True)
    x = torch.randn(2, 6, 7, 9, requires_grad=True)  # at most 126 output positions
    assert layer.uses_matmul_weight_gradient(x)
    out = layer(x)
    grad_out = torch.randn_like(out)
    expected_out, expected = reference_gradients(layer, x, grad_out)
    got = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad_out)
    assert torch.equal(out, expected_out)  # the forward pass is nn.Conv2d's own
    for name, g, e in zip(("input", "weight", "bias"), got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=f"{name} gradient")


def test_frozen_input_or_weight_get_no_gradient():
    torch.manual_seed(1)
    layer = GemmWeightGradConv2d(4, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 3, 5)  # an image that needs no gradient, as at the encoder's first layer
    out = layer(x)
    (grad_weight,) = torch.autograd.grad(out.square().sum(), (layer.weight,))
    expected = torch.autograd.grad(F.conv2d(x, layer.weight, None, 1, 1).square().sum(), (layer.weight,))[0]
    torch.testing.assert_close(grad_weight, expected, rtol=1e-5, atol=1e-5)
    layer.weight.requires_grad_(False)
    x.requires_grad_(True)
    assert not layer.uses_matmul_weight_gradient(x)  # nothing to gain: oneDNN's input gradient is fast


def test_the_plain_layer_where_the_matmul_is_not_measured_faster():
    layer = GemmWeightGradConv2d(4, 4, 3, padding=1)
    small = torch.randn(2, 4, 4, 4)
    assert layer.uses_matmul_weight_gradient(small)
    with torch.no_grad():
        assert not layer.uses_matmul_weight_gradient(small)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer.uses_matmul_weight_gradient(small)
    assert not layer.uses_matmul_weight_gradient(small.to(torch.float64))
    side = int(MAX_OUTPUT_POSITIONS ** 0.5) + 1  # one image with more output positions than the limit
    assert not layer.uses_matmul_weight_gradient(torch.randn(1, 4, side, side))
    assert layer.uses_matmul_weight_gradient(torch.randn(2, 4, 8, MAX_OUTPUT_POSITIONS // 16))


def test_encoder_swaps_only_its_widest_layers_and_keeps_the_seeded_weights():
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.manual_seed(3)
    encoder = ResnetEncoder(18)
    swapped = [name for name, m in encoder.named_modules() if isinstance(m, GemmWeightGradConv2d)]
    assert swapped == ["layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    got = encoder.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert use_matmul_weight_gradients(encoder) == 0  # already swapped; plain layers only


def test_encoder_gradients_equal_those_of_plain_convolutions():
    torch.manual_seed(4)
    encoder = ResnetEncoder(18)
    images = torch.rand(2, 3, 64, 96)

    def gradients():
        encoder.zero_grad()
        sum(f.square().mean() for f in encoder(images)).backward()
        return {n: p.grad.clone() for n, p in encoder.named_parameters()}

    got = gradients()
    for layer in encoder.modules():
        if isinstance(layer, GemmWeightGradConv2d):
            layer.__class__ = nn.Conv2d
    expected = gradients()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
