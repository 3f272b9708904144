"""Key/value caches for incremental decoding.

``DynamicCache`` keeps, per layer, one buffer per key and value that grows by doubling:
a decode step writes one position in place instead of concatenating the whole past, so
a step costs the same at position 10 and at position 1000 (apart from attention itself).
"""

from __future__ import annotations

import torch


class DynamicCache:
    """Past keys and values of every layer, shaped (batch, kv_heads, seq, head_dim).

    Has the reference library's interface: ``update``, ``get_seq_length``, ``crop``,
    ``reorder_cache``, indexing by layer and ``len``.
    """

    def __init__(self, config: object = None) -> None:
        # The reference takes the model config (to size sliding-window layers); every layer
        # here keeps its whole past and the mask applies any window, so it is not needed.
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._lengths: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = self._lengths[layer_idx]
        return self._keys[layer_idx][:, :, :length], self._values[layer_idx][:, :, :length]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx] if layer_idx < len(self._lengths) else 0

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1  # unbounded

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new positions for a layer; returns all keys and values seen so far."""
        new = key.shape[2]
        if layer_idx == len(self._keys):
            # First call for this layer: keep the tensors as they are; copy only once the cache grows.
            self._keys.append(key)
            self._values.append(value)
            self._lengths.append(new)
            return key, value
        length = self._lengths[layer_idx]
        needed = length + new
        if needed > self._keys[layer_idx].shape[2]:
            self._grow(layer_idx, needed)
        self._keys[layer_idx][:, :, length:needed] = key
        self._values[layer_idx][:, :, length:needed] = value
        self._lengths[layer_idx] = needed
        return self[layer_idx]

    def _grow(self, layer_idx: int, needed: int) -> None:
        old_keys, old_values = self._keys[layer_idx], self._values[layer_idx]
        capacity = max(needed, 2 * old_keys.shape[2], 64)
        length = self._lengths[layer_idx]
        batch, heads, _, dim = old_keys.shape
        keys = old_keys.new_empty(batch, heads, capacity, dim)
        values = old_values.new_empty(batch, heads, capacity, old_values.shape[-1])
        keys[:, :, :length] = old_keys[:, :, :length]
        values[:, :, :length] = old_values[:, :, :length]
        self._keys[layer_idx], self._values[layer_idx] = keys, values

    def crop(self, max_length: int) -> None:
        """Forget positions from ``max_length`` on (negative: drop that many from the end)."""
        for i, length in enumerate(self._lengths):
            self._lengths[i] = max(0, length + max_length) if max_length < 0 else min(length, max_length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch dimension (beam search)."""
        for i in range(len(self._keys)):
            index = beam_idx.to(self._keys[i].device)
            self._keys[i] = self._keys[i].index_select(0, index)
            self._values[i] = self._values[i].index_select(0, index)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for i in range(len(self._keys)):
            self._keys[i] = self._keys[i].repeat_interleave(repeats, dim=0)
            self._values[i] = self._values[i].repeat_interleave(repeats, dim=0)
