"""GenerationConfig: decoding settings, read from and written to ``generation_config.json``."""

from __future__ import annotations

import copy
import dataclasses
import json
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..config import read_config_dict
from ..errors import ConfigError, describe_path
from ..files import atomic_write_text
from ..hub import resolve_file

GENERATION_CONFIG_NAME = "generation_config.json"

# The reference library's defaults: what a setting means when neither the call, the
# config passed to generate, nor the model's generation_config.json sets it.
GENERATION_DEFAULTS: dict[str, Any] = {
    # length
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "max_time": None,
    "stop_strings": None,
    # strategy
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "dola_layers": None,
    "use_cache": True,
    "cache_implementation": None,
    "max_cache_len": None,
    "cache_config": None,
    "prefill_chunk_size": None,
    # logits
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "top_h": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "diversity_penalty": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "renormalize_logits": False,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "token_healing": False,
    "guidance_scale": None,
    "watermarking_config": None,
    # outputs
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    # special tokens
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "decoder_start_token_id": None,
    # assisted decoding
    "is_assistant": False,
    "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4,
    "prompt_lookup_num_tokens": None,
    "max_matching_ngram_size": None,
    "assistant_early_exit": None,
    "assistant_lookbehind": 10,
    "target_lookbehind": 10,
    # performance
    "compile_config": None,
    "disable_compile": False,
    "low_memory": None,
}
CACHE_IMPLEMENTATIONS = ("dynamic", "static", "offloaded", "quantized", "offloaded_static", "sliding_window",
                         "hybrid", "hybrid_chunked", "offloaded_hybrid", "offloaded_hybrid_chunked", "paged")
# What None means when set on a config (generate(top_k=None)): the reference library treats
# these settings as switched off, not reset to their defaults.
_NONE_MEANS_OFF: dict[str, Any] = {
    "top_k": 0, "top_p": 1.0, "typical_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1,
    "min_length": 0, "early_stopping": False, "length_penalty": 1.0, "diversity_penalty": 0.0, "do_sample": False,
    "use_cache": True, "renormalize_logits": False, "remove_invalid_values": False, "token_healing": False,
    "output_scores": False, "output_logits": False, "output_attentions": False, "output_hidden_states": False,
    "return_dict_in_generate": False, "num_assistant_tokens": 20, "num_assistant_tokens_schedule": "constant",
    "assistant_confidence_threshold": 0.4, "disable_compile": False, "is_assistant": False,
}
_TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
_HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
_METADATA_KEYS = ("transformers_version", "torchformers_version", "_commit_hash", "_original_object_hash")
# Arguments of generate() itself; the reference refuses them inside a config too.
_GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus",
                       "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_token_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_int(token) and token >= 0 for token in value)


