"""``pytorch_model.bin`` checkpoints, read with ``weights_only=True`` (never arbitrary pickle)."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from ..errors import CheckpointError, describe_path


def load_torch_bin(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a pickled state dict safely: only tensors and plain containers are accepted."""
    where = describe_path(path)
    try:
        # mmap keeps the tensors on disk until used; the legacy (non-zip) format cannot be mapped.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{where} holds objects other than tensors, which torchformers refuses to unpickle for safety "
            f"(weights_only=True): {str(error).splitlines()[0]}. Convert it to safetensors with a trusted tool."
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{where} is truncated or corrupt ({error}); re-download or re-save it.") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where} does not hold a state dict of tensors.")
    return state
