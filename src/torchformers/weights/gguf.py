"""GGUF files (llama.cpp's format): our own memory-mapped reader, the config their metadata
describes, and the mapping of their tensor names to ours.

A GGUF file is a little-endian header (magic ``GGUF``, version, tensor and metadata
counts), typed metadata key/value pairs, a table of tensor infos (name, dimensions, ggml
type, offset), then the tensor data, aligned to ``general.alignment`` bytes. The file is
memory-mapped; a tensor is a view of the map until it is dequantized, so reading the
metadata costs nothing for the tensors. This module imports neither torch nor numpy:
tokenizers read GGUF metadata without them (torch comes in when a tensor is asked for).

Only the Llama family (``llama``, ``mistral``, ``qwen2``, ``qwen3``) is mapped, as the
reference library does it: the same config keys and the same tensor names. Loading the
tensors into a model (with the q/k row order llama.cpp changes) is ``gguf_checkpoint.py``.
"""

from __future__ import annotations

import copy
import functools
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, ConfigError, FileResolutionError, UnknownModelTypeError, describe_path
from ..hub import resolve_file
from ..quantization.ggml_blocks import (
    GGML_TYPES,
    SUPPORTED_TYPES,
    is_supported,
    rows_fill_blocks,
    tensor_nbytes,
    type_name,
)

if TYPE_CHECKING:
    import torch

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
# Version 1 counted with 32-bit integers; llama.cpp has written v2 (2023) and v3 (big-endian aware) since.
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 8

# Metadata value type ids -> struct format of one value (8 = string and 9 = array are variable-length).
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


class _Truncated(Exception):
    """The header ran past the end of the file."""


