"""LoRA: low-rank updates trained beside frozen weights, with the ``peft`` library's API and files.

``get_peft_model(model, LoraConfig(...))`` freezes the model and wraps each targeted linear
layer in a :class:`LoraLinear`, which adds ``scaling * B(A(dropout(x)))`` to the frozen
layer's output. The wrapped model is a :class:`PeftModel` whose module tree is the one
``peft`` builds (``base_model.model.<the model's names>``, with ``base_layer``, ``lora_A``
and ``lora_B`` per adapted layer), so parameter names, ``adapter_config.json`` and the
keys of ``adapter_model.safetensors`` (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``)
match peft's: adapters saved by either library load in the other.

The frozen layer may be ``nn.Linear``, GPT-2's ``Conv1D`` or a quantized int8/int4 layer
(QLoRA: the gradient passes through the quantized product to the adapters below it), or an
``nn.Embedding`` named in ``target_modules`` (:class:`LoraEmbedding`, peft's
``lora_embedding_A``/``lora_embedding_B``; "all-linear" leaves embeddings alone, as in peft).

With ``use_dora=True`` an adapter is DoRA (arXiv 2402.09353): the adapted weight ``W + s * BA``
is rescaled, row by row, to a learned length (``lora_magnitude_vector``, peft's name and
file key), so direction and magnitude train apart. Outputs, gradients and merged weights
follow peft's formulas.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedArgumentError, WeightsMismatchError, describe_path
from ..hub import resolve_file
from ..models.gpt2 import Conv1D
from ..nn.linear import stamp, unchanged
from ..quantization.linear import QuantizedLinear
from ..weights.safetensors import SafetensorsFile, save_safetensors
from ..weights.torch_bin import load_torch_bin
from .config import ADAPTER_CONFIG_NAME, LoraConfig, TaskType

logger = logging.getLogger("torchformers")

ADAPTER_SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_WEIGHTS_NAME = "adapter_model.bin"
PREFIX = "base_model.model."

# The layers adapted when target_modules is not given: attention's query and value projections.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3"), ["q_proj", "v_proj"]),
    "gpt2": ["c_attn"],
    **dict.fromkeys(("bert", "roberta", "xlm-roberta"), ["query", "value"]),
    "distilbert": ["q_lin", "v_lin"],
}
# Target names for which peft also saves the adapted embeddings' full weights.
_EMBEDDING_LAYER_NAMES = ("embed_tokens", "lm_head")
# Heads a task trains in full (they are new and random), added to modules_to_save.
_TASK_HEADS = {"SEQ_CLS": ["classifier", "score"], "TOKEN_CLS": ["classifier", "score"],
               "QUESTION_ANS": ["qa_outputs"]}
# Module names inside the wrappers, which are never targets themselves.
_WRAPPER_PARTS = re.compile(
    r"\.(base_layer|lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_dropout|lora_magnitude_vector"
    r"|original_module|modules_to_save)(\.|$)"
)


def layer_features(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a layer LoRA can adapt (or has adapted), None for any other module."""
    if isinstance(module, LoraLinear):
        module = module.base_layer
    if isinstance(module, (nn.Linear, QuantizedLinear)):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def _plain(module: nn.Module) -> bool:
    """Whether calling ``module`` runs nothing but its forward (no hooks of its own or global ones)."""
    hooks = torch.nn.modules.module
    return not (module._forward_hooks or module._forward_pre_hooks or hooks._global_forward_hooks
                or hooks._global_forward_pre_hooks)


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()))
    return tensor.device


# -- layers -------------------------------------------------------------------------------------
class LoraLayer(nn.Module):
    """What LoRA layers share: the frozen ``base_layer``, each adapter's scale, which adapters run,
    and switching them all off. ``adapter_parts`` names the per-adapter containers; the first
    one holds every adapter of the layer."""

    adapter_parts: ClassVar[tuple[str, ...]] = ()
    fan_in_fan_out = False  # whether the frozen weight is stored (in, out), as GPT-2's Conv1D stores it

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scaling: dict[str, float] = {}
        self.active_adapters: list[str] = []
        self.disable_adapters = False
        self.merged_adapters: list[str] = []  # adapters added into the frozen weight (merge_adapter)
        self._merged_rescales: dict[str, torch.Tensor] = {}  # DoRA's row factors at merge time, to undo them

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def _base_output_only(self) -> bool:
        """Whether a forward is the frozen layer's alone: adapters switched off (taking merged ones back
        out of the weight first, as peft does) or already merged into it."""
        if self.disable_adapters and self.merged_adapters:
            self.unmerge()
        return self.disable_adapters or bool(self.merged_adapters)

    def base_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The frozen weight as an (out, in) matrix of ``dtype`` (dequantized, for a quantized layer;
        (num_embeddings, embedding_dim) for an embedding)."""
        base = self.base_layer
        if isinstance(base, QuantizedLinear):
            return base.dequantize(dtype)
        weight = base.weight.t() if self.fan_in_fan_out else base.weight
        return weight.to(dtype)

    def _change_base(self, name: str, delta: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                     safe_merge: bool = False) -> None:
        """Add ``delta`` to the frozen weight, or make it ``weight`` (float32 (out, in) matrices): DoRA's
        merges set the rescaled weight itself, as peft does, which keeps rows with small factors exact."""
        change = delta if delta is not None else weight
        if safe_merge and not torch.isfinite(change).all():
            raise ConfigError(f"adapter {name!r} has non-finite weights; merging it would corrupt the model.")
        base = self.base_layer
        if isinstance(base, QuantizedLinear):
            logger.warning("Merging adapter %r into a %d-bit quantized layer rounds the update to the "
                           "quantization grid; outputs change slightly.", name, base.bits)
            base.merge_delta(delta if delta is not None else weight - self.base_weight(torch.float32))
            return
        change = change.t() if self.fan_in_fan_out else change
        with torch.no_grad():
            if delta is not None:
                base.weight += change.to(base.weight.dtype)
            else:
                base.weight.copy_(change)

    def _unmerged(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        """``weight`` (float32, (out, in)) with merged adapter ``name`` taken back out, as peft computes it."""
        rescale = self._merged_rescales.get(name)
        if rescale is not None:
            weight = weight / rescale[:, None]
        return weight - self.delta_weight(name)

    def unmerge(self) -> None:
        """Take the merged adapters back out of the frozen weight (the last merged first)."""
        if isinstance(self.base_layer, QuantizedLinear) and self.merged_adapters:
            raise UnsupportedArgumentError(
                "an adapter merged into a quantized layer cannot be taken out again exactly (the merge rounded the "
                "weights to the quantization grid); reload the model instead."
            )
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self._merged_rescales:
                self._change_base(name, weight=self._unmerged(self.base_weight(torch.float32), name))
                del self._merged_rescales[name]
            else:
                self._change_base(name, delta=-self.delta_weight(name))

    def adapter_names(self) -> list[str]:
        return list(getattr(self, self.adapter_parts[0]))

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapter ``name``'s A (r, inputs) and B (outputs, r) parameters: its update is ``scale * B @ A``
        (for an embedding, inputs are token ids and outputs the embedding's features)."""
        a, b = (getattr(self, part)[name] for part in self.adapter_parts[:2])
        return (a.weight if isinstance(a, nn.Module) else a), (b.weight if isinstance(b, nn.Module) else b)

    def set_requires_grad(self, adapter_names: list[str], requires_grad: bool) -> None:
        """Train (or freeze) the named adapters' weights in this layer."""
        for part in self.adapter_parts:
            container = getattr(self, part)
            for name in adapter_names:
                if name in container:
                    container[name].requires_grad_(requires_grad)

    def set_trainable(self, adapter_name: str, trainable: bool) -> None:
        """Train ``adapter_name``'s weights (when ``trainable``) and freeze the other adapters'."""
        self.set_requires_grad(self.adapter_names(), False)
        self.set_requires_grad([adapter_name], trainable)

    def remove_adapter(self, name: str) -> None:
        for part in (*self.adapter_parts, "lora_dropout"):
            getattr(self, part).pop(name, None)
        self.scaling.pop(name, None)
        self.active_adapters = [active for active in self.active_adapters if active != name]

    def extra_repr(self) -> str:
        return f"adapters={self.adapter_names()}, active={self.active_adapters}"


