"""``LoraConfig``: which layers get adapters, their rank and scaling, in ``adapter_config.json``'s words.

The fields and their defaults are the ``peft`` library's, so an ``adapter_config.json``
written by either library is read by the other. Options of ``peft`` that torchformers does
not implement (DoRA, LoftQ initialization, layer replication...) are refused when they are
switched on, never silently ignored.
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..config import read_config_dict
from ..errors import ConfigError, UnsupportedArgumentError, describe_path
from ..files import atomic_write_text

ADAPTER_CONFIG_NAME = "adapter_config.json"


class TaskType(str, enum.Enum):
    """What the adapted model does; decides the returned PeftModel class and the task heads trained in full."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


# Keys of peft's adapter_config.json that change nothing here, whatever their value.
_INERT_KEYS = {"peft_version", "auto_mapping", "megatron_config", "megatron_core", "qalora_group_size",
               "loftq_config", "ensure_weight_tying", "layer_replication"}


@dataclass
class LoraConfig:
    """Settings of a LoRA adapter: ``W x + (lora_alpha / r) * B A dropout(x)`` on each targeted layer.

    Args:
        r: rank of the update (A is (r, in), B is (out, r)).
        lora_alpha: scale numerator; the update is scaled by ``lora_alpha / r``
            (``lora_alpha / sqrt(r)`` with ``use_rslora``).
        lora_dropout: dropout on the adapter's input while training.
        target_modules: layers to adapt: a list of module names or dotted suffixes (``["q_proj",
            "v_proj"]``), a regular expression matched against whole module names, or
            ``"all-linear"`` (every linear layer except the output layer). ``None`` uses the
            usual choice for the model family (query and value projections).
        exclude_modules: layers never to adapt, in the same forms.
        modules_to_save: modules trained in full beside the adapter (a new task head); the
            sequence-classification, token-classification and question-answering task types add
            their heads.
        bias: which biases train: ``"none"``, ``"all"``, or ``"lora_only"`` (those of adapted layers).
        task_type: a :class:`TaskType` (or its name).
        fan_in_fan_out: peft's flag for layers that store their weight (in, out), as GPT-2's
            ``Conv1D``; torchformers reads the layout from the layer itself.
        use_rslora: rank-stabilized scaling ``lora_alpha / sqrt(r)``.
        init_lora_weights: ``True`` (A random, B zero: the adapter starts as a no-op),
            ``"gaussian"`` (A normal with std 1/r, B zero), ``False`` (both random), or, for
            linear layers, ``"pissa"`` / ``"pissa_niter_<n>"`` (the weight's top singular
            directions, exact or by n power iterations) and ``"olora"`` (its QR factors): these
            move the weight's main rank-r part into the adapter and leave the rest as the frozen
            weight, as peft does (also when such an adapter is loaded: load it onto the original model).
        layers_to_transform, layers_pattern: adapt only these layer indices (with a list of target names).
        rank_pattern, alpha_pattern: per-module ``r`` and ``lora_alpha`` overrides, keyed by regular expression.
        use_dora: DoRA: each adapted weight ``W + s * BA`` is rescaled row by row to a learned length
            (started at the rows' own lengths), as peft does; merged and saved the same way.
    """

    r: int = 8
    lora_alpha: int | float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    bias: str = "none"
    task_type: str | None = None
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    layers_to_transform: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, int | float] = field(default_factory=dict)
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False
    use_dora: bool = False
    lora_bias: bool = False
    peft_type: str = "LORA"

    def __post_init__(self) -> None:
        if self.peft_type != "LORA":
            raise UnsupportedArgumentError(
                f"peft_type={self.peft_type!r}: torchformers implements LoRA adapters only."
            )
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"LoraConfig: r must be a positive integer, got {self.r!r}.")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"LoraConfig: bias must be 'none', 'all' or 'lora_only', got {self.bias!r}.")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"LoraConfig: lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        init = self.init_lora_weights
        if init not in (True, False, "gaussian", "pissa", "olora") and not (
            isinstance(init, str) and init.startswith("pissa_niter_") and init.removeprefix("pissa_niter_").isdigit()
        ):
            raise UnsupportedArgumentError(
                f"LoraConfig: init_lora_weights={init!r} is not supported; use True, False, 'gaussian', 'pissa', "
                "'pissa_niter_<n>' or 'olora'."
            )
        if self.lora_bias:
            raise UnsupportedArgumentError("LoraConfig: lora_bias=True is not supported by torchformers.")
        if isinstance(self.task_type, TaskType):
            self.task_type = self.task_type.value
        if self.task_type is not None and self.task_type not in TaskType.__members__:
            raise ConfigError(f"LoraConfig: task_type={self.task_type!r} is not one of {list(TaskType.__members__)}.")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (set, tuple, list)):
                setattr(self, name, sorted(value) if isinstance(value, set) else list(value))
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)

    def scaling_for(self, module_name: str) -> tuple[int, float]:
        """The rank and scale of the adapter on ``module_name`` (after rank_pattern and alpha_pattern)."""
        rank = _pattern_value(self.rank_pattern, module_name, self.r)
        alpha = _pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        return rank, alpha / (rank**0.5 if self.use_rslora else rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "adapter_config.json") -> LoraConfig:
        known = {f.name for f in fields(cls)}
        chosen = {}
        for key, value in values.items():
            if key in known:
                chosen[key] = value
            elif key not in _INERT_KEYS and value not in (None, False, {}, [], ""):
                raise UnsupportedArgumentError(
                    f"{source}: {key}={value!r} asks for a peft feature torchformers does not implement; "
                    "only plain LoRA adapters load."
                )
        return cls(**chosen)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LoraConfig:
        """Read ``adapter_config.json`` from a local adapter directory."""
        path = os.path.join(directory, ADAPTER_CONFIG_NAME)
        return cls.from_json_file(path)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> LoraConfig:
        if not os.path.isfile(path):
            raise ConfigError(f"{describe_path(path)} does not exist; an adapter directory needs it.")
        return cls.from_dict(read_config_dict(path), source=describe_path(path))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        text = json.dumps(dict(sorted(self.to_dict().items())), indent=2) + "\n"
        atomic_write_text(os.path.join(directory, ADAPTER_CONFIG_NAME), text)


def _pattern_value(pattern: dict[str, Any], module_name: str, default: Any) -> Any:
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default
