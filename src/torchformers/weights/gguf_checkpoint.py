"""A GGUF file as a Llama-family checkpoint: its tensors under our names, dequantized to float32.

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

from .checkpoint import Checkpoint
from .gguf import GGUFFile, open_gguf, state_dict_key


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
    """The checkpoint ``from_pretrained`` loads when it is given a GGUF file (``files`` holds its path)."""

    config: Any = None
    gguf: GGUFFile = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.gguf = open_gguf(self.files[0])
        # Fail before the model is built, naming the first tensor that cannot be read.
        for name, info in self.gguf.tensors.items():
            if state_dict_key(name) is not None:
                self.gguf.check_supported(info)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor, str]]:
        architecture = self.gguf.architecture
        for name, info in self.gguf.tensors.items():
            key = state_dict_key(name)
            if key is None:
                # Not ours (llama.cpp's rope_freqs, say): reported as unexpected, under its own name.
                yield name, torch.empty(0), self.files[0]
                continue
            rows = unpermute_rows(name, architecture, self.config, info.shape[0])
            yield key, self.gguf.tensor(name, rows), self.files[0]

    def first_float_dtype(self) -> torch.dtype:
        # The reference dequantizes into float32 whatever the file stores, so "auto" means float32.
        return torch.float32