class LoraLinear(LoraLayer):
    """A frozen linear layer (``base_layer``) plus one low-rank update per named adapter."""

    adapter_parts = ("lora_A", "lora_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = layer_features(base_layer)
        # Conv1D stores (in, out): its weight takes the transposed update when merging.
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.lora_dropout = nn.ModuleDict()
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ModuleDict()  # DoRA adapters only

    def add_adapter(self, name: str, rank: int, scaling: float, dropout: float, init: bool | str,
                    dora: bool = False) -> None:
        device = _module_device(self.base_layer)
        # Adapters train in float32 whatever the frozen weights' dtype (peft's default as well).
        lora_a = nn.Linear(self.in_features, rank, bias=False, device=device)  # Kaiming-uniform, as nn.Linear
        lora_b = nn.Linear(rank, self.out_features, bias=False, device=device)
        if init == "gaussian":
            nn.init.normal_(lora_a.weight, std=1 / rank)
        if init:
            nn.init.zeros_(lora_b.weight)  # the adapter starts as a no-op
        self.lora_A[name] = lora_a
        self.lora_B[name] = lora_b
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling[name] = scaling
        if isinstance(init, str) and init != "gaussian":
            self._init_from_weight(name, init)
        if dora:
            with torch.no_grad():  # the adapted rows' lengths, so the adapter starts as the plain update
                lengths = self._adapted_row_norms(self.base_weight(torch.float32), self.delta_weight(name))
            self.lora_magnitude_vector[name] = DoraMagnitude(lengths)

    @torch.no_grad()
    def _init_from_weight(self, name: str, init: str) -> None:
        """PiSSA (``"pissa"``, ``"pissa_niter_<n>"``) or OLoRA (``"olora"``), as peft computes them:
        the adapter starts as the frozen weight's main rank-r part, which is taken out of the frozen
        weight, so the layer's output is unchanged. The frozen weight becomes that residual."""
        base = self.base_layer
        if isinstance(base, QuantizedLinear):
            raise UnsupportedArgumentError(
                f"init_lora_weights={init!r} rewrites the frozen weight; it needs a floating-point layer. Initialize "
                "on the full-precision model, then quantize."
            )
        if init == "olora" and self.fan_in_fan_out:
            raise UnsupportedArgumentError("init_lora_weights='olora' is not supported on GPT-2's Conv1D layers.")
        rank, scaling = self.lora_A[name].out_features, self.scaling[name]
        weight = self.base_weight(torch.float32)
        if init == "olora":
            q, r = torch.linalg.qr(weight)
            lora_a, lora_b = r[:rank].contiguous(), q[:, :rank].contiguous()
        else:
            if init == "pissa":
                v, singular, uh = torch.linalg.svd(weight, full_matrices=False)
                v, singular, uh = v[:, :rank], singular[:rank], uh[:rank]
            else:
                v, singular, u = torch.svd_lowrank(weight, rank, niter=int(init.removeprefix("pissa_niter_")))
                uh = u.t()
            root = torch.diag(torch.sqrt(singular / scaling))
            lora_a, lora_b = root @ uh, v @ root
        self.lora_A[name].weight.data = lora_a
        self.lora_B[name].weight.data = lora_b
        residual = (weight - scaling * lora_b @ lora_a).to(base.weight.dtype)
        base.weight.data = residual.t() if self.fan_in_fan_out else residual

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._base_output_only():
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            lora_a = self.lora_A[name] if name in self.lora_A else None
            if lora_a is None:
                continue
            lora_b, dropout = self.lora_B[name], self.lora_dropout[name]
            if name in self.lora_magnitude_vector:
                result = result + self._dora_update(name, x.to(lora_a.weight.dtype), result).to(result.dtype)
            elif (result.dtype == lora_a.weight.dtype and (isinstance(dropout, nn.Identity) or not self.training)
                  and _plain(lora_a) and _plain(lora_b)):
                # No dropout to apply: the update as two products, the second adding its scaled output to
                # the result (two kernel calls instead of four and three module calls; +8% decode speed
                # with adapters on every linear layer of llama-135m).
                rows = x.to(result.dtype).reshape(-1, self.in_features) @ lora_a.weight.t()
                result = torch.addmm(result.reshape(-1, self.out_features), rows, lora_b.weight.t(),
                                     alpha=self.scaling[name]).view(result.shape)
            else:
                update = lora_b(lora_a(dropout(x.to(lora_a.weight.dtype)))) * self.scaling[name]
                result = result + update.to(result.dtype)
        return result

    def _dora_update(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """What a DoRA adapter adds to the frozen layer's ``result``: the output of the rescaled weight
        ``m * (W + s * BA) / |W + s * BA|`` (row lengths ``|.|`` taken as constants) less ``W x``."""
        lora_a, lora_b, dropout, scaling = self.lora_A[name], self.lora_B[name], self.lora_dropout[name], self.scaling[name]
        rescale = self.lora_magnitude_vector[name].weight / self._dora_lengths(name, x.dtype)
        if isinstance(dropout, nn.Identity) or not self.training:
            plain = result if self.bias is None else result - self.bias
        else:  # the frozen product must see the same dropped-out input as the adapter
            x = dropout(x)
            plain = torch.nn.functional.linear(x, self.base_weight(x.dtype))
        return (rescale - 1) * plain + rescale * lora_b(lora_a(x)) * scaling

    def _dora_lengths(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The row lengths ``|W + s * BA|`` of adapter ``name``, a constant for autograd.

        Kept until the frozen weight, A or B changes: a decode step would otherwise read every
        adapted weight twice more (peft recomputes them each call unless told to cache), and an
        optimizer step changes A and B in place, which their versions record.
        """
        sources = [*self.base_layer.parameters(recurse=False), *self.base_layer.buffers(recurse=False),
                   self.lora_A[name].weight, self.lora_B[name].weight]
        cache = self.__dict__.setdefault("_dora_cache", {})
        cached = cache.get(name)
        if cached is None or cached[1].dtype != dtype or not unchanged(cached[0], sources):
            with torch.no_grad():
                delta = self.scaling[name] * (self.lora_B[name].weight @ self.lora_A[name].weight)
                lengths = self._adapted_row_norms(self.base_weight(dtype), delta.to(dtype))
            cache[name] = cached = (stamp(sources), lengths)
        return cached[1]

    @staticmethod
    def _adapted_row_norms(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return torch.linalg.norm(weight + delta, dim=1).to(weight.dtype)

    def delta_weight(self, name: str) -> torch.Tensor:
        """The adapter's update as a float32 (out, in) matrix (before DoRA's rescaling)."""
        return (self.lora_B[name].weight.float() @ self.lora_A[name].weight.float()) * self.scaling[name]

    def merge(self, names: list[str], safe_merge: bool = False) -> nn.Module:
        """Add the named adapters' updates to the frozen weight; returns the frozen layer."""
        names = [name for name in names if name in self.lora_A and name not in self.merged_adapters]
        unmerged = None
        for name in names:
            delta = self.delta_weight(name)
            if name in self.lora_magnitude_vector:
                if unmerged is None:  # DoRA's row lengths come from the weight without any merged adapter
                    unmerged = self.base_weight(torch.float32)
                    for merged in reversed(self.merged_adapters):
                        unmerged = self._unmerged(unmerged, merged)
                rescale = self.lora_magnitude_vector[name].weight.detach().float() / self._adapted_row_norms(unmerged, delta)
                self._change_base(name, weight=rescale[:, None] * (self.base_weight(torch.float32) + delta),
                                  safe_merge=safe_merge)
                self._merged_rescales[name] = rescale
            else:
                self._change_base(name, delta=delta, safe_merge=safe_merge)
            self.merged_adapters.append(name)
        return self.base_layer

    def extra_repr(self) -> str:
        dora = [name for name in self.lora_A if name in self.lora_magnitude_vector]
        return super().extra_repr() + (f", dora={dora}" if dora else "")


class LoraEmbedding(LoraLayer):
    """A frozen ``nn.Embedding`` plus one low-rank update per named adapter: the looked-up rows of
    A's transpose, times B's transpose, times the scale (peft's ``lora_embedding_A`` (r, vocab)
    and ``lora_embedding_B`` (dim, r), which are plain parameters, and no dropout)."""

    adapter_parts = ("lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.num_embeddings, self.embedding_dim = base_layer.num_embeddings, base_layer.embedding_dim
        self.lora_dropout = nn.ModuleDict()  # kept for peft's layout; embeddings take no dropout
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    def add_adapter(self, name: str, rank: int, scaling: float, dropout: float, init: bool | str,
                    dora: bool = False) -> None:
        if dora:  # inject_adapter refuses this before changing the model; a direct call is refused here
            raise UnsupportedArgumentError("use_dora=True on an embedding layer is not supported by torchformers.")
        device = self.base_layer.weight.device
        lora_a = torch.randn(rank, self.num_embeddings, device=device)
        lora_b = torch.randn(self.embedding_dim, rank, device=device)
        if init:  # A zero, so the adapter starts as a no-op (peft's choice for embeddings: the reverse of linear's)
            lora_a.zero_()
        self.lora_embedding_A[name] = nn.Parameter(lora_a)
        self.lora_embedding_B[name] = nn.Parameter(lora_b)
        self.lora_dropout[name] = nn.Identity()
        self.scaling[name] = scaling

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._base_output_only():
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        base = self.base_layer
        for name in self.active_adapters:
            if name not in self.lora_embedding_A:
                continue
            rows = torch.nn.functional.embedding(
                x, self.lora_embedding_A[name].t(), padding_idx=base.padding_idx, max_norm=base.max_norm,
                norm_type=base.norm_type, scale_grad_by_freq=base.scale_grad_by_freq, sparse=base.sparse,
            )
            result = result + ((rows @ self.lora_embedding_B[name].t()) * self.scaling[name]).to(result.dtype)
        return result

    def delta_weight(self, name: str) -> torch.Tensor:
        """The adapter's update as a float32 (num_embeddings, embedding_dim) matrix."""
        return (self.lora_embedding_B[name].float() @ self.lora_embedding_A[name].float()).t() * self.scaling[name]

    def merge(self, names: list[str], safe_merge: bool = False) -> nn.Module:
        """Add the named adapters' updates to the frozen table; returns the frozen embedding."""
        for name in names:
            if name in self.lora_embedding_A and name not in self.merged_adapters:
                self._change_base(name, delta=self.delta_weight(name), safe_merge=safe_merge)
                self.merged_adapters.append(name)
        return self.base_layer


class DoraMagnitude(nn.Module):
    """A DoRA adapter's learned length for each output row of the adapted weight (``weight``, (out,))."""

    def __init__(self, lengths: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(lengths)


class ModulesToSaveWrapper(nn.Module):
    """A module trained in full for each adapter: ``original_module`` stays as it was, each adapter
    trains its own copy in ``modules_to_save``."""

    def __init__(self, module: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter = adapter_name
        self.disable_adapters = False
        self.add_adapter(adapter_name)

    def add_adapter(self, name: str) -> None:
        trained = copy.deepcopy(self.original_module)
        trained.requires_grad_(True)
        self.modules_to_save[name] = trained

    def active_module(self) -> nn.Module:
        if self.disable_adapters or self.active_adapter not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[self.active_adapter]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.active_module()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Code reading the wrapped module's attributes (weight, out_features...) sees the active copy.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("original_module", "modules_to_save"):
                raise
            return getattr(self.active_module(), name)


# -- choosing layers ----------------------------------------------------------------------------
def _matches(module_name: str, patterns: list[str] | str | None) -> bool:
    """peft's rule: a string is a regular expression for the whole name; a list holds names or dotted suffixes."""
    if patterns is None:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, module_name) is not None
    return any(module_name == pattern or module_name.endswith("." + pattern) for pattern in patterns)


def _layer_index_allowed(module_name: str, config: LoraConfig) -> bool:
    if config.layers_to_transform is None:
        return True
    allowed = [config.layers_to_transform] if isinstance(config.layers_to_transform, int) else config.layers_to_transform
    pattern = config.layers_pattern or ["layers", "h", "layer", "blocks", "block"]
    pattern = [pattern] if isinstance(pattern, str) else pattern
    match = re.match(rf".*\.(?:{'|'.join(map(re.escape, pattern))})\.(\d+)\.", module_name)
    return match is not None and int(match.group(1)) in allowed


def _output_layer_names(model: nn.Module) -> set[str]:
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    return {name for name, module in model.named_modules() if output is not None and module is output}


def resolve_config(model: nn.Module, config: LoraConfig) -> LoraConfig:
    """A copy of ``config`` with what the model decides filled in: default targets, "all-linear"
    as the list of layers it stands for, the task's heads in modules_to_save."""
    config = copy.deepcopy(config)
    heads = _TASK_HEADS.get(config.task_type or "", [])
    if heads:
        config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), *heads]))
    if config.target_modules is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULT_TARGET_MODULES:
            raise ConfigError(
                f"LoraConfig: target_modules is not set and torchformers has no default for model_type "
                f"{model_type!r}; pass target_modules (layer names, a regular expression or 'all-linear')."
            )
        config.target_modules = list(DEFAULT_TARGET_MODULES[model_type])
    elif config.target_modules == "all-linear":
        skipped = _output_layer_names(model)
        config.target_modules = sorted(
            name for name, module in model.named_modules()
            if layer_features(module) is not None and name not in skipped
            and not _matches(name, config.modules_to_save) and not _WRAPPER_PARTS.search(name)
        )
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
    return config


