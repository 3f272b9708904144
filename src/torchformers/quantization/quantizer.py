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

from ..errors import ConfigError, UnsupportedArgumentError, describe_path
from ..models.gpt2 import Conv1D
from ..weights.gguf_checkpoint import GGUFCheckpoint
from .config import WeightOnlyConfig, as_weight_only_config, check_activations_value
from .embedding import QuantizedEmbedding
from .gguf import LINEAR_LAYOUT_GROUP_SIZE, LINEAR_LAYOUT_TYPES
from .linear import (
    QUANTIZED_LINEAR_CLASSES,
    QuantizedLinear,
    check_activations,
    check_group_size,
    quantized_linear,
)


def linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a plain linear layer (``nn.Linear``, GPT-2's ``Conv1D``); None for other modules."""
    if isinstance(module, nn.Linear):
        return module.weight
    if isinstance(module, Conv1D):
        return module.weight.t()
    return None


def output_layer_name(model: nn.Module) -> str | None:
    """The name of the model's output embedding (``"lm_head"``), None for a model without one."""
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    return next((name for name, module in model.named_modules() if module is output), None) if output is not None else None


def input_embedding_name(model: nn.Module) -> str | None:
    """The name of the model's input embedding (``"model.embed_tokens"``), None for a model without one."""
    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, UnsupportedArgumentError):
        return None
    return next((name for name, module in model.named_modules() if module is embedding), None)


def _empty_quantized_embedding(model: nn.Module, name: str, bits: int, group_size: int) -> None:
    """Swap the float embedding ``name`` of a model built on the meta device for an empty quantized one."""
    old = model.get_submodule(name)
    if not isinstance(old, nn.Embedding):
        raise UnsupportedArgumentError(
            f"quantization_config lists {name!r} in quantized_embeddings, but {type(model).__name__} has a "
            f"{type(old).__name__} there, not an embedding."
        )
    model.set_submodule(name, QuantizedEmbedding(old.num_embeddings, old.embedding_dim, bits, group_size,
                                                 padding_idx=old.padding_idx, dtype=old.weight.dtype, device="meta"))


def default_modules_to_not_convert(model: nn.Module) -> list[str]:
    """The output embedding and the task heads: layers the reference's quantizers leave in floating point."""
    names = list(getattr(model, "_new_head_prefixes", ()))
    output_name = output_layer_name(model)
    return names + [output_name] if output_name is not None and output_name not in names else names


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
    int4_sizes = [size_in for name, size_in in in_sizes.items() if config.bits_for(name) == 4]
    if int4_sizes and config.group_size is None:
        fitting = [size for size in (128, 64, 32) if all(size_in % size == 0 for size_in in int4_sizes)]
        if not fitting:
            raise ConfigError(
                "quantize(): no int4 group size of 128, 64 or 32 divides the input features of every layer "
                f"({sorted(set(int4_sizes))}); use bits=8 or list the odd layers in modules_to_not_convert."
            )
        config = replace(config, group_size=fitting[0])
    for name, size_in in in_sizes.items():
        check_group_size(name, size_in, config.group_size or size_in)
        check_activations(name, size_in, config.group_size or size_in, config.activations)
        if config.bits_for(name) == 4 and size_in % 2:
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
        model.set_submodule(name, quantized_linear(linear_weight(layer), layer.bias, config.bits_for(name),
                                                   config.group_size, name, config.activations))
    if hasattr(model, "config"):
        model.config.quantization_config = config.to_dict()
    return model


def _replace_with_empty_quantized_layers(model: nn.Module, config: WeightOnlyConfig) -> None:
    """Swap linear layers of a model built on the meta device for quantized ones, to load a
    quantized checkpoint into."""
    config, layers = _layers_to_quantize(model, config)
    for name, layer in layers:
        out_features, in_features = linear_weight(layer).shape
        layer_class = QUANTIZED_LINEAR_CLASSES[config.bits_for(name)]
        model.set_submodule(name, layer_class(in_features, out_features, config.group_size,
                                              bias=layer.bias is not None, device="meta",
                                              activations=config.activations))
    for name in config.quantized_embeddings or []:
        _empty_quantized_embedding(model, name, config.bits_for(name), config.group_size)


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


