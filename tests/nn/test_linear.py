"""The decode route of the linear layers gives F.linear's / addmm's results."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torch.nn import functional as F

from torchformers.nn.linear import (
    Linear,
    PackedWeight,
    linear,
    linear_transposed,
    packed_for_decoding,
    project,
)


@pytest.mark.parametrize("rows", [1, 2, 8, 16, 17, 40])
@pytest.mark.parametrize(("out_features", "bias"),
                         [(96, False), (96, True), (97, False), (99, True), (3, False), (32, True)])
def test_linear_matches_f_linear(rows, out_features, bias):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(out_features, 48, generator=generator)
    b = torch.randn(out_features, generator=generator) if bias else None
    x = torch.randn(rows, 1, 48, generator=generator)
    if rows % 2:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, not contiguous when rows > 1
    out = linear(x, weight, b)
    assert out.shape == (rows, 1, out_features) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 16, 33])
def test_linear_transposed_matches_addmm(rows):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(64, 90, generator=generator)  # (in, out), GPT-2's Conv1D layout
    bias = torch.randn(90, generator=generator)
    x = torch.randn(rows, 1, 64, generator=generator)
    out = linear_transposed(x, weight, bias)
    expected = torch.addmm(bias, x.reshape(-1, 64), weight).view(rows, 1, 90)
    assert out.shape == (rows, 1, 90)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if rows > 16:  # the usual kernel: exactly the same numbers
        assert torch.equal(out, expected)


def test_compiled_decode_rows_call_the_eager_transposed_product_as_one_operation():
    # Inside a compiled graph, a decode row without gradient goes through one custom op that runs
    # the eager kernels (inductor's own loops for that product were slower); training keeps aten ops.
    from torchformers.nn.linear import _decode_linear_transposed

    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(64, 40, generator=generator), torch.randn(40, generator=generator)
    x = torch.randn(1, 1, 64, generator=generator)
    torch.library.opcheck(_decode_linear_transposed, (x, weight, bias))
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(str(graph_module.graph))
        return graph_module.forward

    compiled = torch.compile(linear_transposed, backend=recording_backend, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, weight, bias), torch.addmm(bias, x.view(1, 64), weight).view(1, 1, 40))
    assert "decode_linear_transposed" in graphs[-1]
    trained = weight.clone().requires_grad_()
    compiled(x, trained, bias).sum().backward()
    assert "decode_linear_transposed" not in graphs[-1] and trained.grad is not None


def test_prompts_use_the_usual_kernels_exactly():
    weight = torch.randn(96, 48)
    x = torch.randn(1, 5, 48)  # five positions of one sequence: a prompt, not a decode step
    assert torch.equal(linear(x, weight), F.linear(x, weight))
    assert torch.equal(linear_transposed(x, weight.t().contiguous()), x @ weight.t())


def test_other_dtypes_and_grad_use_the_usual_kernels():
    weight = torch.randn(8, 4, dtype=torch.float64)
    x = torch.randn(1, 4, dtype=torch.float64)
    assert torch.equal(linear(x, weight), F.linear(x, weight))
    layer = Linear(4, 8)
    x = torch.randn(1, 4, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_linear_module_is_an_nn_linear():
    layer = Linear(6, 10, bias=False)
    assert isinstance(layer, torch.nn.Linear) and set(layer.state_dict()) == {"weight"}


def test_linear_module_follows_weight_changes():
    torch.manual_seed(0)
    layer = Linear(8, 12)
    x = torch.randn(1, 1, 8)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    with torch.no_grad():
        layer.weight.data = torch.randn(12, 8)  # new storage, same parameter
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.weight = torch.nn.Parameter(torch.randn(12, 8))  # a new parameter
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    with torch.no_grad():
        layer.weight.mul_(2)  # in place: the cached view sees it
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
@pytest.mark.parametrize("several_rows_to_onednn", [True, False])
def test_a_batch_decode_step_goes_to_onednn_unless_switched_off(monkeypatch, several_rows_to_onednn):
    import torchformers.nn.linear as linear_module

    monkeypatch.setattr(linear_module, "ONEDNN_SEVERAL_ROWS", several_rows_to_onednn)
    weight, x = torch.randn(96, 48), torch.randn(8, 1, 48)
    with torch.profiler.profile() as prof:
        out = linear(x, weight)
    ran = {event.key for event in prof.key_averages()}
    assert ("mkldnn::_linear_pointwise" in ran) == several_rows_to_onednn
    torch.testing.assert_close(out, F.linear(x, weight), rtol=1e-5, atol=1e-5)


def _weights_packed(run, route: str) -> int:
    """How many weights ``run()`` packs, checking that each went to ``route``'s layout."""
    made = []
    with mock.patch.object(PackedWeight, "of", side_effect=lambda *args, of=PackedWeight.of: made.append(of(*args))
                           or made[-1]):
        run()
    assert all(packed.native == (route == "native") for packed in made)
    return len(made)


