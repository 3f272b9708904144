"""Quantized layers with ``activations="int8"``: each product quantizes its input rows to int8 in
blocks of 32 and multiplies integer codes (the C++ op of ``native.py`` where the CPU has AVX-512
VNNI, torch operations elsewhere). The op is checked against :func:`native.reference_product`,
and that against the arithmetic written out here; the layers, configs, saves and GGUF loads
against the float-activation layers holding the same codes."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf_writers import write_model_gguf
from test_gguf_quantized import reference_model

import torchformers
from torchformers.errors import ConfigError, UnsupportedArgumentError
from torchformers.nn.linear import project
from torchformers.quantization import Int4Linear, Int8Linear, WeightOnlyConfig, native, quantize
from torchformers.quantization.linear import INT8_ACTIVATIONS, quantize_weight, quantized_linear
from torchformers.quantization.quantizer import quantized_layers

HAS_COMPILER = any(shutil.which(name) for name in ("g++", "c++", "clang++"))
KERNEL_HERE = native.KERNEL.cpu_can_run() and HAS_COMPILER


def kernel_weight(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The op's weight layout for codes (out, in)."""
    if bits == 4:
        return ((codes[:, 0::2] << 4) | codes[:, 1::2]).contiguous()
    return (codes.to(torch.int16) + 128).to(torch.uint8)


