"""The batch decode kernel (nn/rows_product.cpp): its packed layout and its products, against the
arithmetic written out in float64."""

from __future__ import annotations

import logging

import pytest
import torch

from torchformers.nn import rows_product

pytestmark = pytest.mark.skipif(not rows_product.available(),
                                reason="the batch decode kernel needs AVX-512F and a C++ compiler")


def test_the_layout_is_groups_of_48_outputs_input_feature_major_zero_padded():
    weight = torch.randn(100, 7)
    packed = rows_product.pack(weight)
    assert packed.shape == (3, 7, 48) and packed.dtype == torch.float32
    padded = torch.cat([weight, torch.zeros(44, 7)])
    assert torch.equal(packed, padded.view(3, 48, 7).transpose(1, 2))


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 7, 8, 9, 13, 16])
@pytest.mark.parametrize(("out_features", "features"), [(48, 16), (100, 7), (17, 33), (960, 576), (3, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_products_match_float64(rows, out_features, features, bias):
    generator = torch.Generator().manual_seed(rows * 1000 + out_features)
    weight = torch.randn(out_features, features, generator=generator)
    b = torch.randn(out_features, generator=generator) if bias else None
    x = torch.randn(rows, 1, features, generator=generator)
    out = rows_product.product(x, rows_product.pack(weight), out_features, b)
    expected = x.double() @ weight.double().t() + (b.double() if bias else 0)
    assert out.shape == (rows, 1, out_features) and out.dtype == torch.float32
    # float32 sums of `features` terms of size about 1: rounding grows with their square root.
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-6 * features**0.5 + 1e-6)
    assert (out.double() - expected).abs().max() <= (x.float() @ weight.t() - expected).abs().max() * 4 + 1e-6


def test_any_weight_strides_pack_the_same_matrix():
    stored = torch.randn(40, 100)  # stored (in, out), as GPT-2's Conv1D keeps it
    x = torch.randn(4, 40)
    out = rows_product.product(x, rows_product.pack(stored.t()), 100)
    torch.testing.assert_close(out, x @ stored, rtol=1e-5, atol=1e-5)
    assert torch.equal(rows_product.pack(stored.t()), rows_product.pack(stored.t().contiguous()))


def test_several_weights_pack_as_their_concatenation():
    weights = [torch.randn(40, 24), torch.randn(13, 24), torch.randn(24, 7).t()]
    assert torch.equal(rows_product.pack(*weights), rows_product.pack(torch.cat(weights)))
    with pytest.raises(RuntimeError, match=r"weights must be 2-D float32 CPU tensors \(out_features, 24\)"):
        rows_product.pack(torch.randn(4, 24), torch.randn(4, 25))


def test_a_packed_copy_of_another_shape_is_refused():
    packed = rows_product.pack(torch.randn(100, 7))
    with pytest.raises(RuntimeError, match="packed must come from pack_rows_weight"):
        rows_product.product(torch.randn(2, 8), packed, 100)
    with pytest.raises(RuntimeError, match="packed must come from pack_rows_weight"):
        rows_product.product(torch.randn(2, 7), packed, 200)
    with pytest.raises(RuntimeError, match="bias must be contiguous float32 with 100 values"):
        rows_product.product(torch.randn(2, 7), packed, 100, torch.zeros(99))


def test_shapes_are_known_to_compiled_graphs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        packed = rows_product.pack(torch.empty(100, 7))
        out = rows_product.product(torch.empty(3, 1, 7), packed, 100)
    assert packed.shape == (3, 7, 48) and out.shape == (3, 1, 100)


def test_without_the_kernel_decoding_keeps_onednn_packing(monkeypatch, caplog):
    from torchformers.native import NativeKernel

    kernel = NativeKernel(rows_product.KERNEL.name, rows_product.KERNEL.source, rows_product.KERNEL.flags,
                          rows_product.KERNEL.needed_cpu_flags, rows_product.KERNEL.fallback)
    monkeypatch.setenv("TORCHFORMERS_NATIVE_KERNELS", "0")
    with caplog.at_level(logging.INFO):
        assert kernel.load() is False
    assert "turned off by TORCHFORMERS_NATIVE_KERNELS=0; a batch's decode steps use oneDNN" in caplog.text
