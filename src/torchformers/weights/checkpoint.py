"""Finding a model's weight files (single or sharded, safetensors or torch) and reading them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, FileResolutionError, describe_path
from ..hub import resolve_file
from .safetensors import SafetensorsFile
from .torch_bin import load_torch_bin

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


def with_variant(filename: str, variant: str | None) -> str:
    """The reference's variant names: the variant goes before the last suffix.

    ``model.safetensors`` -> ``model.fp16.safetensors`` and
    ``model.safetensors.index.json`` -> ``model.safetensors.index.fp16.json`` for ``variant="fp16"``.
    """
    if not variant:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


@dataclass
class Checkpoint:
    """The local weight files of one model, in load order."""

    files: list[str]
    index_file: str | None = None

    @property
    def is_safetensors(self) -> bool:
        return self.files[0].endswith(".safetensors")

    def tensors(self) -> Iterator[tuple[str, torch.Tensor, str]]:
        """Yield (name, tensor, file) for every stored tensor; safetensors ones are memory-mapped."""
        for path in self.files:
            if path.endswith(".safetensors"):
                reader = SafetensorsFile(path)
                for name in reader.keys():
                    yield name, reader.tensor(name), path
            else:
                for name, tensor in load_torch_bin(path).items():
                    yield name, tensor, path

    def first_float_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating-point tensor (what ``dtype="auto"`` falls back to)."""
        path = self.files[0]
        if path.endswith(".safetensors"):
            reader = SafetensorsFile(path)
            dtypes = (reader.dtype(name) for name in reader.keys())
        else:
            dtypes = (t.dtype for t in load_torch_bin(path).values())
        return next((d for d in dtypes if d.is_floating_point), None)


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    *,
    use_safetensors: bool | None = None,
    variant: str | None = None,
    **hub_kwargs: Any,
) -> Checkpoint:
    """Find the weights: ``model.safetensors``, its sharded index, then (unless
    ``use_safetensors=True``) ``pytorch_model.bin`` and its index."""
    candidates = [(SAFE_WEIGHTS_NAME, False), (SAFE_WEIGHTS_INDEX_NAME, True)]
    if use_safetensors is False:
        candidates = [(WEIGHTS_NAME, False), (WEIGHTS_INDEX_NAME, True)]
    elif use_safetensors is None:
        candidates += [(WEIGHTS_NAME, False), (WEIGHTS_INDEX_NAME, True)]
    for filename, is_index in candidates:
        filename = with_variant(filename, variant)
        found = resolve_file(name_or_path, filename, required=False, **hub_kwargs)
        if found is None:
            continue
        if not is_index:
            return Checkpoint(files=[found])
        return Checkpoint(files=_resolve_shards(name_or_path, found, hub_kwargs), index_file=found)
    looked_for = [with_variant(f, variant) for f, _ in candidates]
    raise FileResolutionError(
        f"No weights found for {os.fspath(name_or_path)!r}: looked for {looked_for}. "
        "Check that the directory or repository holds a saved model."
    )


def _resolve_shards(name_or_path: str | os.PathLike, index_file: str, hub_kwargs: dict[str, Any]) -> list[str]:
    where = describe_path(index_file)
    try:
        with open(index_file, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{where} is not a valid shard index (needs a 'weight_map'); re-download it.") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{where} has an empty or invalid 'weight_map'; re-download it.")
    shards: dict[str, str] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or os.path.isabs(shard) or ".." in shard.split("/"):
            raise CheckpointError(
                f"{where}: 'weight_map' sends {key!r} to {shard!r}, which is not a file name inside the "
                "model directory; re-download the index."
            )
        shards.setdefault(shard, key)
    local_dir = os.path.dirname(index_file)
    paths = []
    for shard, example_key in shards.items():
        path = os.path.join(local_dir, shard)
        if not os.path.isfile(path):
            try:
                path = resolve_file(name_or_path, shard, **hub_kwargs)
            except FileResolutionError:
                raise CheckpointError(
                    f"Shard {shard!r} listed in {where} (it holds {example_key!r} among others) is missing; "
                    "re-download the model so every shard is present."
                ) from None
        paths.append(path)
    return paths
