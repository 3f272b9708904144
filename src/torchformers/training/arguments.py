"""TrainingArguments: every knob of a training run, with the reference library's names and defaults.

A field name the reference has but torchformers does not support raises UnsupportedArgumentError when
it is given a non-default value; a name neither library knows raises too, with the closest field name.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import logging
import math
import os
from typing import Any

import torch

from ..errors import ConfigError, UnsupportedArgumentError
from . import distributed
from .schedulers import SchedulerType, scheduler_type

logger = logging.getLogger("torchformers")


class IntervalStrategy(str, enum.Enum):
    """When to log or evaluate: never, every ``*_steps`` optimizer steps, or at each epoch's end."""

    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"

    def __str__(self) -> str:
        return self.value


class SaveStrategy(str, enum.Enum):
    """When to save a checkpoint; ``best`` saves whenever ``metric_for_best_model`` improves."""

    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"
    BEST = "best"

    def __str__(self) -> str:
        return self.value


OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
REPORTERS = ("jsonl", "tensorboard")

# Reference fields torchformers does not implement, with what to do instead. They raise when set to
# anything but their "off" value.
_UNSUPPORTED_FIELDS = {
    "deepspeed": "DeepSpeed is not supported; use fsdp on GPUs.",
    "push_to_hub": "upload the saved folder with huggingface_hub.",
    "hub_model_id": "upload the saved folder with huggingface_hub.",
    "hub_token": "upload the saved folder with huggingface_hub.",
    "model_init": "pass a model.",
    "label_smoothing_factor": "label smoothing is not supported; pass compute_loss_func to the Trainer.",
    "auto_find_batch_size": "choose per_device_train_batch_size yourself.",
    "use_liger_kernel": "Liger kernels are not supported.",
    "neftune_noise_alpha": "NEFTune is not supported.",
    "tf32": "set torch.backends.cuda.matmul.allow_tf32 yourself.",
    "fp16_full_eval": "evaluate under bf16 or fp16 autocast instead.",
    "bf16_full_eval": "evaluate under bf16 or fp16 autocast instead.",
    "torch_empty_cache_steps": "not supported.",
    "batch_eval_metrics": "compute_metrics receives the whole evaluation set at once.",
    "include_for_metrics": "compute_metrics receives predictions and labels only.",
    "train_sampling_strategy": "training batches are drawn in random order.",
    "group_by_length": "training batches are drawn in random order.",
    "optim_args": "pass optimizers=(optimizer, scheduler) to the Trainer for other optimizer settings.",
    "optim_target_modules": "not supported.",
    "accelerator_config": "torchformers does not use accelerate.",
    "parallelism_config": "only data parallelism (DDP) and FSDP are supported.",
    "save_on_each_node": "checkpoints are written by rank 0 on a shared filesystem.",
    "enable_jit_checkpoint": "not supported.",
    "eval_do_concat_batches": "evaluation batches are always concatenated.",
    "eval_use_gather_object": "predictions are always gathered as objects.",
    "restore_callback_states_from_checkpoint": "not supported.",
    "full_determinism": "call torch.use_deterministic_algorithms(True) yourself.",
    "log_level": "configure the 'torchformers' logger with the logging module.",
    "log_level_replica": "configure the 'torchformers' logger with the logging module.",
    "logging_dir": "TensorBoard logs go to output_dir/runs.",
}
_OFF_VALUES = (None, False, 0, 0.0, "", "no", "passive", "warning", "random", [], ())


