"""peft's module-level helpers, for scripts that call them: adapter state dicts, saved adapter
weights, and preparing a quantized model for adapter training."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from ..errors import ConfigError, UnsupportedArgumentError
from ..quantization.linear import QuantizedLinear
from .lora import PeftModel, hub_kwargs, read_adapter_weights


def _peft_model(model: Any, function: str) -> PeftModel:
    if not isinstance(model, PeftModel):
        raise ConfigError(f"{function}() takes a PeftModel (from get_peft_model), got {type(model).__name__}.")
    return model


def get_peft_model_state_dict(model: PeftModel, state_dict: dict[str, torch.Tensor] | None = None,
                              adapter_name: str = "default", unwrap_compiled: bool = False,
                              save_embedding_layers: bool | str = "auto") -> dict[str, torch.Tensor]:
    """An adapter's tensors, named as ``adapter_model.safetensors`` names them (see
    :meth:`PeftModel.adapter_state_dict`). ``unwrap_compiled`` looks through ``torch.compile``."""
    if unwrap_compiled:
        model = getattr(model, "_orig_mod", model)
    return _peft_model(model, "get_peft_model_state_dict").adapter_state_dict(
        adapter_name, state_dict, save_embedding_layers)


def set_peft_model_state_dict(model: PeftModel, peft_model_state_dict: dict[str, torch.Tensor],
                              adapter_name: str = "default", ignore_mismatched_sizes: bool = False,
                              low_cpu_mem_usage: bool = False) -> _IncompatibleKeys:
    """Copy an adapter's tensors (file names) into ``adapter_name``.

    Stricter than peft: a tensor with no place in the model, a shape that does not fit or a
    missing adapter weight raises (naming it) instead of being reported, so the returned
    missing and unexpected key lists are always empty. ``low_cpu_mem_usage`` changes nothing
    here: the adapter's parameters already exist and are filled in place.
    """
    if ignore_mismatched_sizes:
        raise UnsupportedArgumentError("set_peft_model_state_dict(ignore_mismatched_sizes=True) is not supported: "
                                       "a tensor of another shape belongs to another base model.")
    _peft_model(model, "set_peft_model_state_dict").load_adapter_state_dict(peft_model_state_dict, adapter_name)
    return _IncompatibleKeys([], [])


def load_peft_weights(model_id: str | os.PathLike, device: str | torch.device | None = None,
                      **kwargs: Any) -> dict[str, torch.Tensor]:
    """The tensors of the adapter saved in ``model_id`` (a directory or hub id), on ``device``."""
    tensors, _ = read_adapter_weights(model_id, hub_kwargs(kwargs))
    return tensors if device is None else {name: tensor.to(device) for name, tensor in tensors.items()}


def prepare_model_for_kbit_training(model: nn.Module, use_gradient_checkpointing: bool = True,
                                    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
                                    auto_clear_cache: bool = True) -> nn.Module:
    """Get a model ready for adapters on a quantized base, as peft's helper does: freeze every
    parameter, cast float16/bfloat16 parameters to float32 (quantized codes and scales are
    buffers and stay as they are), and, for a model with int8/int4 layers, turn on gradient
    checkpointing (with ``use_reentrant``, also the input embeddings' outputs require grad, so
    the checkpointed layers see an input that needs a gradient)."""
    options = dict(gradient_checkpointing_kwargs or {})
    for param in model.parameters():
        param.requires_grad_(False)
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)
    if auto_clear_cache and torch.cuda.is_available():
        torch.cuda.empty_cache()
    quantized = any(isinstance(module, QuantizedLinear) for module in model.modules())
    if quantized and use_gradient_checkpointing:
        if options.get("use_reentrant", True):
            model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    return model
