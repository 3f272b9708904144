"""Int8 and int4 linear layers: close to float32, the kernel and dequantizing routes agree, the
checkpoint layout round-trips exactly, and the layouts take GGUF-style blocks."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from torch.nn import functional as F

from torchformers.errors import ConfigError
from torchformers.nn.linear import project
from torchformers.quantization import Int4Linear, Int8Linear
from torchformers.quantization.linear import (
    _codes_from_layout,
    _int4_kernel,
    _to_kernel_layout,
    pack_nibbles,
    quantized_linear,
    unpack_nibbles,
)

# (bits, group_size) -> largest relative error (Frobenius) of the output against float32 on
# Gaussian weights; measured: int8 per channel 0.7%, int8/32 0.6%, int4/32 7.5%, /64 9%, /128 10%.
SETTINGS = {(8, None): 0.012, (8, 32): 0.01, (4, 32): 0.09, (4, 64): 0.11, (4, 128): 0.12}


def relative_error(output: torch.Tensor, expected: torch.Tensor) -> float:
    return ((output - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize(("bits", "group_size"), SETTINGS)
def test_outputs_are_close_to_float32(bits, group_size):
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 256, generator=generator), torch.randn(96, generator=generator)
    x = torch.randn(2, 5, 256, generator=generator)
    layer = quantized_linear(weight, bias, bits, group_size)
    expected = F.linear(x, weight, bias)
    output = layer(x)
    assert output.shape == expected.shape and output.dtype == torch.float32
    assert relative_error(output, expected) < SETTINGS[bits, group_size]
    # The kernel (bfloat16 activations) and the float32 product of the dequantized weight agree.
    dequantized = F.linear(x, layer.dequantize(), bias)
    assert relative_error(output, dequantized) < 0.005
    if bits == 4:
        assert layer.kernel == "cpu"


def test_every_route_of_a_layer_gives_the_same_product():
    """One decode row, a batch of rows, a bfloat16 input, and a gradient-carrying input."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(64, 128, generator=generator)
    for bits in (8, 4):
        layer = quantized_linear(weight, None, bits, 32 if bits == 4 else None)
        rows = torch.randn(7, 128, generator=generator)
        batched = layer(rows)
        torch.testing.assert_close(torch.cat([layer(row[None]) for row in rows]), batched, atol=1e-5, rtol=0)
        torch.testing.assert_close(layer(rows.bfloat16()).float(), batched, atol=0.05, rtol=0.01)
        with_grad = rows.clone().requires_grad_()
        output = layer(with_grad)
        torch.testing.assert_close(output, batched, atol=0, rtol=0)
        output.sum().backward()
        torch.testing.assert_close(with_grad.grad, layer.dequantize().sum(0).expand(7, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("out_features", "in_features"), [(16, 32), (48, 64), (96, 256), (576, 192), (80, 128)])
def test_the_kernel_layout_unpacks_to_the_same_codes(out_features, in_features):
    codes = torch.randint(0, 16, (out_features, in_features), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(2))
    kernel = _int4_kernel(torch.device("cpu"), out_features, in_features, 32)
    assert kernel == "cpu"
    packed = _to_kernel_layout(kernel, codes)
    assert torch.equal(_codes_from_layout(kernel, packed, out_features, in_features), codes)
    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes)


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (8, 32), (4, 64)])
def test_the_state_dict_is_the_portable_layout_and_round_trips_exactly(bits, group_size):
    generator = torch.Generator().manual_seed(3)
    layer = quantized_linear(torch.randn(32, 128, generator=generator), torch.randn(32, generator=generator), bits,
                             group_size)
    state = layer.state_dict()
    groups = 128 // (group_size or 128)
    expected = {"weight": ((32, 128), torch.int8), "weight_scale": ((32, groups), torch.bfloat16),
                "bias": ((32,), torch.float32)}
    if bits == 4:
        expected.update(weight=((32, 64), torch.uint8), weight_zero=((32, groups), torch.bfloat16))
    assert {key: (tuple(t.shape), t.dtype) for key, t in state.items()} == expected
    x = torch.randn(3, 128, generator=generator)
    for assign in (True, False):
        fresh = type(layer)(128, 32, group_size, bias=True, device="meta" if assign else None)
        fresh.load_state_dict(state, assign=assign)
        assert torch.equal(fresh(x), layer(x))
    if bits == 4:  # the nibbles: even input feature high, odd low
        codes = layer.codes()
        assert torch.equal(state["weight"], (codes[:, 0::2] << 4) | codes[:, 1::2])


