"""Our memory-mapped safetensors reader and the atomic writer."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from torchformers.errors import CheckpointError
from torchformers.weights.safetensors import DTYPES, SafetensorsFile, save_safetensors


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    floats = torch.randn(3, 5, generator=generator)
    tensors = {f"float.{dtype}": floats.to(dtype) for dtype in (torch.float64, torch.float32, torch.float16,
                                                                torch.bfloat16)}
    tensors.update({
        "int64": torch.arange(-3, 9, dtype=torch.int64).reshape(2, 6),
        "int32": torch.arange(7, dtype=torch.int32),
        "int16": torch.tensor([-1, 2], dtype=torch.int16),
        "int8": torch.tensor([-128, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "fp8": floats.to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    })
    return tensors


def write_raw(path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def test_reader_matches_the_safetensors_package(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "pt", "note": "hi"})

    reader = SafetensorsFile(tmp_path / "t.safetensors")
    expected = load_file(tmp_path / "t.safetensors")

    assert sorted(reader.keys()) == sorted(expected)
    assert reader.metadata == {"format": "pt", "note": "hi"}
    for name, tensor in expected.items():
        ours = reader.tensor(name)
        assert ours.dtype == tensor.dtype == reader.dtype(name), name
        assert tuple(ours.shape) == tuple(tensor.shape) == reader.shape(name), name
        assert torch.equal(ours.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_reader_tensors_are_writable_private_copies_on_write(tmp_path):
    save_file({"w": torch.ones(4)}, tmp_path / "t.safetensors")
    tensor = SafetensorsFile(tmp_path / "t.safetensors").tensor("w")
    tensor.mul_(3)  # a private mapping: the model may train in place
    assert torch.equal(load_file(tmp_path / "t.safetensors")["w"], torch.ones(4))


def test_dtype_table_covers_the_format_names():
    assert DTYPES["BF16"] is torch.bfloat16 and DTYPES["F8_E5M2"] is torch.float8_e5m2
    assert all(isinstance(d, torch.dtype) for d in DTYPES.values())


def test_save_safetensors_round_trips_and_is_readable_by_the_package(tmp_path):
    tensors = sample_tensors()
    tensors["non_contiguous"] = torch.arange(12.0).reshape(3, 4).t()
    save_safetensors(tensors, tmp_path / "out.safetensors", metadata={"origin": "test"})

    loaded = load_file(tmp_path / "out.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name].float(), tensor.float()), name
    with safe_open(tmp_path / "out.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt", "origin": "test"}
    assert os.listdir(tmp_path) == ["out.safetensors"]
    assert oct(os.stat(tmp_path / "out.safetensors").st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "truncated (0 bytes)"),
        (b"\x05\x00\x00", "truncated (3 bytes)"),
        (struct.pack("<Q", 10**6) + b"{}", "header of 1000000 bytes"),
        (struct.pack("<Q", 4) + b"{{{{", "corrupt header"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "corrupt header"),
        (struct.pack("<Q", 2) + b"[]", "corrupt header"),
    ],
)
def test_damaged_files_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        SafetensorsFile(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "data", "fragment"),
    [
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, b"\x00" * 8, "ends at byte 16"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}, b"\x00" * 16, "has 12 bytes for shape [4]"),
        ({"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}, b"\x00" * 16, "unknown dtype"),
        ({"dtype": "F32", "shape": "four", "data_offsets": [0, 16]}, b"\x00" * 16, "corrupt"),
        ({"dtype": "F32", "shape": [4]}, b"\x00" * 16, "corrupt"),
    ],
)
def test_bad_header_entries_name_the_file_and_tensor(tmp_path, entry, data, fragment):
    path = tmp_path / "bad.safetensors"
    write_raw(path, {"layer.weight": entry}, data)
    with pytest.raises(CheckpointError) as caught:
        SafetensorsFile(path)
    message = str(caught.value)
    assert str(path) in message and "'layer.weight'" in message and fragment in message
