"""Auto classes: pick a family's config and model class from ``model_type``.

Families are named here by module and class name and imported only when used, so loading
a Llama model never imports the BERT code. User classes join with ``register``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, ClassVar

from ..config import REMOTE_CODE_MESSAGE, PretrainedConfig, load_config_dict
from ..errors import ConfigError, RemoteCodeError, UnknownModelTypeError, describe_path
from ..modeling import PreTrainedModel

# model_type -> module under torchformers.models that defines the family
FAMILY_MODULES: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gpt2": "gpt2",
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "distilbert": "distilbert",
}
CONFIG_NAMES: dict[str, str] = {
    "llama": "LlamaConfig",
    "mistral": "MistralConfig",
    "qwen2": "Qwen2Config",
    "qwen3": "Qwen3Config",
    "gpt2": "GPT2Config",
    "bert": "BertConfig",
    "roberta": "RobertaConfig",
    "xlm-roberta": "XLMRobertaConfig",
    "distilbert": "DistilBertConfig",
}
_PREFIXES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gpt2": "GPT2", "bert": "Bert",
             "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert"}


def _names(suffix: str, model_types: list[str]) -> dict[str, str]:
    return {t: _PREFIXES[t] + suffix for t in model_types}


_DECODERS = ["llama", "mistral", "qwen2", "qwen3"]
_ENCODERS = ["bert", "roberta", "xlm-roberta", "distilbert"]
MODEL_NAMES = _names("Model", _DECODERS + ["gpt2"] + _ENCODERS)
CAUSAL_LM_NAMES = {**_names("ForCausalLM", _DECODERS), "gpt2": "GPT2LMHeadModel"}
SEQUENCE_CLASSIFICATION_NAMES = _names("ForSequenceClassification", _DECODERS + ["gpt2"] + _ENCODERS)
MASKED_LM_NAMES = _names("ForMaskedLM", _ENCODERS)
TOKEN_CLASSIFICATION_NAMES = _names("ForTokenClassification", ["gpt2"] + _ENCODERS)
QUESTION_ANSWERING_NAMES = _names("ForQuestionAnswering", ["gpt2"] + _ENCODERS)
MULTIPLE_CHOICE_NAMES = _names("ForMultipleChoice", _ENCODERS)

_REGISTERED_CONFIGS: dict[str, type[PretrainedConfig]] = {}


def _import_family_class(model_type: str, class_name: str) -> type:
    module = importlib.import_module(f".{FAMILY_MODULES[model_type]}", __package__)
    return getattr(module, class_name)


def _supported(extra: dict[str, Any], builtin: dict[str, str]) -> list[str]:
    return sorted(set(extra) | set(builtin))


class AutoConfig:
    """Loads the config class that ``model_type`` in ``config.json`` names."""

    def __init__(self) -> None:
        raise OSError("AutoConfig is not instantiated directly; use AutoConfig.from_pretrained(...).")

    @staticmethod
    def config_class_for(model_type: str) -> type[PretrainedConfig]:
        if model_type in _REGISTERED_CONFIGS:
            return _REGISTERED_CONFIGS[model_type]
        if model_type in CONFIG_NAMES:
            return _import_family_class(model_type, CONFIG_NAMES[model_type])
        raise UnknownModelTypeError(
            f"model_type {model_type!r} is not supported by torchformers; supported model types are "
            f"{_supported(_REGISTERED_CONFIGS, CONFIG_NAMES)}. Register your own with AutoConfig.register()."
        )

    @classmethod
    def for_model(cls, model_type: str, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return cls.config_class_for(model_type)(*args, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> PretrainedConfig | tuple[PretrainedConfig, dict[str, Any]]:
        """Read ``config.json`` (a directory, the file, or a hub id) into its family's config class.

        ``gguf_file`` (or a path to a ``.gguf`` file) reads the config from GGUF metadata instead.
        """
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        hub_keys = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
                    "gguf_file")
        hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
        config_dict, path = load_config_dict(pretrained_model_name_or_path, **hub_kwargs)
        model_type = config_dict.get("model_type")
        if not model_type:
            raise ConfigError(
                f"{describe_path(path)} has no 'model_type' key; add it (e.g. \"llama\") so the family is known."
            )
        try:
            config_class = cls.config_class_for(model_type)
        except UnknownModelTypeError as error:
            raise UnknownModelTypeError(f"{describe_path(path)}: {error}") from None
        config_dict.setdefault("_name_or_path", str(pretrained_model_name_or_path))
        try:
            return config_class.from_dict(config_dict, **kwargs)
        except ConfigError as error:
            raise ConfigError(f"{describe_path(path)}: {error}") from None

    @staticmethod
    def register(model_type: str, config: type[PretrainedConfig], exist_ok: bool = False) -> None:
        """Make ``AutoConfig`` load ``config`` for files whose ``model_type`` is ``model_type``."""
        if getattr(config, "model_type", model_type) != model_type:
            raise ConfigError(f"{config.__name__}.model_type is {config.model_type!r}, not {model_type!r}.")
        if not exist_ok and (model_type in CONFIG_NAMES or model_type in _REGISTERED_CONFIGS):
            raise ConfigError(f"model_type {model_type!r} is already registered; pass exist_ok=True to replace it.")
        _REGISTERED_CONFIGS[model_type] = config


class _AutoModel:
    """Shared behaviour of the AutoModel* classes; each names its task's classes."""

    _builtin: ClassVar[dict[str, str]] = {}
    _registered: ClassVar[dict[str, type[PreTrainedModel]]]

    def __init__(self) -> None:
        raise OSError(f"{type(self).__name__} is not instantiated directly; use from_pretrained or from_config.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._registered = {}

    @classmethod
    def model_class_for(cls, config: PretrainedConfig) -> type[PreTrainedModel]:
        model_type = config.model_type
        if model_type in cls._registered:
            return cls._registered[model_type]
        if model_type in cls._builtin:
            return _import_family_class(model_type, cls._builtin[model_type])
        raise UnknownModelTypeError(
            f"{cls.__name__} has no class for model_type {model_type!r}; it supports "
            f"{_supported(cls._registered, cls._builtin)}. Register one with {cls.__name__}.register()."
        )

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
        """A randomly initialized model of the family ``config`` belongs to."""
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        return cls.model_class_for(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load the model of the family named by the checkpoint's ``config.json``.

        Takes every keyword of :meth:`PreTrainedModel.from_pretrained`.
        """
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        config = kwargs.get("config")
        if not isinstance(config, PretrainedConfig):
            hub_keys = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
                        "gguf_file")
            source = pretrained_model_name_or_path if config is None else config
            config = AutoConfig.from_pretrained(source, **{k: kwargs[k] for k in hub_keys if k in kwargs})
            if kwargs.get("config") is not None:
                kwargs["config"] = config
        model_class = cls.model_class_for(config)
        return model_class.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def register(cls, config_class: type[PretrainedConfig], model_class: type[PreTrainedModel],
                 exist_ok: bool = False) -> None:
        """Use ``model_class`` for configs of ``config_class``'s model_type."""
        model_type = config_class.model_type
        # from_pretrained reads config.json with model_class.config_class, so it must be this class.
        if model_class.config_class is not config_class:
            raise ConfigError(
                f"{model_class.__name__}.config_class is {model_class.config_class.__name__}, not "
                f"{config_class.__name__}; set config_class = {config_class.__name__} on the model class."
            )
        if not exist_ok and (model_type in cls._builtin or model_type in cls._registered):
            raise ConfigError(f"{cls.__name__} already has a class for {model_type!r}; pass exist_ok=True.")
        cls._registered[model_type] = model_class


class AutoModel(_AutoModel):
    """The bare model (hidden states) of a checkpoint's family."""

    _builtin = MODEL_NAMES


class AutoModelForCausalLM(_AutoModel):
    """A checkpoint's family with a language-model head."""

    _builtin = CAUSAL_LM_NAMES


class AutoModelForSequenceClassification(_AutoModel):
    """A checkpoint's family with a sequence-classification head."""

    _builtin = SEQUENCE_CLASSIFICATION_NAMES


class AutoModelForMaskedLM(_AutoModel):
    """A checkpoint's family with a masked-language-model head (encoders)."""

    _builtin = MASKED_LM_NAMES


class AutoModelForTokenClassification(_AutoModel):
    """A checkpoint's family with a per-token classification head."""

    _builtin = TOKEN_CLASSIFICATION_NAMES


class AutoModelForQuestionAnswering(_AutoModel):
    """A checkpoint's family with an extractive question-answering (span) head."""

    _builtin = QUESTION_ANSWERING_NAMES


class AutoModelForMultipleChoice(_AutoModel):
    """A checkpoint's family with a multiple-choice head."""

    _builtin = MULTIPLE_CHOICE_NAMES