def test_dtype_casts_keep_codes_and_scales_and_copies_work():
    layer = quantized_linear(torch.randn(32, 64), torch.randn(32), 4, 32)
    state = layer.state_dict()
    x = torch.randn(2, 64)
    expected = layer(x)
    layer.half()
    assert layer.bias.dtype == torch.float16
    for key in ("weight", "weight_scale", "weight_zero"):
        assert torch.equal(layer.state_dict()[key], state[key])
    layer.float()
    torch.testing.assert_close(layer(x), expected, atol=1e-2, rtol=0)  # only the bias went through float16
    duplicate = copy.deepcopy(layer)
    assert torch.equal(duplicate(x), layer(x))


def test_unaligned_inputs_and_odd_shapes_take_a_safe_route():
    # The CPU int8 kernel crashes on inputs that are not 32-byte aligned or rows not a multiple of 16 long.
    layer = quantized_linear(torch.randn(48, 64), None, 8, None)
    buffer = torch.randn(5 * 64 + 3).bfloat16()
    unaligned = buffer[3:].view(5, 64)
    torch.testing.assert_close(layer(unaligned), layer(unaligned.clone()), atol=0, rtol=0)
    odd = quantized_linear(torch.randn(10, 40), torch.randn(10), 8, 8)  # grouped int8 and 40 inputs: dequantized
    x = torch.randn(3, 40)
    torch.testing.assert_close(odd(x), F.linear(x, odd.dequantize(), odd.bias), atol=1e-5, rtol=0)
    narrow = quantized_linear(torch.randn(10, 64), None, 4, 32)  # 10 outputs: no int4 kernel
    assert narrow.kernel is None
    torch.testing.assert_close(narrow(torch.ones(1, 64)), narrow.dequantize().sum(1)[None], atol=1e-4, rtol=0)


def test_a_group_size_that_does_not_divide_the_inputs_is_refused():
    with pytest.raises(ConfigError, match="96 input features.*group_size=64.*\\[32\\]"):
        quantized_linear(torch.randn(8, 96), None, 4, 64, name="mlp.up_proj")
    with pytest.raises(ConfigError, match="group_size=64"):
        Int8Linear(100, 8, group_size=64)


def test_gguf_style_blocks_load_without_requantizing():
    """Q8_0 (int8 blocks of 32, w = q * d), Q4_0 (w = (q - 8) * d) and Q4_1 (w = q * d + m)
    map onto the layouts: codes as stored, scale d, zero point 0 or m + 8d."""
    generator = torch.Generator().manual_seed(4)
    d = (torch.rand(16, 2, generator=generator) * 0.1).bfloat16()
    m = (-torch.rand(16, 2, generator=generator)).bfloat16()
    q8 = torch.randint(-128, 128, (16, 64), dtype=torch.int8, generator=generator)
    q4 = torch.randint(0, 16, (16, 64), dtype=torch.uint8, generator=generator)
    blockwise = {"d": d.float().repeat_interleave(32, 1), "m": m.float().repeat_interleave(32, 1)}

    q8_0 = Int8Linear.from_codes(q8, d)
    torch.testing.assert_close(q8_0.dequantize(), q8.float() * blockwise["d"], atol=0, rtol=0)
    q4_0 = Int4Linear.from_codes(q4, d, torch.zeros_like(d))
    torch.testing.assert_close(q4_0.dequantize(), (q4.float() - 8) * blockwise["d"], atol=0, rtol=0)
    q4_1 = Int4Linear.from_codes(q4, d, (m.float() + 8 * d.float()).bfloat16())
    # m + 8d is rounded to bfloat16 once: within half a bfloat16 step of |m + 8d| of the exact weights.
    torch.testing.assert_close(q4_1.dequantize(), q4.float() * blockwise["d"] + blockwise["m"], atol=0.01, rtol=0)
    assert q4_0.kernel == "cpu" and q4_0.group_size == 32 and q8_0.group_size == 32