def _is_embedding(module: nn.Module) -> bool:
    return isinstance(module, (nn.Embedding, LoraEmbedding))


def _is_target(module_name: str, config: LoraConfig) -> bool:
    if _WRAPPER_PARTS.search(module_name) or _matches(module_name, config.exclude_modules):
        return False
    if not _matches(module_name, config.target_modules):
        return False
    return isinstance(config.target_modules, str) or _layer_index_allowed(module_name, config)


# -- the adapted model --------------------------------------------------------------------------
class _Delegating(nn.Module):
    """Attributes this wrapper lacks are read from the module it wraps (named by ``_wrapped``)."""

    _wrapped: ClassVar[str]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == self._wrapped:
                raise
            return getattr(super().__getattr__(self._wrapped), name)


class LoraModel(_Delegating):
    """The model with its LoRA layers (``self.model``) and the adapters' configs (``peft_config``)."""

    _wrapped = "model"

    def __init__(self, model: nn.Module, config: LoraConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self.model = model
        self.peft_config: dict[str, LoraConfig] = {}
        self.active_adapter = adapter_name
        self.inject_adapter(adapter_name, config)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def lora_layers(self) -> dict[str, LoraLayer]:
        return {name: module for name, module in self.model.named_modules() if isinstance(module, LoraLayer)}

    def saved_modules(self) -> dict[str, ModulesToSaveWrapper]:
        return {name: module for name, module in self.model.named_modules() if isinstance(module, ModulesToSaveWrapper)}

    def inject_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        """Add an adapter: LoRA layers on the targeted layers, trained copies of modules_to_save."""
        if adapter_name in self.peft_config:
            raise ConfigError(f"an adapter named {adapter_name!r} already exists; pick another name.")
        config = resolve_config(self.model, config)
        if config.bias != "none" and any(other.bias != "none" for other in self.peft_config.values()):
            raise ConfigError("only one adapter may train biases (bias='all' or 'lora_only'); set bias='none'.")
        # Everything is checked before the model changes, so a refused config leaves it as it was.
        targets = [name for name, module in self.model.named_modules() if name and _is_target(name, config)]
        if not targets:
            shown = sorted({name.rpartition(".")[2] for name, module in self.model.named_modules()
                            if layer_features(module) is not None})
            raise ConfigError(
                f"LoraConfig: target_modules={config.target_modules!r} matches no module of "
                f"{type(self.model).__name__}; its linear layers are named {shown}."
            )
        for name in targets:
            module = self.model.get_submodule(name)
            if _is_embedding(module):
                if config.use_dora:
                    raise UnsupportedArgumentError(
                        f"LoraConfig: use_dora=True on the embedding {name!r} is not supported by torchformers; "
                        "DoRA adapts linear layers here."
                    )
            elif layer_features(module) is None:
                raise UnsupportedArgumentError(
                    f"LoraConfig: target module {name!r} is a {type(module).__name__}; LoRA adapts linear layers "
                    "(nn.Linear, GPT-2's Conv1D, quantized linear layers) and nn.Embedding. List it in "
                    "modules_to_save to train it in full."
                )
        for name, module in list(self.model.named_modules()):
            if name and not _WRAPPER_PARTS.search(name) and _matches(name, config.modules_to_save):
                if isinstance(module, ModulesToSaveWrapper):
                    module.add_adapter(adapter_name)
                elif not isinstance(module, LoraLayer):
                    self.model.set_submodule(name, ModulesToSaveWrapper(module, adapter_name))
        for name in targets:
            module = self.model.get_submodule(name)
            if not isinstance(module, LoraLayer):
                if _is_embedding(module):
                    module = LoraEmbedding(module)
                else:
                    if config.fan_in_fan_out != isinstance(module, Conv1D):
                        logger.info("LoraConfig: fan_in_fan_out=%s does not describe %s; using the layer's own "
                                    "layout.", config.fan_in_fan_out, name)
                    module = LoraLinear(module)
                self.model.set_submodule(name, module)
            rank, scaling = config.scaling_for(name)
            module.add_adapter(adapter_name, rank, scaling, config.lora_dropout, config.init_lora_weights,
                               dora=config.use_dora)
        self.peft_config[adapter_name] = config
        if len(self.peft_config) == 1:
            self.model.requires_grad_(False)
        self.set_adapter(self.active_adapter if self.active_adapter in self.peft_config else adapter_name)

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the adapter that runs and trains (unless loaded for inference)."""
        if adapter_name not in self.peft_config:
            raise ConfigError(f"no adapter named {adapter_name!r}; the model has {sorted(self.peft_config)}.")
        self.active_adapter = adapter_name
        trainable = not self.peft_config[adapter_name].inference_mode
        for layer in self.lora_layers().values():
            layer.active_adapters = [adapter_name] if adapter_name in layer.adapter_names() else []
            layer.set_trainable(adapter_name, trainable)
        for wrapper in self.saved_modules().values():
            wrapper.active_adapter = adapter_name
            for name, module in wrapper.modules_to_save.items():
                module.requires_grad_(trainable and name == adapter_name)
        self._set_bias_training(self.peft_config[adapter_name].bias, trainable)

    def _set_bias_training(self, bias: str, trainable: bool) -> None:
        if bias == "all":
            for name, param in self.model.named_parameters():
                if name.endswith("bias") and ".original_module." not in name:
                    param.requires_grad_(trainable)
        elif bias == "lora_only":
            for layer in self.lora_layers().values():
                if layer.bias is not None:
                    layer.bias.requires_grad_(trainable)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        layers = [*self.lora_layers().values(), *self.saved_modules().values()]
        previous = [layer.disable_adapters for layer in layers]
        for layer in layers:
            layer.disable_adapters = True
        try:
            yield
        finally:
            for layer, state in zip(layers, previous, strict=True):
                layer.disable_adapters = state

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ConfigError(f"no adapter named {adapter_name!r}; the model has {sorted(self.peft_config)}.")
        del self.peft_config[adapter_name]
        for layer in self.lora_layers().values():
            layer.remove_adapter(adapter_name)
        for wrapper in self.saved_modules().values():
            wrapper.modules_to_save.pop(adapter_name, None)
        if self.active_adapter == adapter_name and self.peft_config:
            self.set_adapter(next(iter(self.peft_config)))

    def _unwrap(self, merge: bool, adapter_names: list[str] | None, safe_merge: bool = False) -> nn.Module:
        for name, layer in self.lora_layers().items():
            base = layer.merge(adapter_names or layer.active_adapters, safe_merge) if merge else layer.base_layer
            self.model.set_submodule(name, base)
        for name, wrapper in self.saved_modules().items():
            self.model.set_submodule(name, wrapper.active_module() if merge else wrapper.original_module)
        return self.model

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        return self._unwrap(True, adapter_names, safe_merge)

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        """Add the active adapter (or ``adapter_names``) into the frozen weights, keeping the LoRA layers:
        forwards then run the frozen layers alone, until :meth:`unmerge_adapter` takes them out again."""
        for layer in self.lora_layers().values():
            layer.merge(adapter_names or layer.active_adapters, safe_merge)

    def unmerge_adapter(self) -> None:
        """Take merged adapters back out of the frozen weights."""
        for layer in self.lora_layers().values():
            layer.unmerge()

    def enable_adapter_layers(self) -> None:
        """Switch the adapters back on (after :meth:`disable_adapter_layers`)."""
        self._switch_adapters(disabled=False)

    def disable_adapter_layers(self) -> None:
        """Run the model without its adapters (merged ones are taken back out of the weights) until
        :meth:`enable_adapter_layers`; ``disable_adapter()`` is the same as a context manager."""
        self._switch_adapters(disabled=True)

    def _switch_adapters(self, disabled: bool) -> None:
        for layer in (*self.lora_layers().values(), *self.saved_modules().values()):
            if disabled and isinstance(layer, LoraLayer):
                layer.unmerge()
            layer.disable_adapters = disabled

    def set_requires_grad(self, adapter_names: str | list[str], requires_grad: bool = True) -> None:
        """Train (or freeze) the named adapters' weights, whichever adapter is active."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        unknown = [name for name in names if name not in self.peft_config]
        if unknown:
            raise ConfigError(f"no adapter named {unknown[0]!r}; the model has {sorted(self.peft_config)}.")
        for layer in self.lora_layers().values():
            layer.set_requires_grad(names, requires_grad)
        for wrapper in self.saved_modules().values():
            for name in names:
                if name in wrapper.modules_to_save:
                    wrapper.modules_to_save[name].requires_grad_(requires_grad)

    def unload(self) -> nn.Module:
        return self._unwrap(False, None)


class PeftModel(_Delegating):
    """A model with LoRA adapters, as ``peft.PeftModel``: runs, trains, saves and loads the adapters.

    Attributes the wrapper does not have (``config``, ``device``...) are the wrapped model's.
    """

    _wrapped = "base_model"

    def __init__(self, model: nn.Module, peft_config: LoraConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self.base_model = LoraModel(model, peft_config, adapter_name)

    @property
    def peft_config(self) -> dict[str, LoraConfig]:
        return self.base_model.peft_config

    @property
    def active_adapter(self) -> str:
        return self.base_model.active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return [self.base_model.active_adapter]

    def get_base_model(self) -> nn.Module:
        return self.base_model.model

    @property
    def forward(self) -> Callable[..., Any]:
        """Calls the wrapped model, and shows its signature: code that reads a model's inputs from
        ``inspect.signature(model.forward)`` (the Trainer's column and label detection) sees
        ``input_ids``, ``labels``... rather than ``*args, **kwargs``."""
        model = self.base_model.model

        def forward(*args: Any, **kwargs: Any) -> Any:
            return model(*args, **kwargs)

        forward.__signature__ = inspect.signature(model.forward)
        return forward

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model.model.generate(*args, **kwargs)

    # -- adapters ---------------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, peft_config: LoraConfig) -> None:
        """Add another adapter (it does not become the active one; see :meth:`set_adapter`)."""
        self.base_model.inject_adapter(adapter_name, peft_config)

    def set_adapter(self, adapter_name: str) -> None:
        self.base_model.set_adapter(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        self.base_model.delete_adapter(adapter_name)

    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", svd_rank: int | None = None, **kwargs: Any) -> None:
        """A new adapter that combines ``adapters`` with ``weights`` (see :func:`~torchformers.peft.combine.add_weighted_adapter`)."""
        from .combine import add_weighted_adapter

        add_weighted_adapter(self.base_model, adapters, weights, adapter_name, combination_type, svd_rank, **kwargs)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the model without its adapters inside the ``with`` block."""
        with self.base_model.disable_adapter():
            yield

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        """Fold the active adapter (or ``adapter_names``) into the frozen weights and return the plain model."""
        return self.base_model.merge_and_unload(progressbar, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        """Remove every adapter and return the plain model, unchanged."""
        return self.base_model.unload()

    # -- counting ---------------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts; a quantized layer counts its weight's elements."""
        trainable = total = 0
        for param in self.parameters():
            total += param.numel()
            trainable += param.numel() if param.requires_grad else 0
        total += sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, QuantizedLinear))
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    # -- saving and loading -----------------------------------------------------------------------
    def adapter_state_dict(self, adapter_name: str = "default", state_dict: dict[str, torch.Tensor] | None = None,
                           save_embedding_layers: bool | str = "auto") -> dict[str, torch.Tensor]:
        """The adapter's tensors under the names ``adapter_model.safetensors`` uses (adapter name left out),
        taken from the model or from ``state_dict`` (the whole model's, as ``state_dict()`` names it).

        ``save_embedding_layers`` adds the input and output embeddings' full weights: ``"auto"``
        when ``embed_tokens`` or ``lm_head`` is a target (peft's rule), ``True`` always, ``False`` never.
        """
        if save_embedding_layers not in (True, False, "auto"):
            raise ConfigError(f"save_embedding_layers must be True, False or 'auto', got {save_embedding_layers!r}.")
        config = self.peft_config[adapter_name]
        state = {}
        tensors = self.named_parameters() if state_dict is None else state_dict.items()
        for name, param in tensors:
            key = _adapter_file_key(name, adapter_name)
            if key is not None:
                state[key] = param
            elif f".modules_to_save.{adapter_name}." in name:
                state[name.replace(f".modules_to_save.{adapter_name}.", ".", 1)] = param
            elif name.endswith("bias") and ".lora_" not in name and ".modules_to_save." not in name:
                if config.bias == "all" and ".original_module." not in name:
                    state[name] = param
                elif config.bias == "lora_only" and name.endswith(".base_layer.bias"):
                    state[name] = param
        prefixes = self._saved_embedding_prefixes(config, save_embedding_layers)
        if prefixes:
            everything = self.state_dict(keep_vars=True) if state_dict is None else state_dict
            state.update({name: tensor for name, tensor in everything.items() if name.startswith(prefixes)})
        return {name: tensor.detach() for name, tensor in state.items()}

    def _saved_embedding_prefixes(self, config: LoraConfig, save: bool | str) -> tuple[str, ...]:
        """Where the embeddings ``save_embedding_layers`` asks for sit. peft's rules: with ``"auto"``, an
        adapter on ``embed_tokens`` or ``lm_head`` saves the adapted embeddings' own weights (the
        vocabulary may have grown); with ``True`` and no embedding adapted, the plain embeddings."""
        targets = config.target_modules
        base = self.get_base_model()
        if isinstance(targets, str):
            targeted = targets != "all-linear" and any(
                re.fullmatch(targets, name) for name, _ in base.named_modules()
                if re.match(rf"(.*\.)?({'|'.join(_EMBEDDING_LAYER_NAMES)})$", name)
            )
        else:
            targeted = any(name in (targets or ()) for name in _EMBEDDING_LAYER_NAMES)
        if save is False or (save == "auto" and not targeted):
            return ()
        layers = [base.get_input_embeddings(), base.get_output_embeddings()]
        names = {id(module): name for name, module in self.named_modules()}
        if targeted:
            return tuple(f"{names[id(layer.base_layer)]}." for layer in layers
                         if isinstance(layer, LoraLayer) and isinstance(layer.base_layer, (nn.Linear, nn.Embedding)))
        return tuple(f"{names[id(layer)]}." for layer in layers if layer is not None and id(layer) in names)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        selected_adapters: list[str] | None = None,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        save_embedding_layers: bool | str = "auto",
        path_initial_model_for_weight_conversion: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        """Write each adapter's ``adapter_config.json`` and ``adapter_model.safetensors``: the
        ``default`` adapter into ``save_directory``, others into a subdirectory named after them.
        ``state_dict`` (the whole model's) supplies the tensors instead of the model, and
        ``save_embedding_layers`` adds the embeddings' weights (see :meth:`adapter_state_dict`), as in peft.

        ``path_initial_model_for_weight_conversion``: the directory where a PiSSA or OLoRA adapter
        was saved right after it was made. The adapter is then saved as the plain LoRA adapter of
        what training changed, ``BA - B0 A0`` (rank doubled: A and A0 stacked, B and -B0 side by
        side), which works on the original model without rewriting its weights, as peft does.
        """
        if kwargs:
            raise UnsupportedArgumentError(f"save_pretrained() got unsupported arguments {sorted(kwargs)}.")
        if not safe_serialization:
            raise UnsupportedArgumentError("safe_serialization=False is not supported: adapters are saved as safetensors.")
        if os.path.isfile(save_directory):
            raise ConfigError(f"{describe_path(save_directory)} is a file; save_pretrained needs a directory.")
        if not is_main_process:
            return
        for adapter_name in selected_adapters or list(self.peft_config):
            if adapter_name not in self.peft_config:
                raise ConfigError(f"no adapter named {adapter_name!r}; the model has {sorted(self.peft_config)}.")
            directory = save_directory if adapter_name == "default" else os.path.join(save_directory, adapter_name)
            tensors = self.adapter_state_dict(adapter_name, state_dict, save_embedding_layers)
            config = copy.deepcopy(self.peft_config[adapter_name])
            config.inference_mode = True
            if path_initial_model_for_weight_conversion is not None:
                tensors, config = _as_plain_lora(tensors, config, path_initial_model_for_weight_conversion)
            os.makedirs(directory, exist_ok=True)
            save_safetensors(tensors, os.path.join(directory, ADAPTER_SAFE_WEIGHTS_NAME))
            config.save_pretrained(directory)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike,
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: LoraConfig | None = None,
        **kwargs: Any,
    ) -> PeftModel:
        """Put the adapter saved in ``model_id`` (a directory or hub id) onto ``model``.

        With ``is_trainable=False`` (the default, as in peft) the adapter is frozen and the
        model is put in eval mode. Hub options: ``revision``, ``cache_dir``, ``token``,
        ``local_files_only``, ``subfolder``.
        """
        hub_options = hub_kwargs(kwargs)
        config = config if config is not None else _load_adapter_config(model_id, hub_options)
        config = copy.deepcopy(config)
        config.inference_mode = not is_trainable
        peft_class = MODEL_TYPE_TO_PEFT_MODEL.get(config.task_type or "", cls) if cls is PeftModel else cls
        peft_model = peft_class(model, config, adapter_name)
        peft_model._load_adapter_weights(model_id, adapter_name, hub_options)
        if not is_trainable:
            peft_model.eval()
        return peft_model

    def load_adapter(self, model_id: str | os.PathLike, adapter_name: str, is_trainable: bool = False,
                     **kwargs: Any) -> None:
        """Load another saved adapter under ``adapter_name``; the active adapter does not change."""
        hub_options = hub_kwargs(kwargs)
        config = _load_adapter_config(model_id, hub_options)
        config.inference_mode = not is_trainable
        self.base_model.inject_adapter(adapter_name, config)
        self._load_adapter_weights(model_id, adapter_name, hub_options)
        if not is_trainable:
            self.eval()

    def _load_adapter_weights(self, model_id: str | os.PathLike, adapter_name: str, hub_options: dict[str, Any]) -> None:
        tensors, path = read_adapter_weights(model_id, hub_options)
        self.load_adapter_state_dict(tensors, adapter_name, describe_path(path))

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor], adapter_name: str = "default",
                                source: str = "the adapter state dict") -> None:
        """Copy an adapter's tensors (``adapter_model.safetensors`` names) into ``adapter_name``.

        Every tensor must land on a parameter of the same shape and every LoRA weight of the
        adapter must be given: an adapter saved for another base model is refused, naming the
        first tensor that does not fit.
        """
        params = dict(self.named_parameters(remove_duplicate=False))  # a tied embedding is saved under both names
        adapter_weights = {key: name for name in params
                           if (key := _adapter_file_key(name, adapter_name)) is not None}
        wrappers = [PREFIX + name for name in self.base_model.saved_modules()]
        base_name = self.peft_config[adapter_name].base_model_name_or_path
        trained_on = f" (its adapter_config.json names {base_name})" if base_name else ""
        filled = set()
        for key, tensor in tensors.items():
            name = adapter_weights.get(key) or _saved_module_name(key, adapter_name, wrappers)
            target = params.get(name)
            if target is None:
                raise WeightsMismatchError(
                    f"{source}: tensor {key!r} has no place in {type(self.get_base_model()).__name__}{trained_on}: "
                    "the adapter was saved for another base model or with other target_modules."
                )
            if tuple(tensor.shape) != tuple(target.shape):
                raise WeightsMismatchError(
                    f"{source}: tensor {key!r} has shape {list(tensor.shape)} but this base model needs "
                    f"{list(target.shape)}: the adapter belongs to another base model{trained_on}."
                )
            with torch.no_grad():
                target.copy_(tensor)
            filled.add(name)
        missing = [name for name in adapter_weights.values() if name not in filled]
        if missing:
            raise WeightsMismatchError(
                f"{source} lacks {len(missing)} LoRA weights of adapter {adapter_name!r}, such as {missing[0]!r}: "
                "its adapter_config.json targets layers its weights do not cover. torchformers never fills "
                "adapter weights randomly."
            )


