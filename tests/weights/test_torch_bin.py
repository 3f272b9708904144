"""``pytorch_model.bin`` files are read with weights_only=True."""

from __future__ import annotations

import collections

import pytest
import torch

from torchformers.errors import CheckpointError
from torchformers.weights.torch_bin import load_torch_bin


def state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.tensor([1, 2], dtype=torch.int64)}


def assert_state(loaded: dict[str, torch.Tensor]) -> None:
    expected = state()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor) and loaded[key].dtype == tensor.dtype


@pytest.mark.parametrize("zip_format", [True, False])
def test_loads_a_state_dict(tmp_path, zip_format):
    torch.save(state(), tmp_path / "w.bin", _use_new_zipfile_serialization=zip_format)
    assert_state(load_torch_bin(tmp_path / "w.bin"))


def test_loads_an_ordered_dict_and_a_wrapped_state_dict(tmp_path):
    torch.save(collections.OrderedDict(state()), tmp_path / "ordered.bin")
    assert_state(load_torch_bin(tmp_path / "ordered.bin"))
    torch.save({"state_dict": state()}, tmp_path / "wrapped.bin")
    assert_state(load_torch_bin(tmp_path / "wrapped.bin"))


class Payload:
    pass


def test_refuses_arbitrary_objects(tmp_path):
    torch.save({**state(), "extra": Payload()}, tmp_path / "w.bin")
    with pytest.raises(CheckpointError) as caught:
        load_torch_bin(tmp_path / "w.bin")
    message = str(caught.value)
    assert str(tmp_path / "w.bin") in message and "test_torch_bin.Payload" in message and "weights_only" in message


@pytest.mark.parametrize(("content", "fragment"), [([1, 2, 3], "holds a list"), ({"n": 3}, "entry 'n' is a int")])
def test_refuses_things_that_are_not_state_dicts(tmp_path, content, fragment):
    torch.save(content, tmp_path / "w.bin")
    with pytest.raises(CheckpointError, match=fragment):
        load_torch_bin(tmp_path / "w.bin")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_files(tmp_path, damage):
    path = tmp_path / "w.bin"
    torch.save({"big": torch.zeros(5000)}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as caught:
        load_torch_bin(path)
    assert str(path) in str(caught.value) and "re-download" in str(caught.value)
