"""Key/value caches for incremental decoding.

Both caches keep, per layer, one preallocated buffer for keys and one for values, shaped
(batch, kv_heads, capacity, head_dim), and write each step's new positions in place. The
models attend to a view of the filled positions only, so no mask is needed to hide the
unused capacity.

* ``DynamicCache`` grows its buffers by doubling when they fill up (``generate`` reserves
  the whole length up front, so decoding never copies).
* ``StaticCache`` allocates ``max_cache_len`` positions on its first write and never grows;
  writes use ``index_copy_`` at the cache positions, as in gpt-fast. Overflowing it raises.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import GenerationError, UnsupportedArgumentError


class _LayerBuffers:
    """Per-layer storage shared by both caches: buffers, filled lengths and the reference's interface."""

    def __init__(self) -> None:
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._lengths: list[int] = []
        # Whether a layer's buffers were allocated here (not the caller's tensors), so may change in place.
        self._owned: list[bool] = []

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = self._lengths[layer_idx]
        return self._keys[layer_idx][:, :, :length], self._values[layer_idx][:, :, :length]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={len(self)}, seq_length={self.get_seq_length()})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """How many positions the layer holds (0 before the first write)."""
        return self._lengths[layer_idx] if layer_idx < len(self._lengths) else 0

    @property
    def batch_size(self) -> int:
        return self._keys[0].shape[0] if self._keys else -1

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` positions; a negative value drops that many from the end.

        The reference library's current ``crop`` takes only the negative form; both are accepted.
        """
        for i, length in enumerate(self._lengths):
            self._lengths[i] = max(0, length + max_length) if max_length < 0 else min(length, max_length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch dimension in place (beam search keeps the surviving beams' pasts)."""
        for i, length in enumerate(self._lengths):
            index = beam_idx.to(self._keys[i].device)
            for buffers in (self._keys, self._values):
                filled = buffers[i][:, :, :length]
                if self._owned[i]:
                    filled.copy_(filled.index_select(0, index))
                else:
                    buffers[i] = filled.index_select(0, index)
            self._owned[i] = True

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows ``indices``."""
        for i in range(len(self._keys)):
            self._keys[i] = self._keys[i][indices]
            self._values[i] = self._values[i][indices]
            self._owned[i] = True

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each batch row ``repeats`` times (one copy per beam)."""
        for i in range(len(self._keys)):
            self._keys[i] = self._keys[i].repeat_interleave(repeats, dim=0)
            self._values[i] = self._values[i].repeat_interleave(repeats, dim=0)
            self._owned[i] = True

    def reset(self) -> None:
        """Forget every position but keep the buffers, so the cache can serve a new prompt."""
        self._lengths = [0] * len(self._lengths)


class DynamicCache(_LayerBuffers):
    """Past keys and values of every layer, growing as needed.

    Has the reference library's interface: ``update``, ``get_seq_length``, ``crop``,
    ``reorder_cache``, ``reset``, indexing by layer and ``len``.
    """

    def __init__(self, config: object = None, *, capacity: int = 0) -> None:
        # The reference takes the model config (to size sliding-window layers); every layer
        # here keeps its whole past and the mask applies any window, so it is not needed.
        super().__init__()
        self._capacity = capacity  # positions to allocate on a layer's first write

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1  # unbounded

    def reserve(self, capacity: int) -> None:
        """Allocate room for ``capacity`` positions now (or at each layer's first write), so that
        appending up to that length never copies."""
        self._capacity = max(self._capacity, capacity)
        for i in range(len(self._keys)):
            if self._keys[i].shape[2] < capacity:
                self._grow(i, capacity)

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new positions for a layer; returns all keys and values seen so far."""
        new = key.shape[2]
        if layer_idx == len(self._keys):
            if self._capacity <= new:
                # No reservation: keep the tensors as they are; copy only once the cache grows.
                self._keys.append(key)
                self._values.append(value)
                self._lengths.append(new)
                self._owned.append(False)
                return key, value
            self._keys.append(key.new_empty(*key.shape[:2], self._capacity, key.shape[3]))
            self._values.append(value.new_empty(*value.shape[:2], self._capacity, value.shape[3]))
            self._lengths.append(0)
            self._owned.append(True)
        length = self._lengths[layer_idx]
        needed = length + new
        if needed > self._keys[layer_idx].shape[2] or not self._owned[layer_idx]:
            self._grow(layer_idx, needed)  # also the first write into a caller's tensor: never modify it
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
        self._owned[layer_idx] = True


class StaticCache(_LayerBuffers):
    """Keys and values of every layer in buffers of ``max_cache_len`` positions, allocated once.

    Arguments follow the reference library (``StaticCache(config=model.config, max_cache_len=n)``);
    ``config`` is accepted for compatibility and not needed: the buffers take their batch
    size, heads, dtype and device from the first write. Writes go through ``index_copy_`` at
    the cache positions; attention reads a view of the filled positions, so no mask hides
    the rest. The same cache serves several ``generate`` calls: pass it back to continue
    from what it holds, or call :meth:`reset` first to start over without reallocating.
    """

    def __init__(self, config: object = None, max_cache_len: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        if kwargs.pop("offloading", False):
            raise GenerationError("StaticCache: offloading is not supported; the cache stays on the model's device.")
        # Older versions of the reference took these; the first write tells all of them.
        for key in ("offload_only_non_sliding", "max_batch_size", "batch_size", "device", "dtype", "layer_device_map"):
            kwargs.pop(key, None)
        if kwargs:
            raise UnsupportedArgumentError(f"StaticCache() got unsupported arguments {sorted(kwargs)}.")
        if max_cache_len is None:
            max_cache_len = getattr(config, "max_position_embeddings", None)
        if not isinstance(max_cache_len, int) or isinstance(max_cache_len, bool) or max_cache_len <= 0:
            raise GenerationError(f"StaticCache needs a positive integer max_cache_len, got {max_cache_len!r}.")
        self.max_cache_len = max_cache_len
        self._positions: torch.Tensor | None = None

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.max_cache_len

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new positions for a layer in place; returns views of all positions filled so far."""
        if layer_idx == len(self._keys):
            batch, heads, _, dim = key.shape
            self._keys.append(key.new_zeros(batch, heads, self.max_cache_len, dim))
            self._values.append(value.new_zeros(batch, heads, self.max_cache_len, value.shape[3]))
            self._lengths.append(0)
            self._owned.append(True)
            if self._positions is None or self._positions.device != key.device:
                self._positions = torch.arange(self.max_cache_len, device=key.device)
        start = self._lengths[layer_idx]
        end = start + key.shape[2]
        if end > self.max_cache_len:
            raise GenerationError(
                f"StaticCache holds {self.max_cache_len} positions but layer {layer_idx} needs {end}; create it "
                "with a larger max_cache_len (prompt length + max_new_tokens)."
            )
        if key.shape[0] != self._keys[layer_idx].shape[0]:
            raise GenerationError(
                f"StaticCache was filled with batch size {self._keys[layer_idx].shape[0]} and now gets "
                f"{key.shape[0]}; a cache serves one batch size, so create a new one for this batch."
            )
        positions = self._positions[start:end]
        self._keys[layer_idx].index_copy_(2, positions, key)
        self._values[layer_idx].index_copy_(2, positions, value)
        self._lengths[layer_idx] = end
        return self[layer_idx]