def _as_plain_lora(tensors: dict[str, torch.Tensor], config: LoraConfig,
                   initial: str | os.PathLike) -> tuple[dict[str, torch.Tensor], LoraConfig]:
    """A trained PiSSA/OLoRA adapter as the plain LoRA adapter of its change since ``initial`` (see
    :meth:`PeftModel.save_pretrained`): same outputs on the original model, twice the rank."""
    if config.use_dora or (config.use_rslora and (config.rank_pattern or config.alpha_pattern)):
        raise UnsupportedArgumentError(
            "path_initial_model_for_weight_conversion converts plain LoRA factors; DoRA adapters, and rank or alpha "
            "patterns with use_rslora, are not supported."
        )
    start, _ = read_adapter_weights(initial, {})
    converted = {}
    for key, tensor in tensors.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue  # as peft: the converted file holds the factors only
        if key not in start:
            raise WeightsMismatchError(f"{describe_path(initial)} has no tensor {key!r}: it is not the saved start of "
                                       "this adapter.")
        if ".lora_A." in key:
            converted[key] = torch.cat([tensor, start[key]], dim=0)
        else:
            converted[key] = torch.cat([tensor, -start[key]], dim=1)
    # Rank doubled, scale kept: alpha doubles too (times sqrt(2) with rank-stabilized scaling).
    config = copy.deepcopy(config)
    config.init_lora_weights = True
    config.r *= 2
    config.lora_alpha *= 2**0.5 if config.use_rslora else 2
    config.rank_pattern = {key: 2 * value for key, value in config.rank_pattern.items()}
    config.alpha_pattern = {key: 2 * value for key, value in config.alpha_pattern.items()}
    return converted, config


