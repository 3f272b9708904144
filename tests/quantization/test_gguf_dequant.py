"""GGUF dequantization: bit-for-bit equal to the `gguf` package's NumPy reference for every type."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf_writers import K_HALF_OFFSETS, K_TYPES, random_k_blocks

from torchformers.quantization import gguf as gguf_dequant
from torchformers.quantization.ggml_blocks import BLOCK_LAYOUTS, GGML_TYPES, SUPPORTED_TYPES
from torchformers.quantization.gguf import dequantize

SIMPLE_TYPES = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device on this machine"))]


def assert_bitwise_equal(ours: torch.Tensor, expected: np.ndarray) -> None:
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
    assert np.array_equal(ours.cpu().numpy().view(np.uint32), expected.astype(np.float32).view(np.uint32))


def quantized_rows(qtype: Q, rows: int, columns: int, seed: int) -> np.ndarray:
    """Stored bytes of a ``(rows, columns)`` tensor: quantized by gguf where it can, random K blocks otherwise."""
    if qtype in K_TYPES:
        return random_k_blocks(qtype, rows * columns // 256, seed).reshape(rows, -1)
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, columns)).astype(np.float32)
    values[0, :7] = [0.0, -0.0, 1e-8, -65504.0, 60000.0, 1.0, -1.0]  # zeros, tiny values, the ends of half range
    values[1] = 0.0  # an all-zero block has a zero scale
    stored = gguf.quants.quantize(values, qtype)
    return np.ascontiguousarray(stored).view(np.uint8).reshape(rows, -1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("qtype", SIMPLE_TYPES + K_TYPES, ids=lambda q: q.name)
def test_dequantize_equals_the_gguf_package(qtype, device):
    columns = 512
    for seed, rows in enumerate((2, 3, 17)):
        stored = quantized_rows(qtype, rows, columns, seed)
        expected = gguf.quants.dequantize(stored if qtype not in (Q.F32, Q.F16) else stored.view(
            np.float32 if qtype == Q.F32 else np.float16), qtype)
        ours = dequantize(torch.from_numpy(stored).to(device), qtype.value, (rows, columns))
        assert ours.device.type == device
        assert_bitwise_equal(ours, expected.reshape(rows, columns))


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q6_K], ids=lambda q: q.name)
def test_dequantize_in_several_chunks(qtype, monkeypatch):
    monkeypatch.setattr(gguf_dequant, "_CHUNK_ELEMENTS", 1000)  # a few blocks per step, and a ragged last step
    stored = quantized_rows(qtype, 9, 512, seed=5)
    expected = gguf.quants.dequantize(stored, qtype)
    assert_bitwise_equal(dequantize(torch.from_numpy(stored), qtype.value, (9, 512)), expected)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda q: q.name)
def test_every_byte_value_in_every_code_position(qtype):
    # Block i holds the byte i everywhere but in its (finite) half-float scales: every bit field at every value.
    random_blocks = random_k_blocks(qtype, 256, seed=9)
    stored = np.arange(256, dtype=np.uint8).reshape(256, 1).repeat(random_blocks.shape[1], axis=1)
    for offset in K_HALF_OFFSETS[qtype]:
        stored[:, offset:offset + 2] = random_blocks[:, offset:offset + 2]
    expected = gguf.quants.dequantize(stored, qtype)
    assert_bitwise_equal(dequantize(torch.from_numpy(stored), qtype.value, (256, 256)), expected)


def test_type_table_agrees_with_the_gguf_package():
    for qtype in Q:
        ours = GGML_TYPES[qtype.value]
        assert ours.name == qtype.name
        assert (ours.block_elements, ours.block_bytes) == gguf.GGML_QUANT_SIZES[qtype], qtype.name
    assert set(SUPPORTED_TYPES) == {q.name for q in SIMPLE_TYPES + K_TYPES}
    for layout in BLOCK_LAYOUTS.values():
        assert sum(field.nbytes for field in layout.fields) == layout.ggml_type.block_bytes
    for qtype, half_offsets in K_HALF_OFFSETS.items():
        offsets = BLOCK_LAYOUTS[qtype.value].offsets()
        assert tuple(offsets[name] for name in ("d", "dmin") if name in offsets) == half_offsets, qtype.name