def test_int4_projections_of_one_input_run_as_one_product_in_shared_buffers():
    generator = torch.Generator().manual_seed(3)
    weights = [torch.randn(rows, 128, generator=generator) for rows in (128, 64, 64)]
    layers = tuple(quantized_linear(weight, None, 4, 32) for weight in weights)
    assert all(layer.kernel == "cpu" for layer in layers)  # PyTorch's CPU int4 kernel serves them
    states = [copy.deepcopy(layer.state_dict()) for layer in layers]
    x = torch.randn(3, 1, 128, generator=generator)
    with torch.no_grad():
        alone = [layer(x) for layer in layers]
    with torch.inference_mode():  # as generate() runs it: the group's buffers are inference tensors
        together = project(x, layers)
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))
    # The layers now hold views into the group's buffers: no second copy of the codes.
    assert len({layer.packed.untyped_storage().data_ptr() for layer in layers}) == 1
    assert not layers[0].packed.is_inference()
    for layer, state in zip(layers, states, strict=True):
        assert all(torch.equal(state[key], value) for key, value in layer.state_dict().items())
        with torch.no_grad():
            assert torch.equal(layer(x), alone[layers.index(layer)])  # alone again, through the views
    # A layer that changes (an adapter merged into it) regroups with its new codes.
    layers[1].merge_delta(torch.ones(64, 128))
    with torch.no_grad():
        assert torch.equal(project(x, layers)[1], layers[1](x))
        assert not torch.equal(project(x, layers)[1], alone[1])
    # With a gradient to record, each layer runs on its own (the dequantized-gradient route).
    trained = x.clone().requires_grad_()
    outputs = project(trained, layers)
    sum(output.sum() for output in outputs).backward()
    assert trained.grad is not None


@pytest.mark.skipif(not any(shutil.which(name) for name in ("g++", "c++", "clang++")),
                    reason="torch.compile's inductor backend needs a C++ compiler, and this machine has none")
def test_a_grouped_int4_layer_still_compiles():
    # After a grouped call its codes are a view into the group's buffer; inductor must take that too.
    generator = torch.Generator().manual_seed(4)
    layers = tuple(quantized_linear(torch.randn(rows, 64, generator=generator), None, 4, 32) for rows in (64, 128))
    assert all(layer.kernel == "cpu" for layer in layers)  # PyTorch's CPU int4 kernel serves them
    x = torch.randn(1, 1, 64, generator=generator)
    with torch.inference_mode():
        project(x, layers)
        assert layers[1].packed.storage_offset() > 0
        compiled = torch.compile(layers[1], fullgraph=True)
        assert torch.equal(compiled(x), layers[1](x))


def _int4_calls(run) -> int:
    run()  # compiles where it has to, outside the count
    with torch.profiler.profile() as prof:
        run()
    return sum(event.count for event in prof.key_averages() if event.key == "aten::_weight_int4pack_mm_for_cpu")


@pytest.mark.skipif(not any(shutil.which(name) for name in ("g++", "c++", "clang++")),
                    reason="torch.compile's inductor backend needs a C++ compiler, and this machine has none")
def test_a_compiled_graph_uses_the_group_an_eager_call_made_and_drops_it_when_a_member_changes():
    generator = torch.Generator().manual_seed(5)
    layers = tuple(quantized_linear(torch.randn(rows, 64, generator=generator), None, 4, 32) for rows in (128, 64, 64))
    x = torch.randn(1, 1, 64, generator=generator)
    compiled = torch.compile(lambda x: project(x, layers), fullgraph=True)
    with torch.inference_mode():
        alone = [layer(x) for layer in layers]
        assert _int4_calls(lambda: compiled(x)) == 3  # no group yet: one call per layer
        project(x, layers)  # an eager call (generate's prompt) makes the group
        assert _int4_calls(lambda: compiled(x)) == 1
        grouped = compiled(x)
        assert all(torch.equal(a, b) for a, b in zip(alone, grouped, strict=True))
        # A member that changes empties the group at once, before any eager call could notice.
        layers[1].merge_delta(torch.ones(64, 64))
        assert _int4_calls(lambda: compiled(x)) == 3
        changed = compiled(x)
        assert torch.equal(changed[1], layers[1](x)) and not torch.equal(changed[1], alone[1])
        # A group whose member was replaced (an adapter wrapping it) is not used for the new set.
        project(x, layers)
        swapped = (layers[0], quantized_linear(torch.randn(64, 64, generator=generator), None, 4, 32), layers[2])
        compiled_swapped = torch.compile(lambda x: project(x, swapped), fullgraph=True)
        assert all(torch.equal(a, layer(x)) for a, layer in zip(compiled_swapped(x), swapped, strict=True))
