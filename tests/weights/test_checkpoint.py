"""Finding a model's weight files: single, sharded, variants and formats."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers.modeling_utils import _add_variant

from torchformers.errors import CheckpointError, FileResolutionError
from torchformers.weights.checkpoint import Checkpoint, resolve_checkpoint, with_variant

NAMES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", [None, "fp16", "ema"])
def test_variant_names_match_the_reference(name, variant):
    assert with_variant(name, variant) == _add_variant(name, variant)


def test_resolution_order_and_use_safetensors(tmp_path):
    save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")

    assert resolve_checkpoint(tmp_path).files == [str(tmp_path / "model.safetensors")]
    assert resolve_checkpoint(tmp_path, use_safetensors=False).files == [str(tmp_path / "pytorch_model.bin")]
    with pytest.raises(FileResolutionError, match="model.fp16.safetensors"):
        resolve_checkpoint(tmp_path, variant="fp16")


def test_index_lists_each_shard_once_in_order(tmp_path):
    save_file({"a": torch.ones(1), "b": torch.ones(1)}, tmp_path / "s1.safetensors")
    save_file({"c": torch.full((2,), 2.0)}, tmp_path / "s2.safetensors")
    index = {"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors", "b": "s1.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    checkpoint = resolve_checkpoint(tmp_path)
    assert checkpoint.index_file == str(tmp_path / "model.safetensors.index.json")
    assert checkpoint.files == [str(tmp_path / "s1.safetensors"), str(tmp_path / "s2.safetensors")]
    assert checkpoint.is_safetensors
    tensors = {name: tensor for name, tensor, _ in checkpoint.tensors()}
    assert sorted(tensors) == ["a", "b", "c"] and torch.equal(tensors["c"], torch.full((2,), 2.0))


def test_first_float_dtype(tmp_path):
    save_file({"ids": torch.zeros(2, dtype=torch.int64), "w": torch.zeros(2, dtype=torch.bfloat16)},
              tmp_path / "a.safetensors")
    torch.save({"ids": torch.zeros(2, dtype=torch.int64), "w": torch.zeros(2, dtype=torch.float16)},
               tmp_path / "b.bin")
    save_file({"ids": torch.zeros(2, dtype=torch.int64)}, tmp_path / "c.safetensors")
    assert Checkpoint([str(tmp_path / "a.safetensors")]).first_float_dtype() is torch.bfloat16
    assert Checkpoint([str(tmp_path / "b.bin")]).first_float_dtype() is torch.float16
    assert Checkpoint([str(tmp_path / "c.safetensors")]).first_float_dtype() is None


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ({"metadata": {}}, "weight_map"),
        ({"weight_map": {}}, "empty or invalid 'weight_map'"),
        ({"weight_map": ["a"]}, "empty or invalid 'weight_map'"),
        ({"weight_map": {"a": "/etc/passwd"}}, "'a'"),
        ({"weight_map": {"a": 3}}, "'a'"),
    ],
)
def test_invalid_indexes(tmp_path, index, fragment):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(tmp_path)
    assert str(tmp_path / "model.safetensors.index.json") in str(caught.value) and fragment in str(caught.value)
