"""PreTrainedModel: loading, saving and the model-level utilities every family shares.

``from_pretrained`` builds the model on the meta device (no memory, no random init),
then assigns the checkpoint's tensors in place: safetensors tensors are views of a memory
map, so a model whose stored dtype is the one asked for is never copied while loading.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from .config import REMOTE_CODE_MESSAGE, PretrainedConfig, parse_dtype
from .errors import (
    ConfigError,
    RemoteCodeError,
    UnsupportedArgumentError,
    WeightsMismatchError,
    describe_path,
)
from .files import atomic_write_text
from .generation.config import GenerationConfig
from .hub import resolve_file
from .nn.attention import check_attn_implementation
from .weights.checkpoint import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    resolve_checkpoint,
    with_variant,
)
from .weights.gguf import resolve_gguf
from .weights.gguf_checkpoint import GGUFCheckpoint
from .weights.safetensors import save_safetensors

logger = logging.getLogger("torchformers")

# Options of the reference library's from_pretrained that torchformers does not offer (yet),
# with what to do instead. They raise rather than being ignored.
_UNSUPPORTED_LOAD_OPTIONS = {
    "load_in_8bit": "bitsandbytes is not used; pass quantization_config=WeightOnlyConfig(bits=8) "
                    "(torchformers.quantization) instead.",
    "load_in_4bit": "bitsandbytes is not used; pass quantization_config=WeightOnlyConfig(bits=4) "
                    "(torchformers.quantization) instead.",
    "max_memory": "device_map places the whole model on one device, or follows an explicit dict.",
    "offload_folder": "offloading weights to disk is not supported.",
    "offload_state_dict": "offloading weights to disk is not supported.",
    "offload_buffers": "offloading is not supported.",
    "tp_plan": "tensor parallelism is not supported.",
    "tp_size": "tensor parallelism is not supported.",
    "device_mesh": "tensor parallelism is not supported.",
    "key_mapping": "checkpoint keys must use the reference library's names.",
    "from_tf": "TensorFlow checkpoints are not supported; convert to safetensors.",
    "from_flax": "Flax checkpoints are not supported; convert to safetensors.",
    "state_dict": "pass a directory; or build with from_config and call load_state_dict.",
    "use_kernels": "hub kernels are not supported.",
    "adapter_name": "adapters are not supported by this version of torchformers.",
    "adapter_kwargs": "adapters are not supported by this version of torchformers.",
    "proxies": "configure proxies through huggingface_hub's environment variables.",
}
# Legacy parameter names of early checkpoints -> current ones (the reference renames them too).
_LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
_SIZE_UNITS = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
               "TB": 10**12, "B": 1}


def parse_size(size: int | str) -> int:
    """Bytes in ``5GB`` (10**9 based), ``5GiB`` (2**30 based) or a plain integer."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]I?B|B)\s*", str(size).upper())
    if not match:
        raise UnsupportedArgumentError(f"max_shard_size={size!r} is not a size such as '5GB' or '500MB'.")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def resolve_device_map(device_map: Any) -> dict[str, torch.device]:
    """Normalize ``device_map`` to {module prefix: device}; the prefix "" covers everything.

    ``"auto"`` (and the reference's ``"balanced"``/``"sequential"``) places the whole model on
    the first CUDA device when there is one, else on the CPU: torchformers does not split a
    model across devices on its own; pass a dict to do that.
    """
    if device_map is None:
        return {"": torch.device("cpu")}
    if isinstance(device_map, str) and device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return {"": torch.device("cuda:0" if torch.cuda.is_available() else "cpu")}
    if isinstance(device_map, dict):
        return {prefix: _as_device(device) for prefix, device in device_map.items()}
    return {"": _as_device(device_map)}


def _as_device(device: Any) -> torch.device:
    if isinstance(device, int):
        return torch.device("cuda", device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UnsupportedArgumentError(f"device_map names an unknown device {device!r}.") from None


def _device_for(name: str, device_map: dict[str, torch.device]) -> torch.device:
    best = None
    for prefix in device_map:
        if prefix == "" or name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        raise UnsupportedArgumentError(
            f"device_map does not place {name!r}; add its module (or a '' entry for the rest) to the dict."
        )
    return device_map[best]


def _move_to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_move_to(v, device) for v in value)
    return value