def read_adapter_weights(model_id: str | os.PathLike, hub_options: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a saved adapter (``adapter_model.safetensors``, else ``adapter_model.bin``
    read with ``weights_only=True``) and the file they came from."""
    path = resolve_file(model_id, ADAPTER_SAFE_WEIGHTS_NAME, required=False, **hub_options)
    if path is not None:
        reader = SafetensorsFile(path)
        return {name: reader.tensor(name) for name in reader.keys()}, path  # noqa: SIM118 - not a dict
    path = resolve_file(model_id, ADAPTER_WEIGHTS_NAME, required=False, **hub_options)
    if path is None:
        raise WeightsMismatchError(
            f"{model_id} has no {ADAPTER_SAFE_WEIGHTS_NAME} (nor {ADAPTER_WEIGHTS_NAME}); an adapter "
            "directory holds adapter_config.json and the adapter's weights."
        )
    return load_torch_bin(path), path


def _adapter_file_key(name: str, adapter_name: str) -> str | None:
    """The ``adapter_model.safetensors`` key of parameter ``name`` if it is one of adapter
    ``adapter_name``'s LoRA weights (peft's naming: the adapter name left out, and DoRA's
    magnitudes without ".weight"), else None."""
    for part in (".lora_A.", ".lora_B."):
        if f"{part}{adapter_name}." in name:
            return name.replace(f"{part}{adapter_name}.", part, 1)
    if name.endswith(f".lora_magnitude_vector.{adapter_name}.weight"):
        return name.removesuffix(f".{adapter_name}.weight")
    if name.endswith((f".lora_embedding_A.{adapter_name}", f".lora_embedding_B.{adapter_name}")):
        return name.removesuffix(f".{adapter_name}")
    return None


def _saved_module_name(key: str, adapter_name: str, wrappers: list[str]) -> str:
    """Our parameter name for a file key that is not a LoRA weight: inside a module trained in full
    (modules_to_save), the adapter's copy; anything else (biases, embeddings) keeps its name."""
    for wrapper in wrappers:
        if key.startswith(wrapper + "."):
            return f"{wrapper}.modules_to_save.{adapter_name}.{key[len(wrapper) + 1:]}"
    return key


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hub options (revision, cache_dir, token...) among ``kwargs``; any other key is refused."""
    allowed = {"revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise UnsupportedArgumentError(f"loading an adapter got unsupported arguments {unknown}.")
    return {key: value for key, value in kwargs.items() if value is not None}


def _load_adapter_config(model_id: str | os.PathLike, hub_options: dict[str, Any]) -> LoraConfig:
    return LoraConfig.from_json_file(resolve_file(model_id, ADAPTER_CONFIG_NAME, **hub_options))


class PeftModelForCausalLM(PeftModel):
    """A causal language model with LoRA adapters."""


class PeftModelForSequenceClassification(PeftModel):
    """A sequence classifier with LoRA adapters; its classification head trains in full."""


class PeftModelForTokenClassification(PeftModel):
    """A token classifier with LoRA adapters; its classification head trains in full."""


class PeftModelForQuestionAnswering(PeftModel):
    """An extractive question-answering model with LoRA adapters; its span head trains in full."""


class PeftModelForFeatureExtraction(PeftModel):
    """An encoder producing features, with LoRA adapters."""


MODEL_TYPE_TO_PEFT_MODEL: dict[str, type[PeftModel]] = {
    TaskType.CAUSAL_LM.value: PeftModelForCausalLM,
    TaskType.SEQ_CLS.value: PeftModelForSequenceClassification,
    TaskType.TOKEN_CLS.value: PeftModelForTokenClassification,
    TaskType.QUESTION_ANS.value: PeftModelForQuestionAnswering,
    TaskType.FEATURE_EXTRACTION.value: PeftModelForFeatureExtraction,
}


def get_peft_model(model: nn.Module, peft_config: LoraConfig, adapter_name: str = "default",
                   **kwargs: Any) -> PeftModel:
    """Freeze ``model`` and add a trainable LoRA adapter; returns the wrapped model (peft's function).

    The model is changed in place (its targeted layers become :class:`LoraLinear` or :class:`LoraEmbedding`).
    """
    kwargs.pop("autocast_adapter_dtype", None)  # adapters are float32 here, which is peft's default
    if kwargs.pop("mixed", False):
        raise UnsupportedArgumentError("get_peft_model(mixed=True) is not supported: torchformers has LoRA only.")
    if kwargs:
        raise UnsupportedArgumentError(f"get_peft_model() got unsupported arguments {sorted(kwargs)}.")
    if not isinstance(peft_config, LoraConfig):
        raise UnsupportedArgumentError(f"get_peft_model() takes a LoraConfig, got {type(peft_config).__name__}.")
    peft_class = MODEL_TYPE_TO_PEFT_MODEL.get(peft_config.task_type or "", PeftModel)
    return peft_class(model, peft_config, adapter_name)
