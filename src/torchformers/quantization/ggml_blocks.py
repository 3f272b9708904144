"""GGML tensor types and how each packs weights into blocks (no torch needed to read them).

A quantized GGUF tensor is a sequence of fixed-size blocks along each row: a block holds
``block_elements`` weights in ``block_bytes`` bytes, as a few scales (half floats) and the
packed integer codes. :data:`BLOCK_LAYOUTS` spells out each supported type's fields in
storage order; it is the one place that knows the bytes, so code that keeps weights packed
(matmul kernels, row permutations) reads the layout from here, as ``gguf.py``'s
dequantization does. How the bits inside a field map to weights is in ``gguf.py``'s unpackers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class GGMLType(NamedTuple):
    """A ggml tensor type: its id in GGUF files, name and block size."""

    type_id: int
    name: str
    block_elements: int
    block_bytes: int


# Every type id a GGUF file may name, so a file can be walked (and its unsupported tensors
# named) even where torchformers cannot unpack them.
GGML_TYPES: dict[int, GGMLType] = {t.type_id: t for t in (
    GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2), GGMLType(2, "Q4_0", 32, 18), GGMLType(3, "Q4_1", 32, 20),
    GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24), GGMLType(8, "Q8_0", 32, 34),
    GGMLType(9, "Q8_1", 32, 40), GGMLType(10, "Q2_K", 256, 84), GGMLType(11, "Q3_K", 256, 110),
    GGMLType(12, "Q4_K", 256, 144), GGMLType(13, "Q5_K", 256, 176), GGMLType(14, "Q6_K", 256, 210),
    GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66), GGMLType(17, "IQ2_XS", 256, 74),
    GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50), GGMLType(20, "IQ4_NL", 32, 18),
    GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82), GGMLType(23, "IQ4_XS", 256, 136),
    GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2), GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8),
    GGMLType(28, "F64", 1, 8), GGMLType(29, "IQ1_M", 256, 56), GGMLType(30, "BF16", 1, 2),
    GGMLType(34, "TQ1_0", 256, 54), GGMLType(35, "TQ2_0", 256, 66), GGMLType(39, "MXFP4", 32, 17),
    GGMLType(40, "NVFP4", 64, 36), GGMLType(41, "Q1_0", 128, 18),
)}

# Types stored as plain values (one element per "block"), by the torch dtype name they hold.
FLOAT_TYPES: dict[int, str] = {0: "float32", 1: "float16", 30: "bfloat16"}

# How a field's bytes are read: its element type and size.
FIELD_KINDS: dict[str, tuple[str, int]] = {"f16": ("float16", 2), "u8": ("uint8", 1), "i8": ("int8", 1)}


@dataclass(frozen=True)
class BlockField:
    """``count`` values of ``kind`` ("f16" scales, "u8"/"i8" codes and small scales) at a fixed place
    in every block."""

    name: str
    count: int
    kind: str

    @property
    def nbytes(self) -> int:
        return self.count * FIELD_KINDS[self.kind][1]


@dataclass(frozen=True)
class BlockLayout:
    """The fields of one quantized type's block, in storage order."""

    ggml_type: GGMLType
    fields: tuple[BlockField, ...]

    def __post_init__(self) -> None:
        if sum(f.nbytes for f in self.fields) != self.ggml_type.block_bytes:
            raise AssertionError(f"{self.ggml_type.name}: fields do not add up to the block size")

    def offsets(self) -> dict[str, int]:
        """{field name: byte offset in the block}."""
        offsets, start = {}, 0
        for field in self.fields:
            offsets[field.name] = start
            start += field.nbytes
        return offsets


def _layout(name: str, *fields: tuple[str, int, str]) -> BlockLayout:
    ggml_type = next(t for t in GGML_TYPES.values() if t.name == name)
    return BlockLayout(ggml_type, tuple(BlockField(*field) for field in fields))


# Layouts as ggml writes them (ggml-common.h). "qs" hold the low bits of the codes, "qh" the
# high bits; "d" scales the codes, "m"/"dmin" is the offset of the types with a minimum.
BLOCK_LAYOUTS: dict[int, BlockLayout] = {layout.ggml_type.type_id: layout for layout in (
    _layout("Q4_0", ("d", 1, "f16"), ("qs", 16, "u8")),
    _layout("Q4_1", ("d", 1, "f16"), ("m", 1, "f16"), ("qs", 16, "u8")),
    _layout("Q5_0", ("d", 1, "f16"), ("qh", 4, "u8"), ("qs", 16, "u8")),
    _layout("Q5_1", ("d", 1, "f16"), ("m", 1, "f16"), ("qh", 4, "u8"), ("qs", 16, "u8")),
    _layout("Q8_0", ("d", 1, "f16"), ("qs", 32, "i8")),
    # K types: a 256-weight super-block of 16 (or 8) sub-blocks, each with its own small scale.
    _layout("Q2_K", ("scales", 16, "u8"), ("qs", 64, "u8"), ("d", 1, "f16"), ("dmin", 1, "f16")),
    _layout("Q3_K", ("hmask", 32, "u8"), ("qs", 64, "u8"), ("scales", 12, "u8"), ("d", 1, "f16")),
    _layout("Q4_K", ("d", 1, "f16"), ("dmin", 1, "f16"), ("scales", 12, "u8"), ("qs", 128, "u8")),
    _layout("Q5_K", ("d", 1, "f16"), ("dmin", 1, "f16"), ("scales", 12, "u8"), ("qh", 32, "u8"),
            ("qs", 128, "u8")),
    _layout("Q6_K", ("ql", 128, "u8"), ("qh", 64, "u8"), ("scales", 16, "i8"), ("d", 1, "f16")),
)}

SUPPORTED_TYPES: tuple[str, ...] = tuple(
    GGML_TYPES[type_id].name for type_id in sorted({*FLOAT_TYPES, *BLOCK_LAYOUTS})
)


def is_supported(type_id: int) -> bool:
    """Whether torchformers can dequantize tensors of this type."""
    return type_id in FLOAT_TYPES or type_id in BLOCK_LAYOUTS


def type_name(type_id: int) -> str:
    """``"Q4_K"`` for 12; an id no ggml version defines reads ``"unknown type 99"``."""
    known = GGML_TYPES.get(type_id)
    return known.name if known else f"unknown type {type_id}"


def tensor_nbytes(type_id: int, shape: Sequence[int]) -> int:
    """Bytes a tensor of ``shape`` (torch order) takes in a file; rows must fill whole blocks."""
    ggml_type = GGML_TYPES[type_id]
    return math.prod(shape) // ggml_type.block_elements * ggml_type.block_bytes


def rows_fill_blocks(type_id: int, shape: Sequence[int]) -> bool:
    """Whether each row (the last dimension) is a whole number of blocks, as GGUF requires."""
    return not shape or shape[-1] % GGML_TYPES[type_id].block_elements == 0