_INIT_FUNCTIONS = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                   "xavier_normal_", "trunc_normal_", "zeros_", "ones_", "constant_")


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Make ``torch.nn.init`` functions no-ops while a model is built for loading.

    On the meta device they cost no memory, but some (``normal_``) run through torch's
    decomposition machinery, whose first use imports ``torch._dynamo`` and sympy: over a
    second and ~75 MB for values that the checkpoint replaces anyway.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


class PreTrainedModel(nn.Module):
    """Base class of every model: the reference library's loading, saving and utilities.

    A family subclass sets ``config_class`` and ``base_model_prefix``, builds its modules in
    ``__init__`` (calling :meth:`post_init` at the end) and may declare
    ``_tied_weights_keys`` ({tied parameter: parameter it shares}) and
    ``_new_head_prefixes`` (modules a checkpoint may lack because the user asked for a new
    task head: they are initialized with a warning; any other missing weight is an error).
    """

    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    base_model_prefix: ClassVar[str] = "model"
    main_input_name: ClassVar[str] = "input_ids"
    supports_gradient_checkpointing: ClassVar[bool] = True
    _tied_weights_keys: ClassVar[dict[str, str]] = {}
    _new_head_prefixes: ClassVar[tuple[str, ...]] = ()
    _no_split_modules: ClassVar[list[str]] = []

    def __init__(self, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise ConfigError(f"{type(self).__name__} needs a PretrainedConfig, got {type(config).__name__}.")
        if args or kwargs:
            raise UnsupportedArgumentError(f"{type(self).__name__}() takes only a config.")
        self.config = config
        self.name_or_path = config.name_or_path
        config._attn_implementation = check_attn_implementation(getattr(config, "_attn_implementation", None))
        self.generation_config = GenerationConfig.from_model_config(config) if self.can_generate() else None

    # -- construction and initialization ------------------------------------------------
    def post_init(self) -> None:
        """Initialize weights (a no-op on the meta device) and tie them; call at the end of ``__init__``."""
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        """The reference library's initialization: normal(0, initializer_range), norms at one."""
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not module.weight.is_meta:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif hasattr(module, "weight") and "Norm" in type(module).__name__:
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate") and cls.__name__.endswith(("ForCausalLM", "LMHeadModel"))

    @classmethod
    def from_config(cls, config: PretrainedConfig, dtype: Any = None, **kwargs: Any) -> PreTrainedModel:
        """A randomly initialized model (the reference's initialization) for ``config``."""
        torch_dtype = kwargs.pop("torch_dtype", None)
        attn_implementation = kwargs.pop("attn_implementation", None)
        if kwargs:
            raise UnsupportedArgumentError(f"from_config() got unsupported arguments {sorted(kwargs)}.")
        config = copy.deepcopy(config)
        # An explicit argument wins; otherwise a choice already made on the config stands.
        config._attn_implementation = check_attn_implementation(
            attn_implementation or getattr(config, "_attn_implementation", None)
        )
        model = cls(config)
        dtype = parse_dtype(dtype if dtype is not None else torch_dtype)
        if dtype is not None:
            model.to(dtype)
            model.config.dtype = dtype
            model._reset_computed_buffers({"": model.device})  # `to` also cast them; they stay float32
        return model

    def _reset_computed_buffers(self, device_map: dict[str, torch.device]) -> None:
        """Recompute buffers that are derived, not stored (rotary frequencies), on their devices."""
        for module_name, module in self.named_modules():
            if hasattr(module, "reset_buffers"):
                module.reset_buffers(_device_for(module_name, device_map))

    # -- weight tying --------------------------------------------------------------------
    def tied_weight_keys(self) -> dict[str, str]:
        """The tied pairs in force for this config ({parameter: parameter it shares})."""
        return dict(self._tied_weights_keys) if getattr(self.config, "tie_word_embeddings", False) else {}

    def tie_weights(self) -> None:
        for target, source in self.tied_weight_keys().items():
            target_module, _, target_name = target.rpartition(".")
            setattr(self.get_submodule(target_module), target_name, self.get_parameter(source))

    # -- embeddings ----------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        base = getattr(self, self.base_model_prefix, self)
        if base is self:
            raise UnsupportedArgumentError(f"{type(self).__name__} has no input embeddings.")
        return base.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        base = getattr(self, self.base_model_prefix, self)
        if base is self:
            raise UnsupportedArgumentError(f"{type(self).__name__} has no input embeddings.")
        base.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return None

    def set_output_embeddings(self, value: nn.Module) -> None:
        raise UnsupportedArgumentError(f"{type(self).__name__} has no output embeddings.")

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Grow or shrink the vocabulary; returns the new input embedding.

        New rows start at the mean of the old embeddings with ``mean_resizing=True`` (the
        reference adds a tiny random perturbation around that mean; here it is exactly the
        mean, so resizing is deterministic) and follow the normal init otherwise. An untied
        output embedding is resized the same way and ``config.vocab_size`` is updated.
        """
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        if not isinstance(old, nn.Embedding):
            raise UnsupportedArgumentError(
                f"resize_token_embeddings(): the input embedding is a {type(old).__name__}, not a float "
                "nn.Embedding (a GGUF file loaded with dequantize=False keeps it quantized); load the model with "
                "dequantize=True to resize its vocabulary."
            )
        new_num_tokens = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens < 1:
            raise UnsupportedArgumentError(f"new_num_tokens must be positive, got {new_num_tokens}.")
        new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx,
                           device=old.weight.device, dtype=old.weight.dtype)
        new.weight.data = self._resized_rows(old.weight.data, new_num_tokens, mean_resizing)
        if new.padding_idx is not None and new.padding_idx >= new_num_tokens:
            new.padding_idx = None
        self.set_input_embeddings(new)
        output = self.get_output_embeddings()
        if output is not None and not self.tied_weight_keys():
            resized = nn.Linear(output.in_features, new_num_tokens, bias=output.bias is not None,
                                device=output.weight.device, dtype=output.weight.dtype)
            resized.weight.data = self._resized_rows(output.weight.data, new_num_tokens, mean_resizing)
            if output.bias is not None:
                bias = torch.zeros(new_num_tokens, dtype=output.bias.dtype, device=output.bias.device)
                keep = min(new_num_tokens, output.bias.shape[0])
                bias[:keep] = output.bias.data[:keep]
                resized.bias.data = bias
            self.set_output_embeddings(resized)
        self.config.vocab_size = new_num_tokens
        for source in self.tied_weight_keys().values():
            # A tied output bias (BERT's cls.predictions.bias) follows the vocabulary too.
            param = self.get_parameter(source)
            if param.ndim == 1 and param.shape[0] == old.num_embeddings != new_num_tokens:
                bias = param.new_zeros(new_num_tokens)
                keep = min(new_num_tokens, param.shape[0])
                bias[:keep] = param.data[:keep]
                param.data = bias
        self.tie_weights()
        tied_output = self.get_output_embeddings()
        if isinstance(tied_output, nn.Linear):
            tied_output.out_features = tied_output.weight.shape[0]  # tying swaps the weight, not the attribute
        for module in (self, self.base_model):
            if isinstance(getattr(module, "vocab_size", None), int):
                module.vocab_size = new_num_tokens
        return self.get_input_embeddings()

    def _resized_rows(self, weight: torch.Tensor, rows: int, mean_resizing: bool) -> torch.Tensor:
        keep = min(rows, weight.shape[0])
        resized = torch.empty(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        resized[:keep] = weight[:keep]
        if rows > keep:
            if mean_resizing:
                resized[keep:] = weight.float().mean(0).to(weight.dtype)
            else:
                nn.init.normal_(resized[keep:], std=getattr(self.config, "initializer_range", 0.02))
        return resized

    # -- properties and small utilities ----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (tied weights count once)."""
        excluded = set()
        if exclude_embeddings:
            excluded = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(
            p.numel() for p in self.parameters()
            if id(p) not in excluded and (p.requires_grad or not only_trainable)
        )

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Recompute each layer's activations in the backward pass instead of storing them."""
        if not self.supports_gradient_checkpointing:
            raise UnsupportedArgumentError(f"{type(self).__name__} does not support gradient checkpointing.")
        options = dict(gradient_checkpointing_kwargs or {})
        options.setdefault("use_reentrant", False)
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True
                module.checkpoint_options = options

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' output require a gradient, so that reentrant gradient checkpointing
        of frozen layers still reaches adapters inside them (what peft's QLoRA preparation asks for)."""
        def require_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self.disable_input_require_grads()
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(require_grad)

    def disable_input_require_grads(self) -> None:
        hook = self.__dict__.pop("_require_grads_hook", None)
        if hook is not None:
            hook.remove()

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: PretrainedConfig | str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        ignore_mismatched_sizes: bool = False,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        use_safetensors: bool | None = None,
        **kwargs: Any,
    ) -> PreTrainedModel:
        """Load a pretrained model from a directory, the hub cache or the hub.

        Keyword arguments follow the reference library: ``dtype`` (or ``torch_dtype``) is
        ``"auto"`` by default, as in the reference library's current release, so weights
        keep the dtype recorded in ``config.json`` (or stored in the file); pass
        ``dtype=torch.float32`` to force full precision. ``device_map`` takes a device, a
        ``{module: device}`` dict or ``"auto"`` (the first GPU, else the CPU).
        ``attn_implementation`` is ``"sdpa"`` (default) or ``"eager"``. Other keywords
        override config attributes; anything else raises UnsupportedArgumentError.
        ``output_loading_info=True`` also returns the missing, unexpected and mismatched keys.
        ``quantization_config`` (a ``torchformers.quantization.WeightOnlyConfig`` or its dict)
        quantizes the linear layers to int8 or int4 after loading; a checkpoint saved quantized
        loads quantized without it.
        ``gguf_file`` names a GGUF file in the directory or repository (a path to a ``.gguf``
        file works on its own too): config and weights come from it, dequantized to float32 by
        default, as in the reference library. ``dequantize=False`` (torchformers only) keeps the
        linear layers stored as Q8_0, Q4_0 or Q4_1 quantized, as int8 or int4 layers, and a token
        embedding stored so as a quantized embedding.
        """
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        if model_args:
            raise UnsupportedArgumentError(
                f"{cls.__name__}.from_pretrained() takes no extra positional arguments, got {len(model_args)}."
            )
        for option, advice in _UNSUPPORTED_LOAD_OPTIONS.items():
            if kwargs.get(option) not in (None, False):
                raise UnsupportedArgumentError(f"from_pretrained(): {option} is not supported: {advice}")
            kwargs.pop(option, None)
        dtype = kwargs.pop("dtype", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        dtype = dtype if dtype is not None else torch_dtype
        device_map = resolve_device_map(kwargs.pop("device_map", None))
        attn_implementation = kwargs.pop("attn_implementation", None)
        output_loading_info = kwargs.pop("output_loading_info", False)
        subfolder = kwargs.pop("subfolder", "")
        variant = kwargs.pop("variant", None)
        generation_config = kwargs.pop("generation_config", None)
        quantization_config = kwargs.pop("quantization_config", None)
        dequantize = kwargs.pop("dequantize", None)
        # Accepted for compatibility: loading is always low-memory here, as it is in the reference.
        kwargs.pop("low_cpu_mem_usage", None)
        kwargs.pop("_from_auto", None)
        hub_kwargs = {
            "cache_dir": cache_dir, "force_download": force_download, "local_files_only": local_files_only,
            "token": token, "revision": revision, "subfolder": subfolder,
        }

        gguf_path = resolve_gguf(pretrained_model_name_or_path, kwargs.pop("gguf_file", None), **hub_kwargs)
        config = cls._load_config(gguf_path or pretrained_model_name_or_path, config, kwargs, hub_kwargs)
        config._attn_implementation = check_attn_implementation(
            attn_implementation or getattr(config, "_attn_implementation", None)
        )
        if gguf_path is not None:
            checkpoint = GGUFCheckpoint([gguf_path], config=config)
        else:
            checkpoint = resolve_checkpoint(
                pretrained_model_name_or_path, use_safetensors=use_safetensors, variant=variant, **hub_kwargs
            )
        dtype = _resolve_dtype(dtype, config, checkpoint)
        config.dtype = dtype

        from .quantization.quantizer import plan_quantized_load  # imported only where used

        quantization = plan_quantized_load(config, quantization_config, str(pretrained_model_name_or_path),
                                           checkpoint, dequantize)
        with torch.device("meta"), no_init_weights():
            model = cls(config)
        if quantization is not None:
            quantization.before_loading(model)
        info = model._load_checkpoint(checkpoint, dtype, device_map, ignore_mismatched_sizes)
        if quantization is not None:
            quantization.after_loading(model)
        model.name_or_path = str(pretrained_model_name_or_path)
        if model.can_generate() and generation_config is None and gguf_path is not None:
            # As in the reference: a GGUF file's generation settings are its config's token ids.
            generation_config = GenerationConfig.from_model_config(config)
        if model.can_generate():
            model.generation_config = generation_config or _load_generation_config(
                pretrained_model_name_or_path, config, hub_kwargs
            )
        model.eval()
        return (model, info) if output_loading_info else model

    @classmethod
    def _load_config(
        cls,
        name_or_path: str | os.PathLike,
        config: PretrainedConfig | str | os.PathLike | None,
        overrides: dict[str, Any],
        hub_kwargs: dict[str, Any],
    ) -> PretrainedConfig:
        if isinstance(config, PretrainedConfig):
            config = copy.deepcopy(config)
            unknown = [key for key in overrides if key != "num_labels" and not hasattr(config, key)]
            if unknown:
                raise UnsupportedArgumentError(
                    f"from_pretrained() got keyword arguments {unknown} that are neither loading options "
                    f"nor attributes of {type(config).__name__}."
                )
            config.update(overrides)
            config.validate()
            return config
        source = name_or_path if config is None else config
        config, unused = cls.config_class.from_pretrained(source, return_unused_kwargs=True, **hub_kwargs, **overrides)
        if unused:
            raise UnsupportedArgumentError(
                f"from_pretrained() got keyword arguments {sorted(unused)} that are neither loading options "
                f"nor attributes of {type(config).__name__}; check their spelling."
            )
        return config

    def _rename_checkpoint_key(self, expected: set[str]) -> Callable[[str], str]:
        """Map checkpoint names to ours when a head model loads a base checkpoint or the reverse.

        Also reads the legacy ``LayerNorm.gamma``/``LayerNorm.beta`` names of early BERT-era
        checkpoints as ``LayerNorm.weight``/``LayerNorm.bias``, as the reference does.
        """
        prefix = self.base_model_prefix + "."
        is_head_model = isinstance(getattr(self, self.base_model_prefix, None), nn.Module)

        def rename(name: str) -> str:
            for legacy, current in _LEGACY_SUFFIXES.items():
                if name.endswith(legacy) and name not in expected:
                    name = name[: -len(legacy)] + current
            if is_head_model:
                return prefix + name if name not in expected and prefix + name in expected else name
            return name[len(prefix):] if name.startswith(prefix) and name not in expected else name

        return rename

    def _load_checkpoint(
        self,
        checkpoint: Checkpoint,
        dtype: torch.dtype,
        device_map: dict[str, torch.device],
        ignore_mismatched_sizes: bool,
    ) -> dict[str, list]:
        expected_tensors = self.state_dict()
        tied = self.tied_weight_keys()
        rename = self._rename_checkpoint_key(set(expected_tensors))
        loaded: dict[str, torch.Tensor] = {}
        unexpected, mismatched = [], []
        stored_tied: dict[str, torch.Tensor] = {}
        for name, tensor, path in checkpoint.tensors():
            key = rename(name)
            if key in tied:
                # The tied parameter is its source; a stored copy is redundant unless the source is absent.
                stored_tied[key] = tensor
                continue
            target = expected_tensors.get(key)
            if target is None:
                unexpected.append(name)
                continue
            if tuple(tensor.shape) != tuple(target.shape):
                if not ignore_mismatched_sizes:
                    raise WeightsMismatchError(
                        f"{describe_path(path)}: tensor {name!r} has shape {list(tensor.shape)} but "
                        f"{type(self).__name__} expects {list(target.shape)} for {key!r} with this config. "
                        "Check the config matches the checkpoint, or pass ignore_mismatched_sizes=True to "
                        "re-initialize the mismatched weights."
                    )
                mismatched.append((key, tuple(tensor.shape), tuple(target.shape)))
                continue
            cast = dtype if tensor.is_floating_point() and target.is_floating_point() else tensor.dtype
            loaded[key] = tensor.to(device=_device_for(key, device_map), dtype=cast)

        for target, source in tied.items():
            if source not in loaded and target in stored_tied and source in expected_tensors:
                # Some checkpoints store only the tied copy (the reference ties in both directions).
                tensor = stored_tied[target]
                if tuple(tensor.shape) == tuple(expected_tensors[source].shape):
                    cast = dtype if tensor.is_floating_point() else tensor.dtype
                    loaded[source] = tensor.to(device=_device_for(source, device_map), dtype=cast)
        mismatched_keys = [key for key, _, _ in mismatched]
        missing = [key for key in expected_tensors if key not in loaded and key not in tied and key not in mismatched_keys]
        new_head_prefixes = self._fresh_head_prefixes()
        new_heads = [k for k in missing if k.startswith(new_head_prefixes)] if new_head_prefixes else []
        absent = [k for k in missing if k not in new_heads]
        if absent:
            files = ", ".join(describe_path(f) for f in (checkpoint.index_file and [checkpoint.index_file]
                                                          or checkpoint.files))
            shown = ", ".join(repr(k) for k in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise WeightsMismatchError(
                f"{files} lacks weights that {type(self).__name__} needs: {shown}. The checkpoint was probably "
                "saved for another architecture or config; load it with the matching class (see its "
                "config.json 'architectures'), or re-save it. torchformers never fills missing weights randomly."
            )
        self.load_state_dict(loaded, strict=False, assign=True)
        self.tie_weights()
        fresh = new_heads + mismatched_keys
        if fresh:
            self._materialize_fresh(fresh, dtype, device_map)
            self.tie_weights()  # a fresh parameter may be the source of a tied one
            logger.warning(
                "Some weights of %s were not in the checkpoint and are newly initialized: %s. "
                "Train the model on a downstream task before using it for predictions.",
                type(self).__name__, sorted(fresh),
            )
        if unexpected:
            logger.info("Checkpoint tensors not used by %s: %s", type(self).__name__, unexpected)
        self._reset_computed_buffers(device_map)
        still_meta = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if still_meta:
            raise WeightsMismatchError(f"{type(self).__name__} has weights with no value after loading: {still_meta}")
        self._install_device_hooks(device_map)
        return {"missing_keys": new_heads, "unexpected_keys": unexpected, "mismatched_keys": mismatched,
                "error_msgs": []}

    def _fresh_head_prefixes(self) -> tuple[str, ...]:
        """Modules a checkpoint may lack: this class's new heads and, in a head model, its base
        model's (an encoder's pooler, say)."""
        prefixes = tuple(self._new_head_prefixes)
        base = getattr(self, self.base_model_prefix, None)
        if isinstance(base, PreTrainedModel):
            prefixes += tuple(f"{self.base_model_prefix}.{prefix}" for prefix in base._new_head_prefixes)
        return prefixes

    def _materialize_fresh(self, keys: list[str], dtype: torch.dtype, device_map: dict[str, torch.device]) -> None:
        """Give real, initialized memory to the parameters the checkpoint did not provide."""
        modules = {key.rpartition(".")[0] for key in keys}
        for module_name in sorted(modules):
            module = self.get_submodule(module_name)
            loaded = {n: p for n, p in module.named_parameters(recurse=False) if not p.is_meta}
            module.to_empty(device=_device_for(module_name, device_map), recurse=False)
            with torch.no_grad():
                self._init_weights(module)
                for name, param in module.named_parameters(recurse=False):
                    setattr(module, name, loaded.get(name, nn.Parameter(param.to(dtype), param.requires_grad)))

    def _install_device_hooks(self, device_map: dict[str, torch.device]) -> None:
        """With a model split across devices, move each mapped module's inputs to its device."""
        if len(set(device_map.values())) < 2:
            return
        for prefix, device in device_map.items():
            if not prefix:
                continue

            def move_inputs(module: nn.Module, args: tuple, kwargs: dict, device: torch.device = device):
                return _move_to(args, device), {k: _move_to(v, device) for k, v in kwargs.items()}

            self.get_submodule(prefix).register_forward_pre_hook(move_inputs, with_kwargs=True)

    # -- saving ------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        max_shard_size: int | str = "50GB",
        safe_serialization: bool = True,
        variant: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Write ``config.json``, ``generation_config.json`` and safetensors weights.

        Weights larger than ``max_shard_size`` are split into ``model-0000i-of-0000n.safetensors``
        with a ``model.safetensors.index.json``. Every file is written to a temporary file and
        renamed into place; weight files of an earlier save that the new one does not use are
        removed afterwards.
        """
        if kwargs.pop("push_to_hub", False):
            raise UnsupportedArgumentError("push_to_hub is not supported: upload the folder with huggingface_hub.")
        if kwargs:
            raise UnsupportedArgumentError(f"save_pretrained() got unsupported arguments {sorted(kwargs)}.")
        if not safe_serialization:
            raise UnsupportedArgumentError(
                "safe_serialization=False is not supported: torchformers writes safetensors only."
            )
        if os.path.isfile(save_directory):
            raise ConfigError(f"{describe_path(save_directory)} is a file; save_pretrained needs a directory.")
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        tensors = self._tensors_to_save(state_dict)
        shards = _split_shards(tensors, parse_size(max_shard_size))
        weights_name = with_variant(SAFE_WEIGHTS_NAME, variant)
        if len(shards) == 1:
            names = [weights_name]
        else:
            stem, ext = weights_name.rsplit(".", 1)
            names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
        for name, shard in zip(names, shards, strict=True):
            save_safetensors(shard, os.path.join(save_directory, name))
        index_name = with_variant(SAFE_WEIGHTS_INDEX_NAME, variant)
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard},
            }
            atomic_write_text(os.path.join(save_directory, index_name), json.dumps(index, indent=2, sort_keys=True))
        _remove_stale_weights(save_directory, set(names) | ({index_name} if len(shards) > 1 else set()), variant)

        config = copy.deepcopy(self.config)
        config.architectures = [type(self).__name__]
        config.dtype = self.dtype
        config.save_pretrained(save_directory)
        if self.can_generate() and self.generation_config is not None:
            self.generation_config.save_pretrained(save_directory)

    def _tensors_to_save(self, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        state = self.state_dict() if state_dict is None else dict(state_dict)
        for target in self.tied_weight_keys():
            state.pop(target, None)
        seen: dict[tuple, str] = {}
        tensors = {}
        for key, tensor in state.items():
            tensor = tensor.detach()
            # safetensors refuses tensors that share memory; any sharing left is accidental, so copy.
            identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if tensor.numel() and identity in seen:
                tensor = tensor.clone()
            seen[identity] = key
            tensors[key] = tensor
        return tensors


def _split_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def _weight_file_pattern(variant: str | None) -> re.Pattern[str]:
    """Names of this variant's weight files: single, sharded and index, safetensors and torch.

    Other variants' files (``model.fp16.safetensors`` beside ``model.safetensors``) do not match,
    so saving one variant never deletes another.
    """
    names = []
    for single in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME):
        stem, ext = with_variant(single, variant).rsplit(".", 1)
        names.append(rf"{re.escape(stem)}(-\d{{5}}-of-\d{{5}})?\.{ext}")
        names.append(re.escape(with_variant(single + ".index.json", variant)))
    return re.compile("|".join(names))


def _remove_stale_weights(directory: str | os.PathLike, keep: set[str], variant: str | None) -> None:
    """Remove weight files of an earlier save of the same variant that this save did not write."""
    pattern = _weight_file_pattern(variant)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name not in keep and pattern.fullmatch(name) and os.path.isfile(path):
            os.remove(path)


def _resolve_dtype(dtype: Any, config: PretrainedConfig, checkpoint: Checkpoint) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return config.dtype or checkpoint.first_float_dtype() or torch.float32
    if isinstance(dtype, dict):
        raise UnsupportedArgumentError("dtype as a dict of sub-models is not supported; pass one dtype.")
    return parse_dtype(dtype)


def _load_generation_config(
    name_or_path: str | os.PathLike, config: PretrainedConfig, hub_kwargs: dict[str, Any]
) -> GenerationConfig:
    path = resolve_file(name_or_path, "generation_config.json", required=False, **hub_kwargs)
    if path is None:
        return GenerationConfig.from_model_config(config)
    return GenerationConfig.from_json_file(path)


def relative_class(name: str, bases: tuple[type, ...], module: str, **attributes: Any) -> type:
    """A class called ``name`` deriving from ``bases``, with some class attributes set.

    A relative family (XLM-RoBERTa over RoBERTa, RoBERTa's heads over BERT's) is mostly a
    config class and names: each of its classes derives from the family's own
    ``PreTrainedModel`` (config class, base-model prefix) and the matching class it shares,
    and is registered under the name users import. The docstring is the last base's.
    """
    namespace = {"__module__": module, "__qualname__": name, "__doc__": bases[-1].__doc__, **attributes}
    return type(name, bases, namespace)
