"""KV caches: writes, views, growth, reordering, cropping; the static cache's fixed capacity."""

from __future__ import annotations

import pytest
import torch

from torchformers import DynamicCache, StaticCache
from torchformers.errors import GenerationError, UnsupportedArgumentError


def states(batch: int = 2, length: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=generator), torch.randn(batch, 2, length, 4, generator=generator)


@pytest.mark.parametrize("make", [DynamicCache, lambda: DynamicCache(capacity=16), lambda: StaticCache(max_cache_len=16)])
def test_appends_and_returns_everything_seen(make):
    cache = make()
    key1, value1 = states(length=3, seed=1)
    key2, value2 = states(length=1, seed=2)
    for layer in range(2):
        keys, values = cache.update(key1, value1, layer)
        assert torch.equal(keys, key1) and torch.equal(values, value1)
    keys, values = cache.update(key2, value2, 0)
    assert torch.equal(keys, torch.cat([key1, key2], dim=2)) and torch.equal(values, torch.cat([value1, value2], dim=2))
    assert cache.get_seq_length(0) == 4 and cache.get_seq_length(1) == 3 and len(cache) == 2
    assert cache.batch_size == 2 and torch.equal(cache[1][0], key1)


def test_dynamic_cache_grows_without_losing_the_past():
    cache = DynamicCache()
    chunks = [states(length=n, seed=n) for n in (5, 60, 1, 70)]
    for key, value in chunks:
        keys, _ = cache.update(key, value, 0)
    assert torch.equal(keys, torch.cat([key for key, _ in chunks], dim=2))
    assert cache.get_max_cache_shape() == -1
    reserved = DynamicCache(capacity=10)
    reserved.update(*states(length=4), 0)
    storage = reserved._keys[0].data_ptr()
    for seed in range(6):
        reserved.update(*states(length=1, seed=seed), 0)
    assert reserved._keys[0].data_ptr() == storage  # appending within the reservation never copies


def test_static_cache_writes_in_place_and_refuses_overflow():
    cache = StaticCache(max_cache_len=6)
    key, value = states(length=4)
    cache.update(key, value, 0)
    storage = cache._keys[0].data_ptr()
    cache.update(*states(length=2, seed=3), 0)
    assert cache._keys[0].data_ptr() == storage and cache.get_max_cache_shape() == 6
    with pytest.raises(GenerationError, match="max_cache_len"):
        cache.update(*states(length=1), 0)
    cache.reset()
    assert cache.get_seq_length() == 0
    keys, _ = cache.update(key, value, 0)
    assert torch.equal(keys, key) and cache._keys[0].data_ptr() == storage
    with pytest.raises(GenerationError, match="batch size"):
        cache.update(*states(batch=3, length=1), 0)
    with pytest.raises(GenerationError, match="max_cache_len"):
        StaticCache(max_cache_len=0)
    with pytest.raises(GenerationError, match="offloading"):
        StaticCache(max_cache_len=4, offloading=True)
    with pytest.raises(UnsupportedArgumentError, match="sliding"):
        StaticCache(max_cache_len=4, sliding=True)
    assert StaticCache(max_cache_len=4, max_batch_size=2, device="cpu").max_cache_len == 4  # older spellings


@pytest.mark.parametrize("make", [DynamicCache, lambda: StaticCache(max_cache_len=8)])
def test_crop_and_reorder(make):
    cache = make()
    key, value = states(batch=3, length=5)
    cache.update(key, value, 0)
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    keys, values = cache[0]
    assert torch.equal(keys, key[[2, 2, 0]]) and torch.equal(values, value[[2, 2, 0]])
    cache.crop(-2)
    assert cache.get_seq_length() == 3
    cache.crop(2)
    assert torch.equal(cache[0][0], key[[2, 2, 0], :, :2])
    next_key, next_value = states(batch=3, length=1, seed=9)
    keys, _ = cache.update(next_key, next_value, 0)
    assert torch.equal(keys[:, :, 2:], next_key)


def test_batch_repeat_and_select():
    cache = DynamicCache()
    key, value = states(batch=2, length=2)
    cache.update(key, value, 0)
    cache.batch_repeat_interleave(2)
    assert torch.equal(cache[0][0], key.repeat_interleave(2, dim=0))
    cache.batch_select_indices(torch.tensor([0, 3]))
    assert torch.equal(cache[0][0], key[[0, 1]])