def written_out(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                group_size: int) -> torch.Tensor:
    """The product as the kernel's header states it, one block at a time, in float64."""
    rows = x.double().reshape(x.shape[0], -1, 32)
    x_scale = rows.abs().amax(-1) / 127
    x_codes = torch.where(x_scale[..., None] > 0, (rows.float() * (1 / (x_scale.float()[..., None]))).round(), 0)
    weights = codes.double().reshape(codes.shape[0], -1, 32)
    d = scale.double().repeat_interleave(group_size // 32, dim=1)
    if zero is None:
        weights, offset = weights, torch.zeros_like(d)
    else:
        offset = zero.double().repeat_interleave(group_size // 32, dim=1) - 8 * d
    dots = torch.einsum("mbk,nbk->mnb", x_codes.double(), weights)
    sums = x_codes.double().sum(-1)
    return (torch.einsum("mnb,nb,mb->mn", dots, d, x_scale) + torch.einsum("nb,mb->mn", offset, x_scale * sums))


CASES = [(1, 96, 576, 32), (3, 100, 160, 32), (2, 64, 96, 32), (5, 48, 1536, 64), (1, 40, 512, 128),
         (7, 3, 64, 32), (1, 17, 32, 32)]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows,out_features,in_features,group_size", CASES)
def test_the_op_and_the_torch_route_compute_the_stated_arithmetic(bits, rows, out_features, in_features, group_size):
    generator = torch.Generator().manual_seed(rows * 1000 + out_features)
    codes, scale, zero = quantize_weight(torch.randn(out_features, in_features, generator=generator), bits, group_size)
    if bits == 8:
        codes = codes.to(torch.int16)
    x = torch.randn(rows, in_features, generator=generator) * 3
    x[0, :32] = 0  # a block of zeros has scale 0
    weight = kernel_weight(codes, bits)
    expected = written_out(x, codes, scale, zero, group_size)
    reference = native.reference_product(x, weight, scale, zero, group_size)
    torch.testing.assert_close(reference.double(), expected, rtol=1e-5, atol=1e-4 * expected.abs().max().item())
    product = native.product(x, weight, scale.contiguous(), None if zero is None else zero.contiguous(), group_size)
    torch.testing.assert_close(product, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


@pytest.mark.skipif(not KERNEL_HERE, reason="the kernel needs AVX-512 VNNI and a C++ compiler, which this machine lacks")
def test_the_kernel_builds_and_serves_cpu_products_here():
    assert native.load_kernel()
    layer = quantized_linear(torch.randn(64, 64), None, 4, 32, activations="int8")
    x = torch.randn(2, 64)
    with torch.profiler.profile() as prof:
        layer(x)
    assert any(event.key == "torchformers::int8_activation_linear" for event in prof.key_averages())
    # Batches of rows, three dimensions and bfloat16 rows go through it too.
    x3 = torch.randn(2, 5, 64)
    torch.testing.assert_close(layer(x3), native.reference_product(x3, layer.packed, layer.weight_scale,
                                                                   layer.weight_zero, 32), rtol=1e-5, atol=1e-5)
    assert layer(x3.bfloat16()).dtype == torch.bfloat16


def test_without_the_kernel_layers_give_the_same_numbers(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    layer = quantized_linear(torch.randn(48, 128, generator=generator), None, 4, 32, activations="int8")
    x = torch.randn(3, 128, generator=generator)
    with_kernel = layer(x)
    monkeypatch.setattr(native.KERNEL, "loaded", False)  # as on a machine without VNNI or a compiler
    torch.testing.assert_close(layer(x), with_kernel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 64), (8, 32), (8, None)])
def test_layers_keep_the_checkpoint_layout_and_differ_from_float_activations_by_the_rounding(bits, group_size):
    generator = torch.Generator().manual_seed(bits)
    weight = torch.randn(80, 256, generator=generator)
    bias = torch.randn(80, generator=generator)
    float_layer = quantized_linear(weight, bias.clone(), bits, group_size)
    layer = quantized_linear(weight, bias.clone(), bits, group_size, activations="int8")
    assert layer.kernel == INT8_ACTIVATIONS and "activations='int8'" in repr(layer)
    # The same codes and scales: equal state dicts and dequantized weights.
    state, float_state = layer.state_dict(), float_layer.state_dict()
    assert state.keys() == float_state.keys() and all(torch.equal(state[key], float_state[key]) for key in state)
    assert torch.equal(layer.dequantize(), float_layer.dequantize())
    x = torch.randn(4, 256, generator=generator)
    exact = x @ layer.dequantize().t() + bias
    output = layer(x)
    # Block-wise int8 rows: within a percent or two of the product with the dequantized weight.
    assert (output - exact).abs().max() < 0.03 * exact.abs().max()
    torch.testing.assert_close(output, native.reference_product(x, *_kernel_tensors(layer)) + bias,
                               rtol=1e-5, atol=1e-4)
    # A state dict loads into an empty layer with int8 activations, and from one with float activations.
    empty_class = Int4Linear if bits == 4 else Int8Linear
    empty = empty_class(256, 80, group_size or 256, bias=True, activations="int8")
    empty.load_state_dict(float_state)
    assert torch.equal(empty(x), output)
    float_layer.load_state_dict(state)
    assert torch.equal(float_layer.dequantize(), layer.dequantize())


def _kernel_tensors(layer):
    if isinstance(layer, Int4Linear):
        return layer.packed, layer.weight_scale, layer.weight_zero, layer.group_size
    return layer.weight, layer.weight_scale, None, layer.group_size


def test_casts_copies_merges_and_gradients():
    generator = torch.Generator().manual_seed(2)
    layer = quantized_linear(torch.randn(64, 96, generator=generator), None, 4, 32, activations="int8")
    x = torch.randn(2, 96, generator=generator)
    before = layer(x)
    layer.half()  # scales and codes are not floating-point parameters: unchanged
    assert layer.weight_scale.dtype == torch.bfloat16 and torch.equal(layer(x), before)
    clone = copy.deepcopy(layer)
    assert torch.equal(clone(x), before) and clone.kernel == INT8_ACTIVATIONS
    layer.merge_delta(torch.full((64, 96), 0.5))
    assert not torch.allclose(layer(x), before)
    trained = x.clone().requires_grad_()
    layer(trained).sum().backward()  # the input's gradient flows through the dequantized weight (QLoRA)
    torch.testing.assert_close(trained.grad, layer.dequantize().sum(0).expand_as(x))


def test_projections_of_one_input_join_into_one_product():
    generator = torch.Generator().manual_seed(3)
    layers = tuple(quantized_linear(torch.randn(rows, 128, generator=generator), None, 4, 32, activations="int8")
                   for rows in (96, 32, 32))
    x = torch.randn(2, 1, 128, generator=generator)
    with torch.no_grad():
        alone = [layer(x) for layer in layers]
    with torch.inference_mode():
        together = project(x, layers)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(alone, together, strict=True))
    # The members hold views into the group's rows, scales and zero points: no second copy.
    for name in ("packed", "weight_scale", "weight_zero"):
        assert len({getattr(layer, name).untyped_storage().data_ptr() for layer in layers}) == 1
    layers[1].merge_delta(torch.ones(32, 128))
    with torch.no_grad():
        torch.testing.assert_close(project(x, layers)[1], layers[1](x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_COMPILER, reason="torch.compile's inductor backend needs a C++ compiler")
def test_compiled_graphs_call_the_same_product():
    generator = torch.Generator().manual_seed(4)
    layers = tuple(quantized_linear(torch.randn(rows, 64, generator=generator), None, bits, 32, activations="int8")
                   for rows, bits in ((64, 4), (32, 4), (48, 8)))
    x = torch.randn(1, 1, 64, generator=generator)
    with torch.inference_mode():
        project(x, layers[:2])  # the group an eager call makes, which compiled graphs use
        eager = [*project(x, layers[:2]), layers[2](x)]
        compiled = torch.compile(lambda x: [*project(x, layers[:2]), layers[2](x)], fullgraph=True)
        assert all(torch.equal(a, b) for a, b in zip(compiled(x), eager, strict=True))


def test_configs_check_and_record_the_activations(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match="activations must be one of"):
        WeightOnlyConfig(bits=4, activations="int4")
    with pytest.raises(ConfigError, match="multiples of 32"):
        quantized_linear(torch.randn(8, 48), None, 8, None, name="odd", activations="int8")
    config = WeightOnlyConfig(bits=4, group_size=32, activations="int8")
    assert WeightOnlyConfig.from_dict(config.to_dict()) == config
    assert "activations" not in WeightOnlyConfig(bits=4).to_dict()  # the default is not written

    ids = torch.randint(0, tiny_llama.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    float_model = quantize(copy.deepcopy(tiny_llama), WeightOnlyConfig(bits=4, group_size=32))
    model = quantize(tiny_llama, config)
    assert all(layer.kernel == INT8_ACTIVATIONS for layer in quantized_layers(model).values())
    with torch.no_grad():
        logits, float_logits = model(ids).logits, float_model(ids).logits
    assert not torch.equal(logits, float_logits)
    assert (logits - float_logits).abs().max() < 0.05 * float_logits.abs().max()
    model.save_pretrained(tmp_path / "saved")
    reloaded = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert reloaded.config.quantization_config["activations"] == "int8"
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, logits)
    # The activations are not in the weights: a load may choose others.
    as_float = torchformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "saved", quantization_config=WeightOnlyConfig(bits=4, group_size=32))
    assert "activations" not in as_float.config.quantization_config
    with torch.no_grad():
        torch.testing.assert_close(as_float(ids).logits, float_logits)


def test_gguf_loads_take_the_activations_only(tmp_path):
    path = write_model_gguf(tmp_path / "m.gguf", reference_model(tie=False), "llama", qtype=Q.Q4_1)
    model = torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False,
                                                              quantization_config={"activations": "int8"})
    assert all(layer.kernel == INT8_ACTIVATIONS for layer in quantized_layers(model).values())
    assert model.config.quantization_config["activations"] == "int8"
    with pytest.raises(UnsupportedArgumentError, match="may only choose the activations"):
        torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False,
                                                          quantization_config={"activations": "int8", "bits": 4})
    with pytest.raises(ConfigError, match="activations must be one of"):
        torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False,
                                                          quantization_config={"activations": "fp8"})


@pytest.mark.skipif(not native.KERNEL.cpu_can_run(), reason="the build is only tried on CPUs with AVX-512 VNNI")
def test_a_failed_build_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(native.KERNEL, "loaded", None)
    monkeypatch.setenv("TORCHFORMERS_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")  # a "compiler" that always fails
    with caplog.at_level("WARNING"):
        assert native.load_kernel() is False
    assert "building the int8 kernel failed" in caplog.text
    assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-written left behind
    layer = quantized_linear(torch.randn(32, 64), None, 4, 32, activations="int8")
    x = torch.randn(2, 64)
    torch.testing.assert_close(layer(x), native.reference_product(x, *_kernel_tensors(layer)))


def test_other_devices_are_warned_that_products_dequantize():
    layer = quantized_linear(torch.randn(32, 64), None, 8, 32, activations="int8").to("meta")
    native._warn_once.cache_clear()
    with pytest.warns(UserWarning, match="kernel on CPUs only; on meta"):
        out = layer(torch.empty(2, 64, device="meta"))
    assert out.shape == (2, 32) and out.device.type == "meta"
