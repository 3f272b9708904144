"""AutoTokenizer: pick the tokenizer class from ``tokenizer_config.json`` or ``config.json`` and load it."""

from __future__ import annotations

import os
from typing import Any

from ..errors import RemoteCodeError, TokenizerError, TokenizerFileError, describe_path
from ..hub import resolve_file
from ..weights.gguf import resolve_gguf
from .base import (
    REMOTE_CODE_MESSAGE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    PreTrainedTokenizerBase,
    read_json_file,
)

# tokenizer class name (without "Fast") -> (slow class, fast class) names in this package
TOKENIZER_CLASSES: dict[str, tuple[str | None, str]] = {
    "BertTokenizer": ("BertTokenizer", "BertTokenizerFast"),
    "DistilBertTokenizer": ("BertTokenizer", "BertTokenizerFast"),
    "GPT2Tokenizer": ("GPT2Tokenizer", "GPT2TokenizerFast"),
    "LlamaTokenizer": ("LlamaTokenizer", "LlamaTokenizerFast"),
    "CodeLlamaTokenizer": ("LlamaTokenizer", "LlamaTokenizerFast"),
    "T5Tokenizer": ("T5Tokenizer", "T5TokenizerFast"),
    "PreTrainedTokenizer": (None, "PreTrainedTokenizerFast"),
    "TokenizersBackend": (None, "PreTrainedTokenizerFast"),
}
# model_type of config.json -> tokenizer class name, for repositories without a tokenizer_class
MODEL_TYPE_TOKENIZERS: dict[str, str] = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "gpt2": "GPT2Tokenizer",
    "llama": "LlamaTokenizer",
    "mistral": "LlamaTokenizer",
    "t5": "T5Tokenizer",
}
_REGISTERED: dict[str, tuple[type | None, type | None]] = {}


def _class(name: str | None) -> type | None:
    if name is None:
        return None
    from . import fast, slow

    return getattr(fast, name, None) or getattr(slow, name, None)