class GGUFQuantizedLoad:
    """``from_pretrained(..., gguf_file=..., dequantize=False)``: the linear layers a GGUF file stores
    as Q8_0, Q4_0 or Q4_1 become int8 or int4 layers (groups of 32) holding the file's codes; other
    tensors (norms, matrices of other types) load dequantized as usual.

    An output layer tied to the embedding (llama.cpp then writes no ``output.weight``) is built
    from the embedding's blocks, so the largest product of a decode step stays quantized. The
    input embedding, when stored in one of those types, stays quantized too (a
    :class:`~torchformers.quantization.embedding.QuantizedEmbedding` that dequantizes the rows
    it looks up); the two are no longer tied.
    """

    def __init__(self, checkpoint: GGUFCheckpoint, activations: str = "float") -> None:
        self.checkpoint = checkpoint
        self.activations = activations
        self.config: WeightOnlyConfig | None = None

    def before_loading(self, model: nn.Module) -> None:
        sources = self.checkpoint.quantized_weights()
        output_name = output_layer_name(model)
        tied_module = model.tied_weight_keys().get(f"{output_name}.weight", "").rpartition(".")[0]
        if output_name is not None and output_name not in sources and tied_module in sources:
            sources[output_name] = sources[tied_module]
        linear_names = [name for name, module in model.named_modules() if linear_weight(module) is not None]
        kept = {name: sources[name] for name in linear_names if name in sources}
        if not kept:
            types = sorted({info.type_name for info in self.checkpoint.gguf.tensors.values() if len(info.shape) == 2})
            raise UnsupportedArgumentError(
                f"{describe_path(self.checkpoint.files[0])} stores its matrices as {types}; dequantize=False keeps "
                f"{sorted(LINEAR_LAYOUT_TYPES)} blocks only. Load it with dequantize=True (the default)."
            )
        bits = [layer_bits for _, layer_bits in kept.values()]
        majority = max(set(bits), key=bits.count)
        self.config = WeightOnlyConfig(
            bits=majority, group_size=LINEAR_LAYOUT_GROUP_SIZE,
            modules_to_not_convert=[name for name in linear_names if name not in kept],
            bits_by_module={name: layer_bits for name, (_, layer_bits) in kept.items() if layer_bits != majority},
            activations=self.activations,
        )
        embedding = input_embedding_name(model)
        embedding_kept = embedding is not None and embedding in sources and isinstance(
            model.get_submodule(embedding), nn.Embedding)
        if embedding_kept:
            self.config.quantized_embeddings = [embedding]
            if sources[embedding][1] != majority:
                self.config.bits_by_module = {**(self.config.bits_by_module or {}), embedding: sources[embedding][1]}
        _untie_quantized(model, set(kept) | ({embedding} if embedding_kept else set()))
        for name in kept:
            layer = model.get_submodule(name)
            out_features, in_features = linear_weight(layer).shape
            layer_class = QUANTIZED_LINEAR_CLASSES[self.config.bits_for(name)]
            model.set_submodule(name, layer_class(in_features, out_features, LINEAR_LAYOUT_GROUP_SIZE,
                                                  bias=layer.bias is not None, device="meta",
                                                  activations=self.activations))
        self.checkpoint.kept_quantized = {name: tensor for name, (tensor, _) in kept.items()}
        if embedding_kept:
            _empty_quantized_embedding(model, embedding, self.config.bits_for(embedding), LINEAR_LAYOUT_GROUP_SIZE)
            self.checkpoint.kept_quantized[embedding] = sources[embedding][0]
            self.checkpoint.float_scales.add(embedding)

    def after_loading(self, model: nn.Module) -> None:
        model.config.quantization_config = self.config.to_dict()


def plan_quantized_load(model_config: Any, requested: Any, source: str, checkpoint: Any = None,
                        dequantize: bool | None = None) -> QuantizedLoad | GGUFQuantizedLoad | None:
    """How to load ``source`` given its config's ``quantization_config`` and the one passed to
    ``from_pretrained`` (None when neither asks for quantization), or, for a GGUF checkpoint with
    ``dequantize=False``, keeping its blocks quantized.

    A checkpoint saved quantized loads as it was saved; asking for another quantization of it
    is refused, since its full-precision weights are gone.
    """
    if dequantize not in (None, True, False):
        raise UnsupportedArgumentError(f"from_pretrained(): dequantize must be True or False, got {dequantize!r}.")
    if dequantize is not None and not isinstance(checkpoint, GGUFCheckpoint):
        raise UnsupportedArgumentError(
            f"from_pretrained(): dequantize applies to GGUF files (gguf_file=...), and {source} is not one."
        )
    if dequantize is False:
        activations = "float"
        if requested is not None:
            settings = requested
            if not isinstance(settings, dict) or set(settings) - {"activations"}:
                raise UnsupportedArgumentError(
                    "from_pretrained(): dequantize=False keeps the GGUF file's own quantization, so its "
                    "quantization_config may only choose the activations ({'activations': 'int8'}); to quantize "
                    "the weights another way, pass quantization_config alone (the file is dequantized, then "
                    "quantized)."
                )
            activations = settings.get("activations", "float")
            check_activations_value(activations, "quantization_config")
        return GGUFQuantizedLoad(checkpoint, activations)
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
        or wanted.bits_by_module not in (None, saved.bits_by_module)
    ):
        raise ConfigError(
            f"{source} is already quantized ({saved.to_dict()}), but quantization_config asks for "
            f"{wanted.to_dict()}. Load it without quantization_config, or quantize the full-precision "
            "checkpoint with the new settings."
        )
    if wanted is not None:
        # The activations are not part of the saved weights: a load may choose them.
        saved = replace(saved, activations=wanted.activations)
    return QuantizedLoad(saved, checkpoint_is_quantized=True)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    """The model's quantized layers by name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, QuantizedLinear)}