@dataclasses.dataclass
class TrainingArguments:
    """The settings of a training run, as in the reference library.

    Differences: ``optim`` is ``adamw_torch_fused`` (default) or ``adamw_torch``; ``report_to`` takes
    ``none``, ``jsonl`` (``output_dir/trainer_log.jsonl``), ``tensorboard`` (when installed) or ``all``;
    ``warmup_ratio`` is kept (``warmup_steps`` below 1 is a ratio too, as in the reference's current
    release); ``bf16`` also works on CPU; ``resume_from_checkpoint`` set here is used by ``train()``
    when it gets none; checkpoints hold ``training_args.json`` instead of a pickled ``training_args.bin``.
    """

    output_dir: str | None = None
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    eval_strategy: str | IntervalStrategy = "no"
    prediction_loss_only: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    eval_accumulation_steps: int | None = None
    eval_delay: float = 0
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: str | SchedulerType = "linear"
    lr_scheduler_kwargs: dict[str, Any] | None = None
    warmup_steps: float = 0
    warmup_ratio: float | None = None
    optim: str = "adamw_torch_fused"
    logging_strategy: str | IntervalStrategy = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    logging_nan_inf_filter: bool = True
    save_strategy: str | SaveStrategy = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    eval_steps: float | None = None
    eval_on_start: bool = False
    seed: int = 42
    data_seed: int | None = None
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict[str, Any] | None = None
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    use_cpu: bool = False
    use_cache: bool = False
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = None
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    ignore_data_skip: bool = False
    report_to: str | list[str] | None = "none"
    run_name: str | None = None
    disable_tqdm: bool | None = None
    include_num_input_tokens_seen: bool | str = "no"
    average_tokens_across_devices: bool = True
    resume_from_checkpoint: str | None = None
    local_rank: int = -1
    ddp_backend: str | None = None
    ddp_timeout: int = 1800
    ddp_find_unused_parameters: bool | None = None
    ddp_bucket_cap_mb: int | None = None
    ddp_broadcast_buffers: bool | None = None
    fsdp: str | list[str] | None = None
    fsdp_config: dict[str, Any] | None = None
    skip_memory_metrics: bool = True

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(os.fspath(self.output_dir))
        self.eval_strategy = _enum(IntervalStrategy, self.eval_strategy, "eval_strategy")
        self.logging_strategy = _enum(IntervalStrategy, self.logging_strategy, "logging_strategy")
        self.save_strategy = _enum(SaveStrategy, self.save_strategy, "save_strategy")
        self.lr_scheduler_type = scheduler_type(self.lr_scheduler_type)
        if self.optim not in OPTIMIZERS:
            raise UnsupportedArgumentError(
                f"optim={self.optim!r} is not supported; choose one of {list(OPTIMIZERS)}, or pass "
                "optimizers=(optimizer, scheduler) to the Trainer."
            )
        self.report_to = _reporters(self.report_to)
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"
        if self.include_num_input_tokens_seen not in ("no", "all", "non_padding"):
            raise ConfigError("include_num_input_tokens_seen must be 'no', 'all' or 'non_padding'.")
        if self.disable_tqdm is None:
            self.disable_tqdm = logger.getEffectiveLevel() > logging.WARNING
        if self.eval_strategy is IntervalStrategy.STEPS and not self.eval_steps:
            if not self.logging_steps:
                raise ConfigError("eval_strategy='steps' needs eval_steps (or logging_steps) above 0.")
            self.eval_steps = self.logging_steps
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        self.fsdp_options = distributed.parse_fsdp_options(self.fsdp)
        self.fsdp_config = dict(self.fsdp_config or {})
        self._validate()

    def _validate(self) -> None:
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.warmup_steps < 0 or (self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1):
            raise ConfigError("warmup_steps must be >= 0 and warmup_ratio between 0 and 1.")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError("Set max_steps or num_train_epochs above 0: there is nothing to train otherwise.")
        for strategy, steps_name in ((self.logging_strategy, "logging_steps"), (self.eval_strategy, "eval_steps"),
                                     (self.save_strategy, "save_steps")):
            steps = getattr(self, steps_name)
            if strategy == "steps":
                if steps is None or steps <= 0:
                    raise ConfigError(f"{steps_name} must be above 0 with a 'steps' strategy, got {steps!r}.")
                if steps > 1 and steps != int(steps):
                    raise ConfigError(f"{steps_name} above 1 must be a whole number of steps, got {steps}.")
                if steps > 1:
                    setattr(self, steps_name, int(steps))
        if self.load_best_model_at_end and self.save_strategy is not SaveStrategy.BEST:
            if self.eval_strategy.value != self.save_strategy.value:
                raise ConfigError(
                    "load_best_model_at_end needs save_strategy to match eval_strategy (or be 'best'), got "
                    f"eval_strategy={self.eval_strategy.value!r} and save_strategy={self.save_strategy.value!r}."
                )
            if self.eval_strategy is IntervalStrategy.STEPS and self.save_steps % self.eval_steps:
                raise ConfigError(
                    f"load_best_model_at_end needs save_steps ({self.save_steps}) to be a multiple of "
                    f"eval_steps ({self.eval_steps})."
                )
        if self.save_strategy is SaveStrategy.BEST and self.metric_for_best_model is None:
            raise ConfigError("save_strategy='best' needs metric_for_best_model.")
        if self.fp16 and self.bf16:
            raise ConfigError("Choose one of fp16 and bf16.")
        if self.fp16 and self.device.type != "cuda":
            raise UnsupportedArgumentError("fp16 needs a CUDA device; on CPU use bf16=True or full precision.")
        if self.dataloader_num_workers == 0 and self.dataloader_prefetch_factor is not None:
            raise ConfigError("dataloader_prefetch_factor needs dataloader_num_workers above 0.")

    # -- derived values ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device this process trains on: its CUDA device (LOCAL_RANK under torchrun), else the CPU."""
        if self.use_cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed.local_rank())

    @property
    def n_gpu(self) -> int:
        return 1 if self.device.type == "cuda" else 0

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    @property
    def process_index(self) -> int:
        return distributed.rank()

    @property
    def local_process_index(self) -> int:
        return distributed.local_rank()

    @property
    def parallel_mode(self) -> str:
        return "distributed" if self.world_size > 1 else "not_parallel"

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints and models (rank 0 only)."""
        return self.process_index == 0

    @property
    def should_log(self) -> bool:
        return self.process_index == 0

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: ``warmup_steps`` when 1 or more, else that fraction (or ``warmup_ratio``) of training."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        ratio = self.warmup_steps or self.warmup_ratio or 0.0
        return math.ceil(num_training_steps * ratio)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {key: value.value if isinstance(value, enum.Enum) else value for key, value in values.items()}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)


def _enum(kind: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not one of {[member.value for member in kind]}.") from None


def _reporters(report_to: str | list[str] | None) -> list[str]:
    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    if names in ([None], ["none"]):
        return []
    if names == ["all"]:
        return ["jsonl"] + (["tensorboard"] if _tensorboard_installed() else [])
    unknown = [name for name in names if name not in REPORTERS]
    if unknown:
        raise UnsupportedArgumentError(
            f"report_to={unknown} is not supported; choose from 'none', 'all', {list(REPORTERS)}."
        )
    if "tensorboard" in names and not _tensorboard_installed():
        raise UnsupportedArgumentError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard.")
    return names


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _check_field_names(init: Any) -> Any:
    """Wrap the dataclass ``__init__`` so unsupported and unknown fields raise with advice."""
    known = {field.name for field in dataclasses.fields(TrainingArguments)}

    @functools.wraps(init)
    def checked_init(self: TrainingArguments, *args: Any, **kwargs: Any) -> None:
        for name in list(kwargs):
            if name in known:
                continue
            if name in _UNSUPPORTED_FIELDS:
                value = kwargs.pop(name)
                if value not in _OFF_VALUES:
                    raise UnsupportedArgumentError(f"TrainingArguments({name}={value!r}): {_UNSUPPORTED_FIELDS[name]}")
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnsupportedArgumentError(f"TrainingArguments got an unknown field {name!r}.{hint}")
        init(self, *args, **kwargs)

    return checked_init


TrainingArguments.__init__ = _check_field_names(TrainingArguments.__init__)  # type: ignore[method-assign]
