"""PretrainedConfig: a model's hyper-parameters, read from and written to ``config.json``.

A family's config is a subclass that names its ``model_type`` and its ``defaults``; every
value, known or not, is a plain attribute, so keys this version does not know survive a
load and save unchanged.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, ClassVar

import torch

from . import __version__
from .errors import ConfigError, RemoteCodeError, UnsupportedArgumentError, describe_path
from .files import atomic_write_text
from .hub import resolve_file
from .weights.gguf import gguf_config_source

CONFIG_NAME = "config.json"

# Values every config has, whatever its family, with the reference library's defaults.
# Saved files leave them out while they hold these defaults, as the reference does.
COMMON_DEFAULTS: dict[str, Any] = {
    "architectures": None,
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "dtype": None,
    "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False,
    "problem_type": None,
}

_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")


def parse_dtype(value: Any, *, key: str = "dtype") -> torch.dtype | None:
    """Turn ``"float32"``, ``"torch.bfloat16"`` or a ``torch.dtype`` into a ``torch.dtype``."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        candidate = getattr(torch, name, None)
        if isinstance(candidate, torch.dtype):
            return candidate
    raise ConfigError(
        f"{key}={value!r} is not a torch dtype; use a name such as 'float32', 'float16' or 'bfloat16'."
    )


def _int_keyed_labels(id2label: Any) -> dict[int, Any]:
    """``id2label`` with integer keys (JSON stores them as strings)."""
    if not isinstance(id2label, dict):
        raise ConfigError(f"id2label must map class indices to labels, got {id2label!r}.")
    try:
        return {int(index): label for index, label in id2label.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"id2label keys must be class indices (0, 1, ...), got {list(id2label)}.") from None


