"""An input embedding kept as int8 or int4 codes: a lookup dequantizes only the rows it reads.

A GGUF file loaded with ``dequantize=False`` keeps its token embedding this way when the file
stores it as Q8_0, Q4_0 or Q4_1: SmolLM2-135M's 49152 x 576 table takes 30 MB instead of
113 MB in float32. The codes use the quantized linear layers' portable layout (``weight``:
int8 codes, or uint8 with two int4 codes per byte; ``weight_scale`` and, for int4,
``weight_zero`` per group of ``group_size`` features). Scales stay in the model's float dtype
rather than bfloat16: no kernel reads them here, and float32 holds a GGUF half-float scale
exactly, so the rows equal the dequantized file's to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedArgumentError
from .linear import check_group_size, dequantize_weight, unpack_nibbles


class QuantizedEmbedding(nn.Module):
    """An embedding table of int8 (``bits=8``) or int4 (``bits=4``) codes with a scale (and, for
    int4, a zero point) per group of ``group_size`` features; looked-up rows come back in
    ``dtype``. It holds no parameters: the table is frozen (resize or train a float embedding)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, group_size: int,
                 padding_idx: int | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise UnsupportedArgumentError(f"QuantizedEmbedding: bits must be 8 or 4, got {bits!r}.")
        check_group_size("QuantizedEmbedding", embedding_dim, group_size)
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.bits = bits
        self.group_size = group_size
        self.padding_idx = padding_idx
        groups = embedding_dim // group_size
        if bits == 8:
            codes = torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device)
        else:
            codes = torch.zeros(num_embeddings, embedding_dim // 2, dtype=torch.uint8, device=device)
        self.register_buffer("weight", codes)
        self.register_buffer("weight_scale", torch.ones(num_embeddings, groups, dtype=dtype, device=device))
        if bits == 4:
            self.register_buffer("weight_zero", torch.zeros(num_embeddings, groups, dtype=dtype, device=device))

    @property
    def dtype(self) -> torch.dtype:
        """The rows' dtype: the scales', which follow the model's dtype casts (the codes do not)."""
        return self.weight_scale.dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        codes = self.weight[flat]
        if self.bits == 4:
            codes = unpack_nibbles(codes)
        zero = self.weight_zero[flat] if self.bits == 4 else None
        rows = dequantize_weight(codes, self.weight_scale[flat], zero, self.dtype)
        return rows.view(*input_ids.shape, self.embedding_dim)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The whole float table (num_embeddings, embedding_dim)."""
        codes = unpack_nibbles(self.weight) if self.bits == 4 else self.weight
        zero = self.weight_zero if self.bits == 4 else None
        return dequantize_weight(codes, self.weight_scale, zero, dtype or self.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}, "
                f"dtype={self.dtype}")
