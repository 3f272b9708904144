"""GGUF tensors' blocks: dequantized to float32 with vectorized torch operations, or (Q8_0, Q4_0,
Q4_1) turned into the codes and scales of an int8 or int4 layer (:func:`linear_layout_tensors`).

The byte layout of each type's block is in ``ggml_blocks.py``; here each type's unpacker
turns a block's fields into integer codes, scales and offsets, and :func:`dequantize`
does the arithmetic for whole tensors at once on any device, bit for bit equal to the
``gguf`` package's NumPy dequantization (the products and sums happen in float32, in the
same order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .ggml_blocks import BLOCK_LAYOUTS, FIELD_KINDS, FLOAT_TYPES, BlockLayout
from .linear import pack_nibbles


def split_fields(layout: BlockLayout, blocks: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(n_blocks, block_bytes)`` uint8 -> {field name: ``(n_blocks, count)`` tensor of its kind}."""
    fields, start = {}, 0
    for field in layout.fields:
        raw = blocks[:, start:start + field.nbytes]
        dtype = getattr(torch, FIELD_KINDS[field.kind][0])
        # Half-float fields are copied out first: a strided byte slice cannot be re-viewed as 2-byte values.
        fields[field.name] = raw.contiguous().view(dtype) if dtype.itemsize > 1 else raw.view(dtype)
        start += field.nbytes
    return fields