class PretrainedConfig:
    """Base class of every configuration, with the reference library's loading and saving API.

    Keyword arguments become attributes. ``num_labels`` builds ``id2label``/``label2id``;
    ``torch_dtype`` is accepted as the older name of ``dtype``. Invalid values raise
    :class:`torchformers.errors.ConfigError`.
    """

    model_type: ClassVar[str] = ""
    # The family's own keys and their defaults, in the reference library's names.
    defaults: ClassVar[dict[str, Any]] = {}
    # Other names a family's files use for standard attributes (GPT-2's ``n_embd``...).
    attribute_map: ClassVar[dict[str, str]] = {}

    def __init__(self, **kwargs: Any) -> None:
        if "torch_dtype" in kwargs:
            legacy = kwargs.pop("torch_dtype")
            kwargs.setdefault("dtype", legacy)
        kwargs.pop("transformers_version", None)
        kwargs.pop("torchformers_version", None)
        kwargs.pop("model_type", None)
        num_labels = kwargs.pop("num_labels", None)
        self._name_or_path = str(kwargs.pop("name_or_path", kwargs.pop("_name_or_path", "")))

        values = {**COMMON_DEFAULTS, **copy.deepcopy(self.defaults)}
        values.update(kwargs)
        for key, value in values.items():
            setattr(self, key, value)

        if getattr(self, "id2label", None) is None:
            self.num_labels = 2 if num_labels is None else num_labels
        else:
            self.id2label = _int_keyed_labels(self.id2label)
            if num_labels is not None and num_labels != len(self.id2label):
                self.num_labels = num_labels
        if getattr(self, "label2id", None) is None:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.dtype = parse_dtype(self.dtype)
        try:
            self.normalize()
        except ConfigError:
            raise
        except (TypeError, ValueError) as error:
            # normalize() derives values before validate() checks them, so a value of the wrong type
            # (hidden_size="32") fails there first; report it as the config problem it is.
            raise ConfigError(
                f"{type(self).__name__}: a value has the wrong type ({error}); check the numbers and "
                "dicts in the config."
            ) from None
        self.validate()

    # -- attribute aliases -------------------------------------------------------------
    def __setattr__(self, key: str, value: Any) -> None:
        key = type(self).attribute_map.get(key, key)
        super().__setattr__(key, value)

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails: try the family's alias table.
        mapped = type(self).attribute_map.get(key)
        if mapped is not None:
            return getattr(self, mapped)
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    # -- derived values ----------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"num_labels must be a positive integer, got {count!r}.")
        if getattr(self, "id2label", None) is None or len(self.id2label) != count:
            self.id2label = {i: f"LABEL_{i}" for i in range(count)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The older name of :attr:`dtype`."""
        return self.dtype

    @torch_dtype.setter
    def torch_dtype(self, value: Any) -> None:
        self.dtype = parse_dtype(value)

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict)

    def get_text_config(self, decoder: bool | None = None) -> PretrainedConfig:
        """The config of the text model; for text-only families that is this config."""
        return self

    def normalize(self) -> None:
        """Fill values derived from others (a family's hook, called after construction)."""

    def validate(self) -> None:
        """Check values; a family extends this with its own rules."""
        if self.problem_type not in _PROBLEM_TYPES:
            raise ConfigError(f"problem_type={self.problem_type!r} is not one of {_PROBLEM_TYPES}.")
        if self.architectures is not None and not isinstance(self.architectures, list):
            raise ConfigError(f"architectures must be a list of class names, got {self.architectures!r}.")

    def require_positive_ints(self, *keys: str) -> None:
        """Raise ConfigError unless each named attribute is an integer above zero."""
        for key in keys:
            value = getattr(self, key, None)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"{type(self).__name__}: {key} must be a positive integer, got {value!r}."
                )

    # -- dictionaries and JSON ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every attribute, with ``dtype`` as a string, as ``config.json`` stores it."""
        output = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        output["model_type"] = self.model_type
        if isinstance(output.get("dtype"), torch.dtype):
            output["dtype"] = str(output["dtype"]).removeprefix("torch.")
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """``to_dict`` without the common keys that hold their defaults (what files store)."""
        output = self.to_dict()
        for key, default in COMMON_DEFAULTS.items():
            if key in output and output[key] == default:
                del output[key]
        if output.get("id2label") == {i: f"LABEL_{i}" for i in range(2)}:
            output.pop("id2label")
            output.pop("label2id", None)
        return output

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        data["torchformers_version"] = __version__
        return json.dumps(dict(sorted(data.items())), indent=2) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        atomic_write_text(json_file_path, self.to_json_string(use_diff=use_diff))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``config.json`` into ``save_directory`` (created if needed)."""
        if kwargs.pop("push_to_hub", False):
            raise UnsupportedArgumentError(
                "push_to_hub is not supported: upload the saved folder with huggingface_hub."
            )
        if kwargs:
            raise UnsupportedArgumentError(f"save_pretrained() got unsupported arguments {sorted(kwargs)}.")
        if os.path.isfile(save_directory):
            raise ConfigError(f"{describe_path(save_directory)} is a file; save_pretrained needs a directory.")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME))

    def update(self, values: dict[str, Any]) -> None:
        """Set attributes from ``values``, keeping the derived ones consistent (call validate() after)."""
        for key, value in values.items():
            if key in ("dtype", "torch_dtype"):
                self.dtype = parse_dtype(value)
            else:
                setattr(self, key, value)
        if "id2label" in values:
            self.id2label = _int_keyed_labels(self.id2label)
            if "label2id" not in values:
                self.label2id = {label: index for index, label in self.id2label.items()}

    @classmethod
    def from_dict(
        cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any
    ) -> PretrainedConfig | tuple[PretrainedConfig, dict[str, Any]]:
        """Build a config from a dictionary; ``kwargs`` that name attributes override values.

        Keyword arguments that are not attributes of the config are returned with
        ``return_unused_kwargs=True``. Otherwise they raise UnsupportedArgumentError, where the
        reference library drops them silently: a misspelled override never goes unnoticed.
        """
        if not isinstance(config_dict, dict):
            raise ConfigError(f"{cls.__name__}.from_dict needs a dict, got {type(config_dict).__name__}.")
        config = cls(**config_dict)
        settable = ("dtype", "torch_dtype", "num_labels")
        overrides = {key: value for key, value in kwargs.items() if key in settable or hasattr(config, key)}
        unused = {key: value for key, value in kwargs.items() if key not in overrides}
        if unused and not return_unused_kwargs:
            raise UnsupportedArgumentError(
                f"{sorted(unused)} are not attributes of {cls.__name__}; check their spelling, or pass "
                "return_unused_kwargs=True to get them back."
            )
        if overrides:
            config.update(overrides)
            config.validate()
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PretrainedConfig:
        config_dict = read_config_dict(json_file)
        try:
            return cls.from_dict(config_dict)
        except ConfigError as error:
            raise ConfigError(f"{describe_path(json_file)}: {error}") from None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        return_unused_kwargs: bool = False,
        subfolder: str = "",
        gguf_file: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> PretrainedConfig | tuple[PretrainedConfig, dict[str, Any]]:
        """Load ``config.json`` from a directory, a path to the file itself, or a hub id.

        With ``gguf_file`` (or a path to a ``.gguf`` file) the config comes from the GGUF metadata.
        """
        if kwargs.pop("trust_remote_code", False):
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        config_dict, config_file = load_config_dict(
            pretrained_model_name_or_path,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            revision=revision,
            subfolder=subfolder,
            gguf_file=gguf_file,
        )
        file_type = config_dict.get("model_type")
        if cls.model_type and file_type and file_type != cls.model_type:
            raise ConfigError(
                f"{describe_path(config_file)} has model_type={file_type!r} but {cls.__name__} is for "
                f"{cls.model_type!r}; load it with AutoConfig or the {file_type!r} config class."
            )
        config_dict.setdefault("_name_or_path", str(pretrained_model_name_or_path))
        try:
            return cls.from_dict(config_dict, return_unused_kwargs=return_unused_kwargs, **kwargs)
        except ConfigError as error:
            raise ConfigError(f"{describe_path(config_file)}: {error}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(use_diff=False)}"


REMOTE_CODE_MESSAGE = (
    "trust_remote_code=True is refused: torchformers never runs Python code shipped inside a model "
    "repository. Use a model whose model_type torchformers supports, or register your own classes with "
    "AutoConfig.register(...) and AutoModel*.register(...)."
)


def read_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object from ``path``; malformed JSON names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{describe_path(path)} is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}); fix or re-download the file."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{describe_path(path)} is not UTF-8 text; re-download the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{describe_path(path)} must hold a JSON object, not {type(data).__name__}.")
    return data


def load_config_dict(
    pretrained_model_name_or_path: str | os.PathLike, subfolder: str = "",
    gguf_file: str | os.PathLike | None = None, **hub_kwargs: Any,
) -> tuple[dict[str, Any], str]:
    """Find and read ``config.json`` (or a GGUF file's metadata); returns its contents and its local path."""
    gguf = gguf_config_source(pretrained_model_name_or_path, gguf_file, subfolder=subfolder, **hub_kwargs)
    if gguf is not None:
        return gguf
    path = os.fspath(pretrained_model_name_or_path)
    if os.path.isfile(path):
        config_file = path
    else:
        config_file = resolve_file(path, CONFIG_NAME, subfolder=subfolder, **hub_kwargs)
    return read_config_dict(config_file), config_file

# The reference library spells the class both ways.
PreTrainedConfig = PretrainedConfig
