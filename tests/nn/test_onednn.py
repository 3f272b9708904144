"""trainable_linear: oneDNN's forward and backward products equal F.linear's, and the route steps aside
where it must (no gradient, autocast, other dtypes, the switch off)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.profiler import profile

import torchformers.nn.onednn as onednn_module
from torchformers.nn.linear import Linear
from torchformers.nn.onednn import onednn_trains, trainable_linear

ONEDNN_OP = "mkldnn::_linear_pointwise"
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")


def ops_run(function) -> set[str]:
    with profile() as prof:
        function()
    return {event.key for event in prof.key_averages()}


def gradients(function, *tensors: torch.Tensor) -> list[torch.Tensor | None]:
    for tensor in tensors:
        tensor.grad = None
    output = function()
    (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    return [output.detach()] + [tensor.grad for tensor in tensors]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24), (2, 3, 4, 24)])
def test_forward_and_gradients_equal_f_linear(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(40, 24, requires_grad=True)
    bias_tensor = torch.randn(40, requires_grad=True) if bias else None
    leaves = [x, weight] + ([bias_tensor] if bias else [])
    ours = gradients(lambda: trainable_linear(x, weight, bias_tensor), *leaves)
    expected = gradients(lambda: F.linear(x, weight, bias_tensor), *leaves)
    for mine, reference in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)


def test_frozen_weight_or_input_gets_no_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 8, requires_grad=True)
    weight, bias = torch.randn(6, 8), torch.randn(6)
    trainable_linear(x, weight, bias).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(4, 8))
    assert weight.grad is None
    trainable_linear(torch.ones(2, 8), weight.requires_grad_(True), None).sum().backward()
    torch.testing.assert_close(weight.grad, torch.full((6, 8), 2.0))


def test_when_the_route_applies(monkeypatch):
    x, weight = torch.randn(2, 8), torch.randn(6, 8, requires_grad=True)
    assert onednn_trains(x, weight)
    with torch.no_grad():
        assert not onednn_trains(x, weight)
    assert not onednn_trains(x, weight.detach())
    assert not onednn_trains(x.double(), weight.detach().double().requires_grad_(True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_trains(x, weight)
    monkeypatch.setattr(onednn_module, "ONEDNN_TRAINING", False)
    assert not onednn_trains(x, weight)


def test_the_library_linear_trains_through_onednn():
    torch.manual_seed(0)
    layer = Linear(16, 12)
    x = torch.randn(3, 5, 16, requires_grad=True)
    assert ONEDNN_OP in ops_run(lambda: layer(x).sum().backward())
    ours = gradients(lambda: layer(x), x, layer.weight, layer.bias)
    expected = gradients(lambda: F.linear(x, layer.weight, layer.bias), x, layer.weight, layer.bias)
    for mine, reference in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