# -- unpacking -------------------------------------------------------------------------------
# Each type's unpacker turns a chunk's fields into (codes, scale, offset): integer codes shaped
# (n_blocks, groups, group_size) and float32 (n_blocks, groups, 1) scale and offset, meaning
# weight = codes * scale - offset. Types without a minimum have no offset; Q4_1/Q5_1 add theirs,
# given here negated (x - (-m) is the same float operation as x + m).
Unpacked = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _bits(packed: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """``(..., k)`` uint8 -> ``(..., count, k)``: the ``count`` ``width``-bit codes of each byte, lowest first."""
    packed = packed.contiguous()
    parts = []
    for shift in range(0, width * count, width):
        part = packed >> shift if shift else packed
        parts.append(part & ((1 << width) - 1) if shift + width < 8 else part)
    return torch.stack(parts, dim=-2)


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """``(n, 16)`` -> ``(n, 1, 32)``: all low nibbles, then all high nibbles (the 32-weight block order)."""
    return _bits(packed, 4, 2).view(packed.shape[0], 1, -1)


def _high_bits(qh: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` little-endian 32-bit masks -> ``(n, 1, 32)``: bit i of the mask for weight i."""
    return _bits(qh, 1, 8).transpose(1, 2).reshape(qh.shape[0], 1, 32)


def _per_block(values: torch.Tensor) -> torch.Tensor:
    return values.float().view(-1, 1, 1)


def _q4_0(f: dict[str, torch.Tensor]) -> Unpacked:
    return _nibbles(f["qs"]).to(torch.int8) - 8, _per_block(f["d"]), None


def _q4_1(f: dict[str, torch.Tensor]) -> Unpacked:
    return _nibbles(f["qs"]), _per_block(f["d"]), -_per_block(f["m"])


def _five_bit_codes(f: dict[str, torch.Tensor]) -> torch.Tensor:
    return _nibbles(f["qs"]) | (_high_bits(f["qh"]) << 4)


def _q5_0(f: dict[str, torch.Tensor]) -> Unpacked:
    return _five_bit_codes(f).to(torch.int8) - 16, _per_block(f["d"]), None


def _q5_1(f: dict[str, torch.Tensor]) -> Unpacked:
    return _five_bit_codes(f), _per_block(f["d"]), -_per_block(f["m"])


def _q8_0(f: dict[str, torch.Tensor]) -> Unpacked:
    return f["qs"].unsqueeze(1), _per_block(f["d"]), None


def _q2_k(f: dict[str, torch.Tensor]) -> Unpacked:
    n, scales = f["qs"].shape[0], f["scales"]
    # 16 sub-blocks of 16: the low nibble of a sub-block's byte scales it, the high nibble is its minimum.
    step = (f["d"].float() * (scales & 0xF).float()).view(n, 16, 1)
    minimum = (f["dmin"].float() * (scales >> 4).float()).view(n, 16, 1)
    # Each 32-byte half holds four 2-bit planes of 32 weights.
    codes = _bits(f["qs"].view(n, 2, 32), 2, 4).view(n, 16, 16)
    return codes, step, minimum


def _q3_k(f: dict[str, torch.Tensor]) -> Unpacked:
    n, packed = f["qs"].shape[0], f["scales"]
    # 16 six-bit scales: low 4 bits from the nibbles of bytes 0-7, high 2 bits from the 2-bit fields of bytes 8-11.
    low = _bits(packed[:, :8], 4, 2).view(n, 16)
    high = _bits(packed[:, 8:], 2, 4).view(n, 16)
    scales = (low | (high << 4)).to(torch.int8) - 32
    step = (f["d"].float() * scales.float()).view(n, 16, 1)
    low_codes = _bits(f["qs"].view(n, 2, 32), 2, 4).view(n, 16, 16)
    # A clear bit in hmask subtracts 4 (the codes are 3-bit signed, -4..3).
    high_clear = (_bits(f["hmask"], 1, 8).view(n, 16, 16) ^ 1) << 2
    return low_codes.to(torch.int8) - high_clear.to(torch.int8), step, None


def _k_scales_and_minimums(f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12 scale bytes -> the eight sub-blocks' steps and minimums, ``(n, 8, 1)`` each."""
    packed = f["scales"]
    scale_low, min_low, shared = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([scale_low & 0x3F, (shared & 0x0F) | ((scale_low >> 2) & 0x30)], dim=1)
    minimums = torch.cat([min_low & 0x3F, (shared >> 4) | ((min_low >> 2) & 0x30)], dim=1)
    step = (f["d"].float() * scales.float()).unsqueeze(-1)
    return step, (f["dmin"].float() * minimums.float()).unsqueeze(-1)


def _k_nibble_codes(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> ``(n, 8, 32)``: each 32-byte chunk gives two sub-blocks, low nibbles first."""
    return _bits(qs.view(qs.shape[0], 4, 32), 4, 2).view(qs.shape[0], 8, 32)


def _q4_k(f: dict[str, torch.Tensor]) -> Unpacked:
    return _k_nibble_codes(f["qs"]), *_k_scales_and_minimums(f)


def _q5_k(f: dict[str, torch.Tensor]) -> Unpacked:
    high = _bits(f["qh"], 1, 8)  # bit j of byte i belongs to weight i of sub-block j
    return _k_nibble_codes(f["qs"]) | (high << 4), *_k_scales_and_minimums(f)


def _q6_k(f: dict[str, torch.Tensor]) -> Unpacked:
    n = f["ql"].shape[0]
    step = (f["d"].float() * f["scales"].float()).view(n, 16, 1)
    # Two halves of 128 weights: low 4 bits from 64 bytes (low nibbles, then high), high 2 bits from 32 bytes.
    low = _bits(f["ql"].view(n, 2, 64), 4, 2).view(n, 8, 32)
    high = _bits(f["qh"].view(n, 2, 32), 2, 4).view(n, 8, 32)
    codes = (low | (high << 4)).to(torch.int8) - 32
    return codes.view(n, 16, 16), step, None


UNPACKERS: dict[int, Callable[[dict[str, torch.Tensor]], Unpacked]] = {
    type_id: {"Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q2_K": _q2_k,
              "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}[layout.ggml_type.name]
    for type_id, layout in BLOCK_LAYOUTS.items()
}
# Blocks unpacked per step: bounds the temporaries (a few bytes per weight) on large tensors.
_CHUNK_ELEMENTS = 1 << 22


def dequantize(raw: torch.Tensor, type_id: int, shape: Sequence[int]) -> torch.Tensor:
    """Unpack a tensor's stored bytes (uint8, any shape) into a float32 tensor of ``shape``.

    ``type_id`` must be one of ``ggml_blocks.SUPPORTED_TYPES``; callers check and name the tensor.
    Runs on the device ``raw`` is on.
    """
    raw = raw.reshape(-1)
    if type_id in FLOAT_TYPES:
        return raw.view(getattr(torch, FLOAT_TYPES[type_id])).float().view(tuple(shape))
    layout = BLOCK_LAYOUTS[type_id]
    blocks = raw.view(-1, layout.ggml_type.block_bytes)
    out = torch.empty(blocks.shape[0], layout.ggml_type.block_elements, dtype=torch.float32, device=raw.device)
    step = max(1, _CHUNK_ELEMENTS // layout.ggml_type.block_elements)
    for start in range(0, blocks.shape[0], step):
        codes, scale, offset = UNPACKERS[type_id](split_fields(layout, blocks[start:start + step]))
        # In place, in the reference's order: codes * scale, then minus the offset.
        target = out[start:start + step].view(codes.shape)
        target.copy_(codes)
        target.mul_(scale)
        if offset is not None:
            target.sub_(offset)
    return out.view(tuple(shape))


# -- keeping blocks quantized -----------------------------------------------------------------
# GGUF types whose blocks are the codes and scales of a weight-only layer in groups of 32:
# {type name: (bits, lowest code as the unpacker gives it)}.
LINEAR_LAYOUT_TYPES: dict[str, tuple[int, int]] = {"Q8_0": (8, -128), "Q4_0": (4, -8), "Q4_1": (4, 0)}
LINEAR_LAYOUT_GROUP_SIZE = 32


def linear_layout_bits(type_id: int) -> int | None:
    """8 or 4 for a type whose blocks load as an int8 or int4 layer's codes, None for the others."""
    layout = BLOCK_LAYOUTS.get(type_id)
    kept = LINEAR_LAYOUT_TYPES.get(layout.ggml_type.name) if layout is not None else None
    return kept[0] if kept else None


def linear_layout_tensors(raw: torch.Tensor, type_id: int, scale_dtype: torch.dtype = torch.bfloat16
                          ) -> dict[str, torch.Tensor]:
    """A Q8_0, Q4_0 or Q4_1 weight's stored bytes (one row per output feature) as the checkpoint
    tensors of an ``Int8Linear`` or ``Int4Linear`` with groups of 32 (see ``linear.py``), or, with
    ``scale_dtype=torch.float32``, of a ``QuantizedEmbedding`` (whose float32 scales are exact).

    The codes are the file's codes. Scales (and int4 zero points) are bfloat16, the dtype the
    kernels read, so a half-float ``d`` loses its 3 lowest mantissa bits: scale and zero point
    are rounded to the nearest bfloat16 (a relative error of at most 2**-8), which moves a
    weight by at most 2**-8 * (8 * d + |zero|) in int4 (zero is ``m + 8 * d`` for Q4_1, 0 for
    Q4_0) and 2**-8 * |code| * d in int8. Where bfloat16 holds ``d`` and the zero point
    exactly, the weights are exactly the file's.
    """
    layout = BLOCK_LAYOUTS[type_id]
    bits, lowest = LINEAR_LAYOUT_TYPES[layout.ggml_type.name]
    rows = raw.shape[0]
    codes, scale, offset = UNPACKERS[type_id](split_fields(layout, raw.reshape(-1, layout.ggml_type.block_bytes)))
    scale = scale.view(rows, -1)
    tensors = {"weight_scale": scale.to(scale_dtype)}
    if bits == 8:
        tensors["weight"] = codes.reshape(rows, -1)
        return tensors
    # The int4 layer reads (code - 8) * scale + zero with codes in [0, 15]: shift the file's codes
    # there and move what the shift and the file's offset add into the zero point.
    stored_codes = (codes.reshape(rows, -1).to(torch.int16) - lowest).to(torch.uint8)
    zero = (lowest + 8) * scale
    if offset is not None:
        zero = zero - offset.view(rows, -1)
    tensors["weight"] = pack_nibbles(stored_codes)
    tensors["weight_zero"] = zero.to(scale_dtype)
    return tensors