class _Cursor:
    """Reads little-endian values from the mapped header, checking every read against the file's end."""

    def __init__(self, buffer: memoryview, position: int = 0) -> None:
        self.buffer = buffer
        self.position = position
        self.size = len(buffer)

    def take(self, count: int) -> int:
        start = self.position
        if count < 0 or start + count > self.size:
            raise _Truncated
        self.position = start + count
        return start

    def scalar(self, value_type: int) -> Any:
        fmt = "<" + _SCALAR_FORMATS[value_type]
        return struct.unpack_from(fmt, self.buffer, self.take(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return self.scalar(4)

    def u64(self) -> int:
        return self.scalar(10)

    def string(self) -> str:
        length = self.u64()
        start = self.take(length)
        return str(self.buffer[start:start + length], "utf-8", "replace")

    def strings(self, count: int) -> list[str]:
        # Vocabularies hold 10^5 strings: one tight loop, not a method call per string.
        buffer, position, size, unpack = self.buffer, self.position, self.size, _U64.unpack_from
        values = []
        for _ in range(count):
            if position + 8 > size:
                raise _Truncated
            end = position + 8 + unpack(buffer, position)[0]
            if end > size:
                raise _Truncated
            values.append(str(buffer[position + 8:end], "utf-8", "replace"))
            position = end
        self.position = position
        return values

    def value(self, value_type: int) -> Any:
        if value_type in _SCALAR_FORMATS:
            return self.scalar(value_type)
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.u32(), self.u64()
            if item_type in _SCALAR_FORMATS:
                fmt = f"<{count}{_SCALAR_FORMATS[item_type]}"
                return list(struct.unpack_from(fmt, self.buffer, self.take(struct.calcsize(fmt))))
            if count > self.size - self.position:  # every element takes at least a byte: corrupt or truncated
                raise _Truncated
            if item_type == _STRING:
                return self.strings(count)
            return [self.value(item_type) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {value_type}")


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file and how it is stored."""

    name: str
    shape: tuple[int, ...]  # torch order: ggml lists dimensions fastest-varying first, torch last
    type_id: int
    offset: int  # absolute position in the file
    nbytes: int | None  # None for a type id no ggml version defines

    @property
    def type_name(self) -> str:
        return type_name(self.type_id)


class GGUFFile:
    """A GGUF file opened for reading: header, metadata and tensor infos parsed and validated.

    Tensor data stays in the private memory map until :meth:`raw` or :meth:`tensor` asks for it.
    A truncated file, a file that is not GGUF, an unsupported version or a corrupt header raises
    CheckpointError naming the file and what was being read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        where = describe_path(self.path)
        try:
            size = os.path.getsize(self.path)
        except OSError as error:
            raise CheckpointError(f"{where} cannot be read ({error.strerror}); check the path.") from None
        if size == 0:
            raise CheckpointError(f"{where} is empty (0 bytes): the download or copy failed; fetch it again.")
        with open(self.path, "rb") as handle:
            start = handle.read(8)
        if start[:4] != GGUF_MAGIC:
            raise CheckpointError(
                f"{where} is not a GGUF file: it starts with {start[:4]!r}, not {GGUF_MAGIC!r}. Check that the "
                "file is the model's .gguf (a download error page or a safetensors file has the wrong start)."
            )
        self._map = _private_map(self.path)
        cursor = _Cursor(memoryview(self._map), 4)
        reading = "the header"
        try:
            self.version = cursor.u32()
            self._check_version(where)
            tensor_count, kv_count = cursor.u64(), cursor.u64()
            self.metadata: dict[str, Any] = {}
            for index in range(kv_count):
                reading = f"metadata entry {index}"
                key = cursor.string()
                reading = f"metadata key {key!r}"
                self.metadata[key] = cursor.value(cursor.u32())
            infos = []
            for index in range(tensor_count):
                reading = f"tensor info {index}"
                name = cursor.string()
                reading = f"the tensor info of {name!r}"
                infos.append(self._read_tensor_info(cursor, name))
        except _Truncated:
            raise CheckpointError(
                f"{where} is truncated: it ends ({size} bytes) while reading {reading}; re-download it."
            ) from None
        except (ValueError, UnicodeDecodeError, struct.error) as error:
            raise CheckpointError(f"{where} has a corrupt header ({error}) at {reading}; re-download it.") from None
        self.alignment = self._alignment(where)
        self.data_offset = -(-cursor.position // self.alignment) * self.alignment
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, shape, type_id, relative in infos:
            self.tensors[name] = self._check_tensor(name, shape, type_id, relative, size, where)

    def _check_version(self, where: str) -> None:
        if self.version in SUPPORTED_VERSIONS:
            return
        if struct.unpack("<I", struct.pack(">I", self.version))[0] in SUPPORTED_VERSIONS:
            raise CheckpointError(
                f"{where} is a big-endian GGUF file; torchformers reads little-endian GGUF only. Convert it on a "
                "little-endian machine with llama.cpp's gguf tools."
            )
        raise CheckpointError(
            f"{where} is GGUF version {self.version}; torchformers reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Re-convert the model with a current llama.cpp."
        )

    @staticmethod
    def _read_tensor_info(cursor: _Cursor, name: str) -> tuple[str, tuple[int, ...], int, int]:
        dim_count = cursor.u32()
        if dim_count > _MAX_DIMS:
            raise ValueError(f"tensor {name!r} claims {dim_count} dimensions")
        dims = [cursor.u64() for _ in range(dim_count)]
        type_id, relative = cursor.u32(), cursor.u64()
        return name, tuple(reversed(dims)), type_id, relative

    def _alignment(self, where: str) -> int:
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(
                f"{where}: general.alignment is {alignment!r}, not a power of two; the file is corrupt."
            )
        return alignment

    def _check_tensor(self, name: str, shape: tuple[int, ...], type_id: int, relative: int, size: int,
                      where: str) -> GGUFTensorInfo:
        offset = self.data_offset + relative
        if relative % self.alignment:
            raise CheckpointError(
                f"{where}: tensor {name!r} starts at data offset {relative}, which is not a multiple of the "
                f"alignment {self.alignment}; the file is corrupt."
            )
        nbytes = None
        if type_id in GGML_TYPES:
            if not rows_fill_blocks(type_id, shape):
                raise CheckpointError(
                    f"{where}: tensor {name!r} of type {type_name(type_id)} has rows of {shape[-1]} values, not a "
                    f"whole number of {GGML_TYPES[type_id].block_elements}-value blocks; the file is corrupt."
                )
            nbytes = tensor_nbytes(type_id, shape)
            if offset + nbytes > size:
                raise CheckpointError(
                    f"{where} is truncated: tensor {name!r} ends at byte {offset + nbytes} but the file has "
                    f"{size} bytes; re-download it."
                )
        return GGUFTensorInfo(name, shape, type_id, offset, nbytes)

    def remapped(self) -> GGUFFile:
        """This parse over a memory map of its own, so tensors of separate loads never share memory."""
        clone = copy.copy(self)
        clone._map = _private_map(self.path)
        return clone

    # -- metadata ------------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return self.require("general.architecture")

    def require(self, key: str) -> Any:
        """The metadata value of ``key``; its absence raises ConfigError naming the file and the key."""
        if key not in self.metadata:
            raise ConfigError(
                f"{describe_path(self.path)} lacks the metadata key {key!r}, which torchformers needs to build "
                "the model; the file is incomplete or was written by a converter that does not set it. "
                "Re-convert the model with a current llama.cpp."
            )
        return self.metadata[key]

    # -- tensors -------------------------------------------------------------------------------
    def raw(self, name: str) -> torch.Tensor:
        """The stored bytes of tensor ``name``: a uint8 view of the memory map, one row per tensor row."""
        import torch

        info = self.tensors[name]
        self.check_supported(info)
        if info.nbytes == 0:
            return torch.empty(*info.shape[:-1], 0, dtype=torch.uint8)
        data = torch.frombuffer(self._map, dtype=torch.uint8, count=info.nbytes, offset=info.offset)
        return data.view(*info.shape[:-1], -1)

    def tensor(self, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor ``name`` as float32, dequantized; ``rows`` reorders its rows first (an index tensor).

        An F32 tensor that needs no reordering is a zero-copy view of the file.
        """
        from ..quantization.gguf import dequantize

        info = self.tensors[name]
        raw = self.raw(name)
        if rows is not None:
            raw = raw.reshape(len(rows), -1)[rows]
        return dequantize(raw, info.type_id, info.shape)

    def check_supported(self, info: GGUFTensorInfo) -> None:
        if not is_supported(info.type_id):
            raise CheckpointError(
                f"{describe_path(self.path)}: tensor {info.name!r} is stored as {info.type_name} (ggml type "
                f"{info.type_id}), which torchformers cannot dequantize; supported types are "
                f"{', '.join(SUPPORTED_TYPES)}. Use a file quantized with one of those."
            )


def _private_map(path: str) -> mmap.mmap:
    # Copy-on-write: tensors are writable views (torch wants that) and the file is never modified.
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """The parsed GGUF file at ``path``, shared while the file is unchanged.

    Loading a model reads the file's header three times (config, weights, tokenizer); its
    vocabulary alone is ~10^5 strings, so the parse is kept for the same file on disk.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(path)
    except OSError:
        return GGUFFile(path)  # which reports the problem
    return _parsed(path, (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)).remapped()


@functools.lru_cache(maxsize=2)
def _parsed(path: str, identity: tuple[int, ...]) -> GGUFFile:
    del identity  # part of the cache key only: a rewritten file is parsed again
    return GGUFFile(path)


def is_gguf_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file named ``*.gguf`` or starting with the GGUF magic bytes."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    if path.endswith(GGUF_SUFFIX):
        return True
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def resolve_gguf(name_or_path: str | os.PathLike, gguf_file: str | os.PathLike | None = None,
                 **hub_kwargs: Any) -> str | None:
    """The local path of the GGUF file a ``from_pretrained`` call names, or None when it names none.

    ``gguf_file`` is a file inside the directory or hub repository ``name_or_path`` (or a path
    of its own, as in the reference library); without it, ``name_or_path`` may be the GGUF file.
    """
    name = os.fspath(name_or_path)
    if gguf_file is None:
        if name.endswith(GGUF_SUFFIX) and not os.path.exists(name):
            raise FileResolutionError(f"{describe_path(name)} does not exist; check the path of the GGUF file.")
        return name if is_gguf_file(name) else None
    gguf_file = os.fspath(gguf_file)
    if os.path.isfile(gguf_file):
        return gguf_file
    return resolve_file(name, gguf_file, **hub_kwargs)


# -- the Llama family in GGUF ------------------------------------------------------------------
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")

# {architecture}.KEY -> config attribute, as the reference library reads them.
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
# Keys llama.cpp itself cannot load a model without; the rest fall back to the config's defaults.
_REQUIRED_KEYS = ("context_length", "block_count", "feed_forward_length", "embedding_length",
                  "attention.head_count", "attention.layer_norm_rms_epsilon")
# Architecture-specific extras: the rotary width is the head size in llama files; Qwen3's head
# size is its own (the reference leaves it at Qwen3Config's default of 128, which real files use).
_EXTRA_CONFIG_KEYS = {
    "llama": {"rope.dimension_count": "head_dim"},
    "mistral": {"rope.dimension_count": "head_dim"},
    "qwen3": {"attention.key_length": "head_dim"},
}
_TOKEN_ID_KEYS = {
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}


def model_type(gguf: GGUFFile) -> str:
    """The config ``model_type`` of a GGUF file; an architecture outside the Llama family raises."""
    architecture = gguf.architecture
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise UnknownModelTypeError(
            f"{describe_path(gguf.path)} holds a {architecture!r} model (general.architecture); torchformers "
            f"loads GGUF files of the architectures {list(SUPPORTED_ARCHITECTURES)}."
        )
    # llama.cpp writes Mistral as "llama"; the reference tells them apart by this name only.
    if architecture == "llama" and gguf.metadata.get("general.name") == "mistral":
        return "mistral"
    return architecture


def gguf_config_dict(gguf: GGUFFile) -> dict[str, Any]:
    """The ``config.json`` equivalent of a GGUF file's metadata (the reference library's mapping)."""
    architecture = gguf.architecture
    config: dict[str, Any] = {"model_type": model_type(gguf)}
    for key in _REQUIRED_KEYS:
        gguf.require(f"{architecture}.{key}")
    for key, attribute in {**_CONFIG_KEYS, **_EXTRA_CONFIG_KEYS.get(architecture, {})}.items():
        if f"{architecture}.{key}" in gguf.metadata:
            config[attribute] = gguf.metadata[f"{architecture}.{key}"]
    for key, attribute in _TOKEN_ID_KEYS.items():
        if key in gguf.metadata:
            config[attribute] = gguf.metadata[key]
    if "vocab_size" not in config:
        tokens = gguf.metadata.get("tokenizer.ggml.tokens")
        embedding = gguf.tensors.get("token_embd.weight")
        if tokens is None and embedding is None:
            gguf.require(f"{architecture}.vocab_size")
        config["vocab_size"] = len(tokens) if tokens is not None else embedding.shape[0]
    # llama.cpp writes no output projection when it is the embedding matrix.
    config["tie_word_embeddings"] = "output.weight" not in gguf.tensors
    return config


_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def state_dict_key(gguf_name: str) -> str | None:
    """Our state-dict key for a GGUF tensor name (``blk.3.attn_q.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``), or None for a tensor the model does not use."""
    module, _, kind = gguf_name.rpartition(".")
    if module in _GLOBAL_TENSORS and kind in ("weight", "bias"):
        return f"{_GLOBAL_TENSORS[module]}.{kind}"
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match and match.group(2) in _LAYER_TENSORS:
        return f"model.layers.{match.group(1)}.{_LAYER_TENSORS[match.group(2)]}.{match.group(3)}"
    return None


def gguf_config_source(name_or_path: str | os.PathLike, gguf_file: str | os.PathLike | None = None,
                       **hub_kwargs: Any) -> tuple[dict[str, Any], str] | None:
    """(config dict, local GGUF path) when the arguments name a GGUF file, else None."""
    path = resolve_gguf(name_or_path, gguf_file, **hub_kwargs)
    if path is None:
        return None
    return gguf_config_dict(open_gguf(path)), path
