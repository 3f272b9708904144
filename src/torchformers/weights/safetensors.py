"""The safetensors format, read through our own memory-mapped reader.

The file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw bytes. Reading it ourselves lets every tensor be
a zero-copy view of one private memory map (loading costs page faults, not copies), and
lets a truncated or corrupt file be reported precisely before any tensor is touched.
Writing goes through the ``safetensors`` package, into a temporary file renamed into place.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from typing import Any

import torch

from ..errors import CheckpointError, describe_path
from ..files import atomic_destination

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFile:
    """A safetensors file opened for reading; tensors are views of a private memory map."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        where = describe_path(self.path)
        size = os.path.getsize(self.path)
        if size < 8:
            raise CheckpointError(f"{where} is truncated ({size} bytes); re-download or re-save it.")
        with open(self.path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length > min(size - 8, _MAX_HEADER_BYTES):
                raise CheckpointError(
                    f"{where} is truncated or not a safetensors file (header of {header_length} bytes in a "
                    f"{size}-byte file); re-download or re-save it."
                )
            try:
                header = json.loads(handle.read(header_length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise CheckpointError(f"{where} has a corrupt header; re-download or re-save it.") from None
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        if not isinstance(header, dict):
            raise CheckpointError(f"{where} has a corrupt header; re-download or re-save it.")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_length
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self._entries[name] = self._check_entry(name, info, size - self._data_start)

    def _check_entry(self, name: str, info: Any, data_size: int) -> tuple[torch.dtype, tuple[int, ...], int, int]:
        where = describe_path(self.path)
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{where}: the header entry of {name!r} is corrupt or of an unknown dtype.") from None
        if end > data_size:
            raise CheckpointError(
                f"{where} is truncated: tensor {name!r} ends at byte {end} of the data but the file holds "
                f"{data_size}; re-download or re-save it."
            )
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected or begin < 0:
            raise CheckpointError(
                f"{where}: tensor {name!r} has {end - begin} bytes for shape {list(shape)} "
                f"({expected} expected); the file is corrupt."
            )
        return dtype, shape, begin, end

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name][0]

    def tensor(self, name: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[name]
        if begin == end:
            return torch.empty(shape, dtype=dtype)
        raw = torch.frombuffer(self._map, dtype=torch.uint8, count=end - begin, offset=self._data_start + begin)
        return raw.view(dtype).reshape(shape)


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to ``path`` atomically (tensors must not share memory)."""
    from safetensors.torch import save_file

    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_destination(path) as temporary:
        save_file(contiguous, temporary, metadata={"format": "pt", **(metadata or {})})
