"""Training checkpoints: ``checkpoint-N/`` folders that let a run resume exactly where it stopped.

A checkpoint holds the model (``model.safetensors`` and ``config.json``), ``optimizer.pt``,
``scheduler.pt``, ``scaler.pt`` (fp16 only), the random number generators' states (``rng_state.pth``,
or ``rng_state_{rank}.pth`` per process), ``trainer_state.json`` and ``training_args.json``. It is
written into a hidden ``.tmp-checkpoint-N`` folder and renamed into place only once complete, so a
crash mid-save leaves every earlier checkpoint as it was, and the newest complete one is what
``resume_from_checkpoint=True`` finds. The ``.pt``/``.pth`` files hold tensors and plain Python values
only, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, FileResolutionError, describe_path
from ..weights.checkpoint import resolve_checkpoint
from .callbacks import TrainerState

logger = logging.getLogger("torchformers")

PREFIX_CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_STAGING_PREFIX = ".tmp-"


def checkpoint_step(path: str) -> int | None:
    match = _CHECKPOINT_NAME.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def sorted_checkpoints(output_dir: str) -> list[str]:
    """The complete checkpoint folders in ``output_dir``, oldest (lowest step) first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(checkpoint_step(name), os.path.join(output_dir, name)) for name in os.listdir(output_dir)]
    return [path for step, path in sorted(f for f in found if f[0] is not None) if os.path.isdir(path)]


def get_last_checkpoint(folder: str) -> str | None:
    """The newest ``checkpoint-N`` folder in ``folder``, or None."""
    checkpoints = sorted_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(output_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> None:
    """Delete the oldest checkpoints beyond ``save_total_limit``, never the newest nor the best one."""
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = sorted_checkpoints(output_dir)
    protected = {os.path.normpath(checkpoints[-1])} if checkpoints else set()
    if best_model_checkpoint:
        protected.add(os.path.normpath(best_model_checkpoint))
    excess = len(checkpoints) - max(save_total_limit, len(protected))
    for path in checkpoints:
        if excess <= 0:
            break
        if os.path.normpath(path) not in protected:
            logger.info("Deleting checkpoint %s (save_total_limit=%d).", path, save_total_limit)
            shutil.rmtree(path, ignore_errors=True)
            excess -= 1


def staging_dir(final_dir: str) -> str:
    """Where ``final_dir`` is written before it is complete (a name no checkpoint search matches)."""
    return os.path.join(os.path.dirname(final_dir), _STAGING_PREFIX + os.path.basename(final_dir))


def remove_stale_staging(output_dir: str) -> None:
    """Remove half-written checkpoints a crash left behind."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(_STAGING_PREFIX + PREFIX_CHECKPOINT_DIR):
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def publish(staged: str, final_dir: str) -> None:
    """Move a complete staged checkpoint into place, replacing an older one of the same step."""
    if not os.path.exists(final_dir):
        os.replace(staged, final_dir)
        return
    # A directory cannot be renamed over a non-empty one: move the old one aside first.
    previous = os.path.join(os.path.dirname(final_dir), ".old-" + os.path.basename(final_dir))
    shutil.rmtree(previous, ignore_errors=True)
    os.replace(final_dir, previous)
    os.replace(staged, final_dir)
    shutil.rmtree(previous, ignore_errors=True)


def rng_file_name(world_size: int, rank: int) -> str:
    return "rng_state.pth" if world_size <= 1 else f"rng_state_{rank}.pth"


def capture_rng_state() -> dict[str, Any]:
    """Every generator a training step draws from, as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # NumPy's key array as a tensor: a pickled ndarray would not load with weights_only=True.
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), position, has_gauss, cached))
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if isinstance(cuda_states, torch.Tensor):  # the reference saves one device's state without torchrun
            torch.cuda.set_rng_state(cuda_states)
        elif len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def load_torch_file(path: str, required: bool = True) -> Any:
    """``torch.load(path, weights_only=True)``, with the file named in any error."""
    if not os.path.isfile(path):
        if required:
            raise CheckpointError(
                f"{describe_path(path)} is missing: the checkpoint is incomplete or was saved with "
                "save_only_model=True, and resuming needs it. Start a new training from the model weights "
                "(from_pretrained on the checkpoint folder) instead."
            )
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "numpy" in str(error):
            # The reference library stores NumPy's generator state as an array; allow exactly those types.
            with contextlib.suppress(Exception), torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        raise CheckpointError(f"{describe_path(path)} cannot be read ({error}); the checkpoint is corrupt.") from None


def _numpy_globals() -> list[Any]:
    from numpy.core.multiarray import _reconstruct  # numpy 2 keeps this import path working

    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_model_tensors(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """The model weights stored in a checkpoint folder (memory-mapped views)."""
    try:
        checkpoint = resolve_checkpoint(checkpoint_dir, local_files_only=True)
    except FileResolutionError:
        raise CheckpointError(
            f"{describe_path(checkpoint_dir)} holds no model weights (model.safetensors); it is not a complete "
            "checkpoint."
        ) from None
    return {name: tensor for name, tensor, _ in checkpoint.tensors()}


@dataclasses.dataclass
class TrainingCheckpoint:
    """Everything read from a checkpoint folder before any of it is applied, so a corrupt checkpoint
    fails before the model, optimizer or random generators change."""

    path: str
    state: TrainerState
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any] | None


def read_checkpoint(path: str, world_size: int, rank: int) -> TrainingCheckpoint:
    if not os.path.isdir(path):
        raise CheckpointError(f"{describe_path(path)} is not a checkpoint folder (checkpoint-N).")
    state = TrainerState.load_from_json(os.path.join(path, TRAINER_STATE_NAME))
    rng_path = os.path.join(path, rng_file_name(world_size, rank))
    rng = load_torch_file(rng_path, required=False)
    if rng is None:
        logger.warning("%s is missing (the checkpoint was saved with another number of processes?); random "
                       "numbers after resuming will differ from an uninterrupted run.", describe_path(rng_path))
    return TrainingCheckpoint(
        path=path,
        state=state,
        model=load_model_tensors(path),
        optimizer=load_torch_file(os.path.join(path, OPTIMIZER_NAME)),
        scheduler=load_torch_file(os.path.join(path, SCHEDULER_NAME)),
        scaler=load_torch_file(os.path.join(path, SCALER_NAME), required=False),
        rng=rng,
    )