class AutoTokenizer:
    """Loads the tokenizer class a model's files name, fast by default (``use_fast=False`` for the slow one)."""

    def __init__(self) -> None:
        raise OSError("AutoTokenizer is not instantiated directly; use AutoTokenizer.from_pretrained(...).")

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *inputs: Any, **kwargs: Any
    ) -> PreTrainedTokenizerBase:
        """Load a tokenizer from a directory, a hub id or the hub cache.

        The class comes from ``tokenizer_class`` in ``tokenizer_config.json``, else from ``model_type``
        in ``config.json`` (or ``config=``); a repository with only a ``tokenizer.json`` loads as
        PreTrainedTokenizerFast. Without ``tokenizer.json`` the fast class is converted from the slow
        files. ``gguf_file`` (or a path to a ``.gguf`` file) builds the tokenizer from GGUF metadata.
        ``trust_remote_code=True`` is refused.
        """
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        use_fast = kwargs.pop("use_fast", True)
        config = kwargs.pop("config", None)
        tokenizer_type = kwargs.pop("tokenizer_type", None)
        hub = {k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token", "revision",
                                      "subfolder") if k in kwargs}
        path = os.fspath(pretrained_model_name_or_path)
        gguf_path = resolve_gguf(path, kwargs.pop("gguf_file", None), **hub)
        if gguf_path is not None:
            from .gguf import tokenizer_from_gguf

            settings = {k: v for k, v in kwargs.items() if k not in hub}
            return tokenizer_from_gguf(gguf_path, **{"name_or_path": path, **settings})
        if os.path.isfile(path):
            name = "PreTrainedTokenizer" if path.endswith(TOKENIZER_FILE) else None
            if name is None:
                raise TokenizerFileError(
                    f"{describe_path(path)} is a single file; AutoTokenizer needs the model directory (or a "
                    "tokenizer.json). Load a vocabulary file with its family class, e.g. BertTokenizer."
                )
            where = describe_path(path)
        elif tokenizer_type is not None:
            if tokenizer_type not in MODEL_TYPE_TOKENIZERS:
                raise TokenizerError(f"tokenizer_type={tokenizer_type!r} is not one of {sorted(MODEL_TYPE_TOKENIZERS)}.")
            name, where = MODEL_TYPE_TOKENIZERS[tokenizer_type], f"tokenizer_type={tokenizer_type!r}"
        else:
            name, where = cls._class_name(path, config, hub)
        slow_class, fast_class = cls._classes(name, path, hub, where)
        if os.path.isfile(path):
            has_json = path.endswith(TOKENIZER_FILE)
        else:
            has_json = resolve_file(path, TOKENIZER_FILE, required=False, **hub) is not None
        # Without tokenizer.json the slow tokenizer reads the vocabulary files (its to_fast() converts it).
        chosen = fast_class if (use_fast and has_json) or slow_class is None else slow_class
        return chosen.from_pretrained(pretrained_model_name_or_path, *inputs, **kwargs)

    @classmethod
    def _class_name(cls, path: str, config: Any, hub: dict[str, Any]) -> tuple[str | None, str]:
        config_file = resolve_file(path, TOKENIZER_CONFIG_FILE, required=False, **hub)
        if config_file is not None:
            tokenizer_config = read_json_file(config_file, "tokenizer config")
            if not isinstance(tokenizer_config, dict):
                raise TokenizerFileError(f"{describe_path(config_file)} must hold a JSON object.")
            if tokenizer_config.get("auto_map") and not tokenizer_config.get("tokenizer_class"):
                raise RemoteCodeError(
                    f"{describe_path(config_file)} names its tokenizer only through auto_map (code in the "
                    f"repository). {REMOTE_CODE_MESSAGE}"
                )
            name = tokenizer_config.get("tokenizer_class")
            if name:
                return name, describe_path(config_file)
        model_type = getattr(config, "model_type", None) if config is not None else None
        where = "config="
        if model_type is None:
            model_config_file = resolve_file(path, "config.json", required=False, **hub)
            if model_config_file is not None:
                model_config = read_json_file(model_config_file, "model config")
                model_type = model_config.get("model_type") if isinstance(model_config, dict) else None
                where = describe_path(model_config_file)
                if not model_type and isinstance(model_config, dict) and model_config.get("tokenizer_class"):
                    return model_config["tokenizer_class"], where
        if model_type in MODEL_TYPE_TOKENIZERS:
            return MODEL_TYPE_TOKENIZERS[model_type], f"model_type={model_type!r} in {where}"
        return None, f"model_type={model_type!r} in {where}" if model_type else path

    @classmethod
    def _classes(cls, name: str | None, path: str, hub: dict[str, Any], where: str) -> tuple[type | None, type | None]:
        if name is not None:
            base = name[:-4] if name.endswith("Fast") and name != "PreTrainedTokenizerFast" else name
            if name == "PreTrainedTokenizerFast":
                base = "PreTrainedTokenizer"
            if base in _REGISTERED:
                return _REGISTERED[base]
            if base in TOKENIZER_CLASSES:
                slow_name, fast_name = TOKENIZER_CLASSES[base]
                return _class(slow_name), _class(fast_name)
        # Unknown class: any tokenizer.json runs on the generic fast class, as in the reference library.
        if resolve_file(path, TOKENIZER_FILE, required=False, **hub) is not None:
            return None, _class("PreTrainedTokenizerFast")
        known = sorted(set(TOKENIZER_CLASSES) | set(_REGISTERED))
        raise TokenizerError(
            f"{where}: tokenizer class {name!r} is not supported by torchformers and there is no tokenizer.json "
            f"to load generically; supported classes are {known}."
            if name else
            f"Cannot tell which tokenizer {path!r} uses: no tokenizer_class in tokenizer_config.json, no known "
            "model_type in config.json and no tokenizer.json. Check the path holds a tokenizer."
        )

    @staticmethod
    def register(config_class: Any = None, tokenizer_class: type | None = None,
                 slow_tokenizer_class: type | None = None, fast_tokenizer_class: type | None = None,
                 exist_ok: bool = False) -> None:
        """Use your own tokenizer classes for a model type (``config_class.model_type``) and class name."""
        fast_class = fast_tokenizer_class or (tokenizer_class if getattr(tokenizer_class, "is_fast", False) is True
                                              or tokenizer_class and tokenizer_class.__name__.endswith("Fast")
                                              else None)
        slow_class = slow_tokenizer_class or (tokenizer_class if tokenizer_class is not fast_class else None)
        if fast_class is None and slow_class is None:
            raise TokenizerError("register() needs a tokenizer class.")
        name = (slow_class or fast_class).__name__
        name = name[:-4] if name.endswith("Fast") else name
        if not exist_ok and (name in _REGISTERED or name in TOKENIZER_CLASSES):
            raise TokenizerError(f"A tokenizer class {name!r} is already registered; pass exist_ok=True.")
        _REGISTERED[name] = (slow_class, fast_class)
        model_type = getattr(config_class, "model_type", None) if config_class is not None else None
        if model_type:
            MODEL_TYPE_TOKENIZERS[model_type] = name
