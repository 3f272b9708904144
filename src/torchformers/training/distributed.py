"""One training job over several processes: torchrun's environment, DDP, FSDP and collectives.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; the Trainer reads them, joins the process group (gloo on CPU, NCCL
on CUDA) and wraps the model in DistributedDataParallel, or shards it with FSDP when ``fsdp`` asks.
Without those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UnsupportedArgumentError

FSDP_OPTIONS = ("full_shard", "shard_grad_op", "offload", "auto_wrap")


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def init_process_group(device: torch.device, backend: str | None, timeout_s: int) -> None:
    """Join torchrun's process group once; NCCL for CUDA devices, gloo otherwise."""
    if not is_distributed() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sum_across_ranks(value: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(value: Any) -> list[Any]:
    """``value`` from every rank, in rank order (one element without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def parse_fsdp_options(fsdp: str | list[str] | None) -> list[str]:
    """``fsdp="full_shard auto_wrap"`` (or a list) as a list of options; unknown ones raise."""
    if not fsdp:
        return []
    options = fsdp.split() if isinstance(fsdp, str) else list(fsdp)
    unknown = [option for option in options if option not in FSDP_OPTIONS]
    if unknown:
        raise UnsupportedArgumentError(f"fsdp options {unknown} are not supported; choose from {list(FSDP_OPTIONS)}.")
    if "full_shard" in options and "shard_grad_op" in options:
        raise UnsupportedArgumentError("fsdp: choose one of 'full_shard' and 'shard_grad_op'.")
    return options


def wrap_model(
    model: nn.Module, device: torch.device, fsdp_options: list[str], fsdp_config: dict[str, Any], ddp_options: dict
) -> nn.Module:
    """The model as each process trains it: sharded by FSDP, replicated by DDP, or as is for one process."""
    if fsdp_options:
        return _shard_with_fsdp(model, fsdp_options, fsdp_config)
    if not is_distributed():
        return model
    device_ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_options)


def check_fsdp_possible(device: torch.device) -> None:
    if device.type != "cuda" or not is_distributed():
        raise UnsupportedArgumentError(
            "fsdp shards a model across GPUs: launch with torchrun on CUDA devices. On CPU, torchrun trains "
            "with DistributedDataParallel without any fsdp option."
        )


def _shard_with_fsdp(model: nn.Module, options: list[str], config: dict[str, Any]) -> nn.Module:
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    extra = {"reshard_after_forward": "shard_grad_op" not in options}
    if "offload" in options:
        extra["offload_policy"] = CPUOffloadPolicy()
    if "auto_wrap" in options:
        for block in _blocks_to_wrap(model, config):
            fully_shard(block, **extra)
    fully_shard(model, **extra)
    return model


def _blocks_to_wrap(model: nn.Module, config: dict[str, Any]) -> list[nn.Module]:
    """The transformer blocks sharded one by one: the classes ``fsdp_config['transformer_layer_cls_to_wrap']``
    (or the model's ``_no_split_modules``) names, else every element of every ``nn.ModuleList``."""
    names = config.get("transformer_layer_cls_to_wrap") or getattr(model, "_no_split_modules", None) or []
    names = [names] if isinstance(names, str) else list(names)
    if names:
        blocks = [module for module in model.modules() if type(module).__name__ in names]
        if not blocks:
            raise UnsupportedArgumentError(f"fsdp auto_wrap: the model has no modules of the classes {names}.")
        return blocks
    return [block for module in model.modules() if isinstance(module, nn.ModuleList) for block in module]


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync") and hasattr(model, "reshard")


@contextmanager
def gradient_sync_paused(model: nn.Module, pause: bool) -> Iterator[None]:
    """Skip the gradient all-reduce of a micro-batch that is not the last of an accumulation."""
    if not pause:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with nullcontext():
            yield


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """An FSDP model's full state dict on CPU (every rank must call; the values matter on rank 0)."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> Any:
    if not is_fsdp(model):
        return model.load_state_dict(state, strict=False)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
