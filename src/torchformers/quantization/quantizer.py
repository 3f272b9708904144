"""Quantizing a model's linear layers, and what ``from_pretrained`` does with ``quantization_config``.

:func:`quantize` replaces ``nn.Linear`` layers (and GPT-2's ``Conv1D``) with
:class:`~torchformers.quantization.linear.Int8Linear` or ``Int4Linear`` and records the
config on ``model.config.quantization_config``, so ``save_pretrained`` writes a quantized
checkpoint (see ``linear.py`` for its tensors) that ``from_pretrained`` loads back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedArgumentError
from ..models.gpt2 import Conv1D
from .config import WeightOnlyConfig, as_weight_only_config
from .linear import QUANTIZED_LINEAR_CLASSES, QuantizedLinear, check_group_size, quantized_linear


def linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a plain linear layer (``nn.Linear``, GPT-2's ``Conv1D``); None for other modules."""
    if isinstance(module, nn.Linear):
        return module.weight
    if isinstance(module, Conv1D):
        return module.weight.t()
    return None


def default_modules_to_not_convert(model: nn.Module) -> list[str]:
    """The output embedding and the task heads: layers the reference's quantizers leave in floating point."""
    names = list(getattr(model, "_new_head_prefixes", ()))
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is not None:
        names += [name for name, module in model.named_modules() if module is output and name not in names]
    return names


def _is_listed(name: str, entries: list[str]) -> bool:
    return any(name == entry or name.endswith("." + entry) or name.startswith(entry + ".") for entry in entries)


def _layers_to_quantize(model: nn.Module, config: WeightOnlyConfig) -> tuple[WeightOnlyConfig, list[tuple[str, nn.Module]]]:
    """The resolved config (skipped modules, int4 group size) and the layers it quantizes, checked."""
    if any(".lora_" in name for name, _ in model.named_modules()):
        raise UnsupportedArgumentError(
            "quantize() got a model with LoRA adapters; quantize the base model first, then add adapters "
            "(get_peft_model), so the adapters stay in floating point."
        )
    if config.modules_to_not_convert is None:
        config = replace(config, modules_to_not_convert=default_modules_to_not_convert(model))
    layers = [(name, module) for name, module in model.named_modules()
              if linear_weight(module) is not None and not _is_listed(name, config.modules_to_not_convert)]
    if not layers:
        raise ConfigError(
            f"quantize(): {type(model).__name__} has no linear layer left to quantize "
            f"(modules_to_not_convert={config.modules_to_not_convert})."
        )
    in_sizes = {name: linear_weight(module).shape[1] for name, module in layers}
    if config.bits == 4 and config.group_size is None:
        fitting = [size for size in (128, 64, 32) if all(size_in % size == 0 for size_in in in_sizes.values())]
        if not fitting:
            raise ConfigError(
                "quantize(): no int4 group size of 128, 64 or 32 divides the input features of every layer "
                f"({sorted(set(in_sizes.values()))}); use bits=8 or list the odd layers in modules_to_not_convert."
            )
        config = replace(config, group_size=fitting[0])
    for name, size_in in in_sizes.items():
        check_group_size(name, size_in, config.group_size or size_in)
        if config.bits == 4 and size_in % 2:
            raise ConfigError(f"{name} has an odd number of input features ({size_in}); int4 needs an even one.")
    return config, layers


def _untie_quantized(model: nn.Module, names: set[str]) -> None:
    """A quantized layer cannot share its weight with an embedding: record the tie as broken, so
    saving keeps the layer's own tensors and loading does not tie them again."""
    tied_weight_keys = getattr(model, "tied_weight_keys", None)
    tied = tied_weight_keys() if callable(tied_weight_keys) else {}
    if any(target.rpartition(".")[0] in names for target in tied):
        model.config.tie_word_embeddings = False


def quantize(model: nn.Module, config: WeightOnlyConfig | dict[str, Any]) -> nn.Module:
    """Replace the model's linear layers by int8 or int4 ones, in place; returns the model.

    Layers are quantized one at a time, so the float weights of one layer at most are
    copied at once. ``config`` is a :class:`WeightOnlyConfig` or its dict; it is recorded,
    resolved (skipped modules, group size), on ``model.config.quantization_config``.
    """
    config, layers = _layers_to_quantize(model, as_weight_only_config(config))
    _untie_quantized(model, {name for name, _ in layers})
    for name, layer in layers:
        model.set_submodule(name, quantized_linear(linear_weight(layer), layer.bias, config.bits,
                                                   config.group_size, name))
    if hasattr(model, "config"):
        model.config.quantization_config = config.to_dict()
    return model


def _replace_with_empty_quantized_layers(model: nn.Module, config: WeightOnlyConfig) -> None:
    """Swap linear layers of a model built on the meta device for quantized ones, to load a
    quantized checkpoint into."""
    config, layers = _layers_to_quantize(model, config)
    layer_class = QUANTIZED_LINEAR_CLASSES[config.bits]
    for name, layer in layers:
        out_features, in_features = linear_weight(layer).shape
        model.set_submodule(name, layer_class(in_features, out_features, config.group_size,
                                              bias=layer.bias is not None, device="meta"))


class QuantizedLoad:
    """What ``from_pretrained`` does for quantization: build quantized layers to load a quantized
    checkpoint into, or quantize a full-precision one once it is loaded."""

    def __init__(self, config: WeightOnlyConfig, checkpoint_is_quantized: bool) -> None:
        self.config = config
        self.checkpoint_is_quantized = checkpoint_is_quantized

    def before_loading(self, model: nn.Module) -> None:
        if self.checkpoint_is_quantized:
            _replace_with_empty_quantized_layers(model, self.config)

    def after_loading(self, model: nn.Module) -> None:
        if self.checkpoint_is_quantized:
            model.config.quantization_config = self.config.to_dict()
        else:
            quantize(model, self.config)


def plan_quantized_load(model_config: Any, requested: Any, source: str) -> QuantizedLoad | None:
    """How to load ``source`` given its config's ``quantization_config`` and the one passed to
    ``from_pretrained`` (None when neither asks for quantization).

    A checkpoint saved quantized loads as it was saved; asking for another quantization of it
    is refused, since its full-precision weights are gone.
    """
    stored = getattr(model_config, "quantization_config", None)
    if stored is None and requested is None:
        return None
    wanted = None if requested is None else as_weight_only_config(requested)
    if stored is None:
        return QuantizedLoad(wanted, checkpoint_is_quantized=False)
    saved = as_weight_only_config(stored)
    if wanted is not None and (
        wanted.bits != saved.bits
        or wanted.group_size not in (None, saved.group_size)
        or wanted.modules_to_not_convert not in (None, saved.modules_to_not_convert)
    ):
        raise ConfigError(
            f"{source} is already quantized ({saved.to_dict()}), but quantization_config asks for "
            f"{wanted.to_dict()}. Load it without quantization_config, or quantize the full-precision "
            "checkpoint with the new settings."
        )
    return QuantizedLoad(saved, checkpoint_is_quantized=True)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    """The model's quantized layers by name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, QuantizedLinear)}
