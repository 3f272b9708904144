"""A GGUF file as a Llama-family checkpoint: its tensors under our names, dequantized to float32,
or, for linear layers whose blocks an int8 or int4 layer can hold, kept quantized.

llama.cpp's converter reorders the rows of q and k in ``llama`` files (each head's two
rotary halves interleaved); they are put back here, exactly as the reference library does.
Rows of quantized blocks are independent, so the reordering applies to the packed bytes,
before dequantization (and to packed weights kept as they are).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..quantization.gguf import linear_layout_bits, linear_layout_tensors
from .checkpoint import Checkpoint
from .gguf import GGUFFile, GGUFTensorInfo, open_gguf, state_dict_key


def unpermute_rows(gguf_name: str, architecture: str, config: Any, rows: int) -> torch.Tensor | None:
    """The row order that undoes llama.cpp's q/k permutation, or None for a tensor it leaves alone.

    The converter stores rows ``[head, half, i]`` as ``[head, i, half]`` for ``llama`` files; the
    reference un-permutes q with the query head count and k with the key/value head count.
    """
    if architecture != "llama":
        return None
    if ".attn_q." in gguf_name:
        heads = config.num_attention_heads
    elif ".attn_k." in gguf_name:
        heads = config.num_key_value_heads
    else:
        return None
    return torch.arange(rows).view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)


@dataclass
class GGUFCheckpoint(Checkpoint):
    """The checkpoint ``from_pretrained`` loads when it is given a GGUF file (``files`` holds its path).

    ``kept_quantized`` ({module name: GGUF tensor name}) lists the linear layers whose weights
    are given as an int8 or int4 layer's tensors (``weight``, ``weight_scale`` and, for int4,
    ``weight_zero``) instead of a float ``weight``; the loader sets it once it has built those
    layers. A tensor may serve a second module: a tied output layer reads the embedding's blocks.
    Modules in ``float_scales`` (a quantized input embedding) get float32 scales, the others the
    bfloat16 ones the int8/int4 kernels read.
    """

    config: Any = None
    kept_quantized: dict[str, str] = field(default_factory=dict)
    float_scales: set[str] = field(default_factory=set)
    gguf: GGUFFile = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.gguf = open_gguf(self.files[0])
        # Fail before the model is built, naming the first tensor that cannot be read.
        for name, info in self.gguf.tensors.items():
            if state_dict_key(name) is not None:
                self.gguf.check_supported(info)

    def quantized_weights(self) -> dict[str, tuple[str, int]]:
        """{module name: (GGUF tensor name, 8 or 4)} for the matrices stored as Q8_0, Q4_0 or Q4_1,
        the types whose blocks an int8 or int4 layer holds as they are."""
        found = {}
        for name, info in self.gguf.tensors.items():
            key = state_dict_key(name)
            bits = linear_layout_bits(info.type_id)
            if key is not None and key.endswith(".weight") and len(info.shape) == 2 and bits is not None:
                found[key.rpartition(".")[0]] = (name, bits)
        return found

    def tensors(self) -> Iterator[tuple[str, torch.Tensor, str]]:
        path = self.files[0]
        for name, info in self.gguf.tensors.items():
            key = state_dict_key(name)
            if key is None:
                # Not ours (llama.cpp's rope_freqs, say): reported as unexpected, under its own name.
                yield name, torch.empty(0), path
                continue
            if self.kept_quantized.get(key.rpartition(".")[0]) == name:
                continue  # yielded below, as codes and scales
            yield key, self.gguf.tensor(name, self._row_order(info)), path
        for module, name in self.kept_quantized.items():
            info = self.gguf.tensors[name]
            raw = self.gguf.raw(name)
            rows = self._row_order(info)
            if rows is not None:
                raw = raw[rows]
            scale_dtype = torch.float32 if module in self.float_scales else torch.bfloat16
            for suffix, tensor in linear_layout_tensors(raw, info.type_id, scale_dtype).items():
                yield f"{module}.{suffix}", tensor, path

    def _row_order(self, info: GGUFTensorInfo) -> torch.Tensor | None:
        return unpermute_rows(info.name, self.gguf.architecture, self.config, info.shape[0])

    def first_float_dtype(self) -> torch.dtype:
        # The reference dequantizes into float32 whatever the file stores, so "auto" means float32.
        return torch.float32