@dataclasses.dataclass
class CompileConfig:
    """How ``generate`` compiles the model's decode step with ``torch.compile`` (the reference's fields).

    Compiled decoding needs a static cache (``cache_implementation="static"`` or a
    ``StaticCache``); the prompt runs eagerly and each decode step through the compiled
    forward, as in the reference library. Unlike the reference, which compiles only on
    accelerators unless told otherwise, an explicit ``compile_config`` compiles on the CPU
    too; a CUDA model with a static cache compiles without one (``disable_compile=True``
    stops that). ``dynamic=None`` means ``True`` here: the cache's filled length changes at
    every step, and a graph with symbolic lengths is compiled once rather than once per length.
    The first decode step pays the compilation (about 15 s for a two-layer model and 1-2
    minutes for a 135M one on two CPU cores); the compiled step is kept on the model and
    reused by later calls with the same settings. On the CPU it pays off at batch 1 (llama-135m:
    about 1.4x eager's tokens/s); eager batches of 2 to 16 rows multiply by packed oneDNN
    weights and stay faster than compiled ones (measured 1.2-1.3x at 8 rows).

    Each compiled step first evaluates dynamo's guards, most of them on the model's modules
    (about 7,000 on a 135M model, 1.3 ms of a 12 ms CPU step). For a model that stays as it
    is between calls, ``CompileConfig(mode=None, options={"guard_filter_fn":
    torch.compiler.skip_guard_on_all_nn_modules_unsafe})`` drops those: +5-13% tokens/s on
    SmolLM2's Q4_1 file kept in int4. Unsafe, as torch's name says: after adapters are added or
    the model is cast or moved, the old compiled step would still run; and a padded batch, whose
    graph breaks at its mask, compiles each decoder layer's forward as one frame shared by all
    layers, which only those guards tell apart (measured: wrong tokens). Prefer the following.

    ``model_guards="fingerprint"`` (torchformers only) gets that speed safely between calls:
    dynamo's guards on the model's modules are dropped, and instead, once per ``generate()``
    call (at its first decode step), a fingerprint of the model is compared with the one its
    compiled step was made for. It covers every module's type, training flag and hooks (and the
    global module hooks), the dtype, shape, stride, device and gradient flag of each parameter
    and buffer, and the plain attributes of modules and of the objects they hold (the config)
    by value. A different fingerprint compiles a new step for the model. Each model gets its own
    compiled step. What it does not see: a change to the model in the middle of a
    ``generate()`` call (from a streamer or a logits processor), or to a class attribute.
    Frames that a graph break compiles apart (a padded batch's decoder layers) keep dynamo's
    guards. Computing the fingerprint takes about 11 ms per call for a 135M model. Measured on
    SmolLM2's Q4_1 file with int8 activations: 120-124 tokens/s, against 97-98 with the module
    guards and 120-127 without any check.
    """

    fullgraph: bool = False
    dynamic: bool | None = None
    backend: str | Callable = "inductor"
    mode: str | None = "reduce-overhead"
    options: dict | None = None
    model_guards: str = "dynamo"

    def __post_init__(self) -> None:
        if self.model_guards not in ("dynamo", "fingerprint"):
            raise ConfigError(f"CompileConfig: model_guards must be 'dynamo' or 'fingerprint', got {self.model_guards!r}.")

    def to_dict(self) -> dict[str, Any]:
        values = copy.deepcopy(dataclasses.asdict(self))
        if values["model_guards"] == "dynamo":
            del values["model_guards"]  # the reference's CompileConfig has no such field
        return values

    @classmethod
    def from_value(cls, value: Any) -> CompileConfig | None:
        """A CompileConfig from a CompileConfig, a dict (as a file stores it) or None; else ConfigError."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            fields = {field.name for field in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields - {"_compile_all_devices"})
            if unknown:
                raise ConfigError(f"GenerationConfig: compile_config has unknown keys {unknown}; known: {sorted(fields)}.")
            return cls(**{key: v for key, v in value.items() if key in fields})
        raise ConfigError(f"GenerationConfig: compile_config must be a CompileConfig or a dict, got {value!r}.")


class GenerationConfig:
    """Settings of ``generate()``, with the reference library's names, defaults and file format.

    Keyword arguments override the defaults; unknown keys are kept as attributes (and saved).
    The config remembers which settings were given (by keyword, by a file or by assignment):
    like the reference, a ``max_length`` nobody set means "20 new tokens" rather than
    "20 tokens in all", and ``generate`` fills the settings a passed config leaves unset
    from the model's own generation config. Invalid values raise
    :class:`torchformers.errors.ConfigError` naming the setting.
    """

    def __init__(self, **kwargs: Any) -> None:
        for key in _METADATA_KEYS:
            kwargs.pop(key, None)
        object.__setattr__(self, "_set_keys", set())
        object.__setattr__(self, "_from_model_config", bool(kwargs.pop("_from_model_config", False)))
        for key, value in copy.deepcopy(GENERATION_DEFAULTS).items():
            object.__setattr__(self, key, value)
        for key, value in kwargs.items():
            # The reference library writes null for a setting left at its default.
            if value is not None or key not in GENERATION_DEFAULTS:
                setattr(self, key, value)
        self.validate()

    def __setattr__(self, key: str, value: Any) -> None:
        if not key.startswith("_"):
            self._set_keys.add(key)
        object.__setattr__(self, key, value)

    def is_set(self, key: str) -> bool:
        """Whether ``key`` was given (by keyword, file or assignment) rather than left at its default."""
        return key in self._set_keys

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the values that would make decoding fail or silently misbehave; raises ConfigError."""
        for key in _GENERATE_ARGUMENTS:
            if key in self.__dict__:
                raise ConfigError(
                    f"GenerationConfig: {key} is an argument of generate(), not a generation setting; pass it "
                    "to generate() directly."
                )
        object.__setattr__(self, "compile_config", CompileConfig.from_value(self.compile_config))
        if self.watermarking_config is not None:
            from .watermarking import WatermarkingConfig

            object.__setattr__(self, "watermarking_config", WatermarkingConfig.from_value(self.watermarking_config))
        self._check_ints()
        self._check_ranges()
        self._check_combinations()
        self._check_token_settings()

    def _fail(self, key: str, requirement: str) -> None:
        raise ConfigError(f"GenerationConfig: {key} {requirement}, got {getattr(self, key)!r}.")

    def _check_ints(self) -> None:
        for key in ("max_length", "min_length", "top_k", "no_repeat_ngram_size"):
            value = getattr(self, key)
            if not _is_int(value) or value < 0:
                self._fail(key, "must be a non-negative integer")
        for key in ("num_beams", "num_beam_groups", "num_return_sequences"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                self._fail(key, "must be a positive integer")
        for key in ("max_new_tokens", "prompt_lookup_num_tokens", "max_cache_len", "max_matching_ngram_size",
                    "prefill_chunk_size"):
            value = getattr(self, key)
            if value is not None and (not _is_int(value) or value < 1):
                self._fail(key, "must be a positive integer (or None)")
        if self.min_new_tokens is not None and (not _is_int(self.min_new_tokens) or self.min_new_tokens < 0):
            self._fail("min_new_tokens", "must be a non-negative integer (or None)")
        if not _is_int(self.num_assistant_tokens) or self.num_assistant_tokens < 1:
            self._fail("num_assistant_tokens", "must be a positive integer")

    def _check_ranges(self) -> None:
        if not _is_number(self.temperature) or self.temperature < 0 or (self.do_sample and self.temperature == 0):
            self._fail("temperature", "must be a positive number (use do_sample=False for greedy decoding)")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            self._fail("top_p", "must be in (0, 1]")
        if not _is_number(self.typical_p) or not 0 < self.typical_p <= 1:
            self._fail("typical_p", "must be in (0, 1]")
        if self.min_p is not None and (not _is_number(self.min_p) or not 0 <= self.min_p <= 1):
            self._fail("min_p", "must be in [0, 1] (or None)")
        if self.top_h is not None and (not _is_number(self.top_h) or not 0 < self.top_h <= 1):
            self._fail("top_h", "must be in (0, 1] (or None)")
        if self.guidance_scale is not None and not _is_number(self.guidance_scale):
            self._fail("guidance_scale", "must be a number (or None)")
        for key in ("epsilon_cutoff", "eta_cutoff"):
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value < 1:
                self._fail(key, "must be in [0, 1)")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            self._fail("repetition_penalty", "must be a positive number (1.0 means no penalty)")
        if not _is_number(self.length_penalty):
            self._fail("length_penalty", "must be a number")
        if self.max_time is not None and (not _is_number(self.max_time) or self.max_time <= 0):
            self._fail("max_time", "must be a positive number of seconds (or None)")
        if self.early_stopping not in (True, False, "never"):
            self._fail("early_stopping", "must be True, False or 'never'")
        if self.cache_implementation is not None and self.cache_implementation not in CACHE_IMPLEMENTATIONS:
            self._fail("cache_implementation", f"must be one of {CACHE_IMPLEMENTATIONS} (or None)")
        if self.num_assistant_tokens_schedule not in ("constant", "heuristic", "heuristic_transient"):
            self._fail("num_assistant_tokens_schedule", "must be 'constant', 'heuristic' or 'heuristic_transient'")

    def _check_combinations(self) -> None:
        if self.num_beams % self.num_beam_groups:
            raise ConfigError(
                f"GenerationConfig: num_beams ({self.num_beams}) must be divisible by num_beam_groups "
                f"({self.num_beam_groups})."
            )
        if self.num_return_sequences > 1:
            if self.num_beams == 1 and not self.do_sample:
                raise ConfigError(
                    f"GenerationConfig: greedy decoding returns one sequence per prompt; num_return_sequences="
                    f"{self.num_return_sequences} needs do_sample=True or num_beams >= num_return_sequences."
                )
            if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
                raise ConfigError(
                    f"GenerationConfig: num_return_sequences ({self.num_return_sequences}) must not exceed "
                    f"num_beams ({self.num_beams})."
                )
        if self.max_new_tokens is not None and self.min_new_tokens is not None \
                and self.min_new_tokens > self.max_new_tokens:
            # The reference runs such a config (a model's default min_new_tokens may meet a call's
            # smaller max_new_tokens); so does this library, but it says what will happen.
            warnings.warn(
                f"GenerationConfig: min_new_tokens ({self.min_new_tokens}) is larger than max_new_tokens "
                f"({self.max_new_tokens}): generation stops after max_new_tokens, and end-of-sequence tokens "
                "stay suppressed until then.", UserWarning, stacklevel=3,
            )

    def _check_token_settings(self) -> None:
        for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id"):
            value = getattr(self, key)
            if value is not None and not _is_int(value):
                self._fail(key, "must be a token id (an integer)")
        for key in ("eos_token_id", "forced_eos_token_id"):
            value = getattr(self, key)
            if value is not None and not (_is_int(value) or (_is_token_list(value) and len(value) > 0)):
                self._fail(key, "must be a token id or a non-empty list of token ids")
        for key in ("suppress_tokens", "begin_suppress_tokens"):
            value = getattr(self, key)
            if value is not None and not _is_token_list(value):
                self._fail(key, "must be a list of token ids")
        if self.bad_words_ids is not None and not (
            isinstance(self.bad_words_ids, (list, tuple)) and self.bad_words_ids
            and all(_is_token_list(word) and word for word in self.bad_words_ids)
        ):
            self._fail("bad_words_ids", "must be a non-empty list of non-empty lists of token ids")
        if self.stop_strings is not None and not (
            isinstance(self.stop_strings, str)
            or (isinstance(self.stop_strings, (list, tuple)) and self.stop_strings
                and all(isinstance(s, str) and s for s in self.stop_strings))
        ):
            self._fail("stop_strings", "must be a string or a non-empty list of non-empty strings")
        if self.sequence_bias is not None:
            self._check_sequence_bias()
        if self.suppress_tokens:
            suppressed = set(self.suppress_tokens)
            for key in ("forced_bos_token_id", "forced_eos_token_id"):
                forced = getattr(self, key)
                forced = {forced} if _is_int(forced) else set(forced or ())
                if forced and forced <= suppressed:
                    raise ConfigError(
                        f"GenerationConfig: every token of {key} ({sorted(forced)}) is also in suppress_tokens; "
                        "forcing a suppressed token leaves no token to choose. Remove it from one of the two "
                        "(min_new_tokens prevents an early end of sequence)."
                    )

    def _check_sequence_bias(self) -> None:
        bias = self.sequence_bias
        if isinstance(bias, dict):
            pairs = list(bias.items())
        elif isinstance(bias, (list, tuple)):
            pairs = [tuple(pair) if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, None)
                     for pair in bias]
        else:
            pairs = []
        if not pairs or not all(_is_token_list(tokens) and tokens and _is_number(value) for tokens, value in pairs):
            self._fail("sequence_bias", "must map token id sequences to biases: {(id, ...): float} or "
                                        "[[[id, ...], float], ...]")

    # -- modes and construction ------------------------------------------------------------------
    def get_generation_mode(self, assistant_model: Any = None) -> str:
        """The decoding strategy these settings select, named as in the reference library."""
        if self.constraints is not None or self.force_words_ids is not None:
            return "constrained_beam_search"
        if self.num_beams == 1:
            if self.do_sample:
                mode = "sample"
            elif self.penalty_alpha is not None and self.penalty_alpha > 0 and self.top_k > 1:
                return "contrastive_search"
            else:
                mode = "greedy_search"
            if assistant_model is not None or self.prompt_lookup_num_tokens is not None \
                    or self.assistant_early_exit is not None:
                return "assisted_generation"
            if self.dola_layers is not None:
                return "dola_generation"
            return mode
        if self.num_beam_groups > 1:
            return "group_beam_search"
        return "beam_sample" if self.do_sample else "beam_search"

    @classmethod
    def from_model_config(cls, model_config: Any) -> GenerationConfig:
        """Defaults plus the special token ids of a model's config."""
        values = {key: getattr(model_config, key) for key in _TOKEN_KEYS if getattr(model_config, key, None) is not None}
        return cls(**values, _from_model_config=True)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> GenerationConfig:
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike, **kwargs: Any) -> GenerationConfig:
        """Read a generation config file; ``kwargs`` override its values."""
        config_dict = read_config_dict(json_file)
        try:
            return cls.from_dict(config_dict, **kwargs)
        except ConfigError as error:
            raise ConfigError(f"{describe_path(json_file)}: {error}") from None

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name: str | os.PathLike, config_file_name: str | None = None, **kwargs: Any
    ) -> GenerationConfig:
        """Read ``generation_config.json`` (a directory, the file, or a hub id).

        Hub options (``cache_dir``, ``revision``, ``local_files_only``...) locate the file; every
        other keyword overrides a value, as in the reference library.
        """
        hub_kwargs = {key: kwargs.pop(key) for key in _HUB_OPTIONS if key in kwargs}
        name = os.fspath(pretrained_model_name)
        if os.path.isfile(name):
            path = name
        else:
            path = resolve_file(name, config_file_name or GENERATION_CONFIG_NAME, **hub_kwargs)
        return cls.from_json_file(path, **kwargs)

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the given attributes that exist; returns the ones that do not.

        As in the reference library, ``None`` switches a sampling or penalty setting off
        (``top_k=None`` keeps every token) and leaves ``max_length`` unset.
        """
        unused = {}
        for key, value in kwargs.items():
            if not hasattr(self, key) or key.startswith("_"):
                unused[key] = value
            elif value is None and key == "max_length":
                object.__setattr__(self, key, GENERATION_DEFAULTS[key])
                self._set_keys.discard(key)
            else:
                setattr(self, key, _NONE_MEANS_OFF.get(key, value) if value is None else value)
        self.validate()
        return unused

    def merged_with(self, other: GenerationConfig) -> GenerationConfig:
        """A copy of this config with every setting ``other`` was given applied on top."""
        merged = copy.deepcopy(self)
        merged.update(**{key: copy.deepcopy(getattr(other, key)) for key in other._set_keys})
        return merged

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if k in ("compile_config", "watermarking_config") and v is not None else copy.deepcopy(v)
                for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_diff_dict(self) -> dict[str, Any]:
        """The settings a file needs: those that differ from the defaults, and those given explicitly."""
        diff = {
            k: v for k, v in self.to_dict().items()
            if k not in GENERATION_DEFAULTS or GENERATION_DEFAULTS[k] != v or k in self._set_keys
        }
        if self._from_model_config:
            diff["_from_model_config"] = True  # as the reference writes it, so the flag survives a round trip
        return diff

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        data["torchformers_version"] = __version__
        return json.dumps(dict(sorted(data.items())), indent=2) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str | None = None) -> None:
        self.validate()
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME), self.to_json_string())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string()}"
