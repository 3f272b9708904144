"""GenerationConfig: decoding settings, read from and written to ``generation_config.json``."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from .. import __version__
from ..config import read_config_dict
from ..errors import ConfigError, describe_path
from ..files import atomic_write_text
from ..hub import resolve_file

GENERATION_CONFIG_NAME = "generation_config.json"

# The reference library's defaults. Files store only what differs from them.
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "early_stopping": False,
    "max_time": None,
    "stop_strings": None,
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "use_cache": True,
    "cache_implementation": None,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "prompt_lookup_num_tokens": None,
}
_TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
_HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


class GenerationConfig:
    """Settings of ``generate()``; keyword arguments override the defaults, unknown keys are kept."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("transformers_version", None)
        kwargs.pop("torchformers_version", None)
        self._from_model_config = bool(kwargs.pop("_from_model_config", False))
        # The reference library writes null for a setting left at its default.
        given = {key: value for key, value in kwargs.items() if value is not None or key not in GENERATION_DEFAULTS}
        for key, value in {**copy.deepcopy(GENERATION_DEFAULTS), **given}.items():
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check the values that would make decoding fail or silently misbehave."""
        for key in ("max_length", "min_length", "num_beams", "num_return_sequences", "top_k"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"GenerationConfig: {key} must be a non-negative integer, got {value!r}.")
        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0):
            raise ConfigError(f"GenerationConfig: max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}.")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0 and self.do_sample:
            raise ConfigError(f"GenerationConfig: temperature must be a positive number, got {self.temperature!r}.")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ConfigError(f"GenerationConfig: top_p must be in (0, 1], got {self.top_p!r}.")

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
        """Set the given attributes that exist; returns the ones that do not."""
        unused = {}
        for key, value in kwargs.items():
            if hasattr(self, key):
                setattr(self, key, value)
            else:
                unused[key] = value
        self.validate()
        return unused

    def to_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_diff_dict(self) -> dict[str, Any]:
        diff = {k: v for k, v in self.to_dict().items() if k not in GENERATION_DEFAULTS or GENERATION_DEFAULTS[k] != v}
        if self._from_model_config:
            diff["_from_model_config"] = True  # as the reference writes it, so the flag survives a round trip
        return diff

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        data["torchformers_version"] = __version__
        return json.dumps(dict(sorted(data.items())), indent=2) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str | None = None) -> None:
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME), self.to_json_string())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string()}"