def test_packed_decoding_matches_f_linear_and_follows_weight_changes(packing_route):
    route = packing_route
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(48, 96), Linear(96, 48, bias=False))
    x = torch.randn(8, 1, 48)
    expected = model(x)
    with torch.no_grad(), packed_for_decoding(model, rows=8):
        assert _weights_packed(lambda: model(x), route) == 2  # each weight packed on first use
        assert _weights_packed(lambda: model(x), route) == 0  # and reused
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        model[0].weight.mul_(2)  # in place
        model[1].weight.data = torch.randn(48, 96)  # new storage
        assert _weights_packed(lambda: model(x), route) == 2
        torch.testing.assert_close(model(x), F.linear(F.linear(x, model[0].weight, model[0].bias), model[1].weight),
                                   rtol=1e-5, atol=1e-5)
        # Prompts (several positions) and single rows keep the usual routes.
        assert _weights_packed(lambda: (model(torch.randn(8, 5, 48)), model(torch.randn(1, 1, 48))), route) == 0
    assert all("_packing" not in layer.__dict__ for layer in model)  # the copies are dropped


def test_gpt2_conv1d_layers_pack_for_a_batch_too(packing_route):
    route = packing_route
    from torchformers.models.gpt2 import Conv1D

    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv1D(96, 48), Conv1D(48, 96))
    for layer in model:
        torch.nn.init.normal_(layer.weight)
    x = torch.randn(8, 1, 48)
    expected = x @ model[0].weight + model[0].bias
    expected = expected @ model[1].weight + model[1].bias
    with torch.no_grad(), packed_for_decoding(model, rows=8):
        assert _weights_packed(lambda: model(x), route) == 2
        assert _weights_packed(lambda: model(x), route) == 0  # reused: the copy is stamped with the parameter
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert all("_packing" not in layer.__dict__ for layer in model)


@pytest.mark.parametrize("bias", [True, False])
def test_project_packs_a_group_as_one_product(bias, packing_route):
    route = packing_route
    torch.manual_seed(0)
    layers = (Linear(32, 64, bias=bias), Linear(32, 16, bias=bias), Linear(32, 16, bias=bias))
    x = torch.randn(4, 1, 32)
    expected = [layer(x) for layer in layers]
    with torch.no_grad(), packed_for_decoding(torch.nn.ModuleList(layers), rows=4):
        assert _weights_packed(lambda: project(x, layers), route) == 1
        for got, want in zip(project(x, layers), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        layers[2].weight.add_(1)
        assert _weights_packed(lambda: project(x, layers), route) == 1
        torch.testing.assert_close(project(x, layers)[2], F.linear(x, layers[2].weight, layers[2].bias),
                                   rtol=1e-5, atol=1e-5)
    # Outside the block, or with a layer of another kind, each layer runs on its own.
    mixed = (layers[0], torch.nn.Linear(32, 8))
    for group in (layers, mixed):
        for got, layer in zip(project(x, group), group, strict=True):
            torch.testing.assert_close(got, layer(x))
