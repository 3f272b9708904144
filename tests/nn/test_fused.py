"""fused_linear: the oneDNN inference path gives the plain path's numbers, and steps aside when it must."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import profile

import torchformers.nn.fused as fused_module
from torchformers.errors import UnsupportedArgumentError
from torchformers.nn.fused import fused_linear
from torchformers.nn.mlp import get_activation

FUSED_OP = "mkldnn::_linear_pointwise"


def ops_run(function) -> set[str]:
    with profile() as prof:
        function()
    return {event.key for event in prof.key_averages()}


def layer_and_input(dtype: torch.dtype = torch.float32, bias: bool = True):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40, bias=bias).to(dtype)
    return layer, torch.randn(3, 5, 24).to(dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [None, "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"])
def test_activation_matches_the_plain_path(activation, bias):
    layer, x = layer_and_input(bias=bias)
    with torch.no_grad():
        expected = F.linear(x, layer.weight, layer.bias)
        if activation is not None:
            expected = get_activation(activation)(expected)
        ours = fused_linear(x, layer, activation=activation)
        ran = ops_run(lambda: fused_linear(x, layer, activation=activation))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (FUSED_OP in ran) == (activation != "silu")  # silu has no fused form here


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_add_matches_the_plain_path(dtype):
    layer, x = layer_and_input(dtype)
    residual = torch.randn(3, 5, 40).to(dtype)
    with torch.no_grad():
        ours = fused_linear(x, layer, residual=residual)
        assert FUSED_OP in ops_run(lambda: fused_linear(x, layer, residual=residual))
    expected = F.linear(x.float(), layer.weight.float(), layer.bias.float()) + residual.float()
    tolerance = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(ours.float(), expected, atol=tolerance, rtol=0)
    assert ours.dtype == dtype


def test_training_gives_the_plain_paths_gradients():
    layer, x = layer_and_input()
    x.requires_grad_(True)
    target = torch.randn(3, 5, 40)
    (fused_linear(x, layer, activation="gelu") * target).sum().backward()
    ours = (x.grad, layer.weight.grad, layer.bias.grad)
    x.grad = layer.weight.grad = layer.bias.grad = None
    (F.gelu(F.linear(x, layer.weight, layer.bias)) * target).sum().backward()
    for mine, expected in zip(ours, (x.grad, layer.weight.grad, layer.bias.grad), strict=True):
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)


def test_hooked_or_wrapped_layers_are_called_as_modules():
    layer, x = layer_and_input()
    calls = []
    layer.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.no_grad():
        assert FUSED_OP not in ops_run(lambda: fused_linear(x, layer, activation="relu"))
    assert calls and calls[0] == (3, 5, 40)

    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    scaled = Scaled(24, 40)
    with torch.no_grad():
        torch.testing.assert_close(fused_linear(x, scaled), 2 * F.linear(x, scaled.weight, scaled.bias))


def test_switch_and_argument_errors(monkeypatch):
    layer, x = layer_and_input()
    monkeypatch.setattr(fused_module, "ONEDNN_LINEAR", False)
    with torch.no_grad():
        assert FUSED_OP not in ops_run(lambda: fused_linear(x, layer))
    with pytest.raises(UnsupportedArgumentError, match="not both"):
        fused_linear(x, layer, activation="gelu", residual=torch.zeros(3, 5, 40))
