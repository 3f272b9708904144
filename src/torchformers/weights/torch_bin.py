"""``pytorch_model.bin`` checkpoints, read with ``weights_only=True`` (never arbitrary pickle)."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import torch

from ..errors import CheckpointError, describe_path

# How torch names the class a weights_only load refused.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_torch_bin(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a pickled state dict safely: only tensors and plain containers are accepted."""
    where = describe_path(path)
    try:
        # mmap keeps the tensors on disk until used; the legacy (non-zip) format cannot be mapped.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        refused = _UNSUPPORTED_GLOBAL.search(str(error))
        if refused is None:
            raise CheckpointError(
                f"{where} is not a readable PyTorch checkpoint (corrupt, truncated or not a torch.save file); "
                "re-download or re-save it."
            ) from None
        raise CheckpointError(
            f"{where} holds a pickled Python object ({refused.group(1)}) besides tensors; torchformers loads "
            ".bin files with weights_only=True and never unpickles arbitrary objects. Convert the checkpoint "
            "to safetensors with a tool you trust."
        ) from None
    except Exception as error:
        # Damaged files fail in many ways: a cut zip archive as a bare OSError ("Invalid argument"),
        # random bytes as whatever the unpickler trips over (IndexError, KeyError, EOFError...).
        raise CheckpointError(f"{where} is truncated or corrupt ({error}); re-download or re-save it.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} holds a {type(state).__name__}, not a state dict of tensors.")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor; a weights file must hold "
                "a state dict of tensors only."
            )
    return state
