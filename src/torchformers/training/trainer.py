"""Trainer: the training and evaluation loop for any model of the library (or any nn.Module that
returns a loss), with the reference library's API, events and checkpoint layout.

One optimizer step reads ``gradient_accumulation_steps`` micro-batches; token-level losses are
normalized by the number of labelled tokens of the whole step (summed across processes), so the
update equals the one of a single large batch. Under ``torchrun`` the model is replicated with
DistributedDataParallel (or sharded with FSDP), each process reads its share of every epoch's
shuffled order, and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import ConfigError, TorchformersError, TrainingError, UnsupportedArgumentError, describe_path
from ..files import atomic_write_text
from ..nn.losses import IGNORE_INDEX
from ..seeding import set_seed
from ..weights.safetensors import save_safetensors
from . import checkpoints, distributed
from .arguments import SaveStrategy, TrainingArguments
from .callbacks import (
    REPORTING_CALLBACKS,
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from .collators import DataCollatorWithPadding, default_data_collator
from .schedulers import get_scheduler

logger = logging.getLogger("torchformers")

# Parameters whose names match this get no weight decay (biases and normalization weights).
_NO_DECAY_NAMES = r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)"


class EvalPrediction:
    """What ``compute_metrics`` receives: ``predictions`` and ``label_ids`` as NumPy arrays (or tuples of
    them); it also unpacks as ``predictions, label_ids = eval_prediction``."""

    def __init__(self, predictions: Any, label_ids: Any, inputs: Any = None, losses: Any = None) -> None:
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs
        self.losses = losses
        self.elements = (predictions, label_ids) + tuple(x for x in (inputs, losses) if x is not None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.elements)

    def __getitem__(self, index: int) -> Any:
        return self.elements[index]


class EvalLoopOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None
    num_samples: int | None


class PredictionOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


def speed_metrics(split: str, start_time: float, num_samples: int | None = None, num_steps: int | None = None,
                  num_tokens: int | None = None) -> dict[str, float]:
    """``{split}_runtime`` and the samples, steps and tokens per second since ``start_time``."""
    runtime = time.time() - start_time
    metrics = {f"{split}_runtime": round(runtime, 4)}
    if runtime > 0:
        for name, count in (("samples", num_samples), ("steps", num_steps), ("tokens", num_tokens)):
            if count is not None:
                metrics[f"{split}_{name}_per_second"] = round(count / runtime, 3)
    return metrics


class ShardSampler(torch.utils.data.Sampler):
    """This process's share of one epoch's sample order.

    Training order is a permutation seeded with ``seed + epoch`` (what DistributedSampler draws), so it
    does not depend on the global random state and a resumed run sees the same order. The order is
    padded by repeating its start until every process gets as many samples; process ``rank`` takes
    positions ``rank, rank + world, ...``. ``skip`` samples are left out of the next iteration only
    (a resumed epoch's batches already trained).
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.per_rank = math.ceil(num_samples / num_replicas)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.num_replicas
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        skip, self.skip = self.skip, 0
        return iter(order[self.rank:total:self.num_replicas][skip:])

    def __len__(self) -> int:
        return self.per_rank


class _KeepColumns:
    """Wraps a collator: rows keep only the keys the model's forward takes (and the label names)."""

    def __init__(self, collator: Callable, keep: set[str]) -> None:
        self.collator = collator
        self.keep = keep

    def __call__(self, features: list[Any]) -> Any:
        if features and isinstance(features[0], Mapping):
            features = [{key: value for key, value in row.items() if key in self.keep} for row in features]
        return self.collator(features)


def _seed_worker(worker_id: int) -> None:
    set_seed(torch.initial_seed() % 2**32)


def _is_datasets_dataset(dataset: Any) -> bool:
    """A ``datasets.Dataset`` (duck-typed so that ``datasets`` is never imported here)."""
    return hasattr(dataset, "column_names") and hasattr(dataset, "remove_columns") and hasattr(dataset, "__len__")


def _has_length(dataset: Any) -> bool:
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError):
        return False


def _batch_size(inputs: Any) -> int | None:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return value.shape[0]
        if isinstance(value, (Mapping, list, tuple)):
            found = _batch_size(value)
            if found is not None:
                return found
    return None


def _to_numpy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.cpu().numpy()
    return value


def _concat_padded(arrays: list[Any]) -> Any:
    """Concatenate batches along the first axis, padding other axes with -100 where their sizes differ."""
    first = arrays[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_concat_padded([a[i] for a in arrays]) for i in range(len(first)))
    arrays = [np.atleast_1d(a) for a in arrays]
    tail = tuple(max(sizes) for sizes in zip(*(a.shape[1:] for a in arrays), strict=True))
    if all(a.shape[1:] == tail for a in arrays):
        return np.concatenate(arrays)
    padded = np.full((sum(a.shape[0] for a in arrays), *tail), IGNORE_INDEX, dtype=first.dtype)
    row = 0
    for a in arrays:
        padded[(slice(row, row + a.shape[0]), *(slice(0, n) for n in a.shape[1:]))] = a
        row += a.shape[0]
    return padded


def _interleave_ranks(per_rank: list[Any], num_samples: int) -> Any:
    """Undo the round-robin split of ShardSampler: rank r's i-th row is sample ``i * world + r``."""
    first = per_rank[0]
    if first is None:
        return None
    if isinstance(first, (list, tuple)):
        return type(first)(_interleave_ranks([p[i] for p in per_rank], num_samples) for i in range(len(first)))
    padded = _concat_padded(per_rank)  # pads the ranks' arrays to one shape
    rows = min(p.shape[0] for p in per_rank)
    world = len(per_rank)
    merged = np.empty((rows * world, *padded.shape[1:]), dtype=padded.dtype)
    start = 0
    for rank, part in enumerate(per_rank):
        merged[rank::world] = padded[start:start + rows]
        start += part.shape[0]
    return merged[:num_samples]


def _plain_number(value: Any) -> Any:
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    return value


def _describe_batch(inputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}: {list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
                     for key, value in inputs.items())


class Trainer:
    """Train, evaluate and predict with a model, as the reference library's Trainer does.

    ``model`` is a torchformers model with a head (or any nn.Module returning a loss when given labels);
    datasets are torch Datasets (rows are dicts), IterableDatasets (with ``max_steps``) or
    ``datasets.Dataset`` objects, whose columns the model's forward does not take are removed.
    ``tokenizer`` is accepted as an alias of ``processing_class``. ``model_init`` and hyper-parameter
    search are not supported.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback | type[TrainerCallback]] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        *,
        tokenizer: Any = None,
    ) -> None:
        if model_init is not None:
            raise UnsupportedArgumentError("model_init is not supported: build the model and pass it as model.")
        if model is None:
            raise TrainingError("Trainer needs a model.")
        if tokenizer is not None:
            if processing_class is not None:
                raise UnsupportedArgumentError("Pass processing_class or tokenizer, not both.")
            processing_class = tokenizer
        self.args = args = args if args is not None else TrainingArguments(output_dir="tmp_trainer")
        set_seed(args.seed)
        self.device = args.device
        distributed.init_process_group(self.device, args.ddp_backend, args.ddp_timeout)
        if args.fsdp_options:
            distributed.check_fsdp_possible(self.device)
        _check_trainable(model)
        if os.path.isfile(args.output_dir):
            raise ConfigError(f"output_dir={describe_path(args.output_dir)} is a file; give a directory to write "
                              "checkpoints into.")
        self.is_model_parallel = len({p.device for p in model.parameters()}) > 1
        if not self.is_model_parallel and not args.fsdp_options:
            model.to(self.device)
        self.model = self.model_wrapped = model
        forward = inspect.signature(model.forward).parameters
        self.model_accepts_loss_kwargs = getattr(model, "accepts_loss_kwargs", None)
        if self.model_accepts_loss_kwargs is None:
            self.model_accepts_loss_kwargs = "num_items_in_batch" in forward or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in forward.values())
        self._forward_parameters = list(forward)
        self.label_names = args.label_names if args.label_names is not None else _find_labels(model)
        self.can_return_loss = any(n == "return_loss" and p.default is True for n, p in forward.items())
        self._loss_shifts_labels = type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
        if data_collator is None:
            data_collator = DataCollatorWithPadding(processing_class) if hasattr(processing_class, "pad") \
                else default_data_collator
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        if optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise UnsupportedArgumentError("Pass optimizers or optimizer_cls_and_kwargs, not both.")
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self._created_lr_scheduler = False
        self.scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
        default_callbacks = [DefaultFlowCallback] + [REPORTING_CALLBACKS[name] for name in args.report_to]
        self.callback_handler = CallbackHandler(default_callbacks + list(callbacks or []), self.model,
                                                processing_class, self.optimizer, self.lr_scheduler)
        self.add_callback(PrinterCallback if args.disable_tqdm else ProgressCallback)
        if args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        self.state = TrainerState(is_local_process_zero=self.is_local_process_zero(),
                                  is_world_process_zero=self.is_world_process_zero())
        self.is_in_train = False
        self.current_flos = 0.0
        self._signature_columns: list[str] | None = None
        self._train_batch_size = args.train_batch_size
        self.control = self.callback_handler.call_event("on_init_end", args, self.state, self.control)
        if hasattr(getattr(model, "config", None), "use_cache"):
            model.config.use_cache = args.use_cache

    # -- callbacks and process roles -------------------------------------------------------
    def add_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> TrainerCallback | None:
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        self.callback_handler.remove_callback(callback)

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0

    def _event(self, name: str, **kwargs: Any) -> None:
        self.control = self.callback_handler.call_event(name, self.args, self.state, self.control, **kwargs)

    # -- data ------------------------------------------------------------------------------
    def _signature(self) -> list[str]:
        if self._signature_columns is None:
            self._signature_columns = list(dict.fromkeys(
                self._forward_parameters + ["label", "label_ids"] + list(self.label_names)))
        return self._signature_columns

    def _remove_unused_columns(self, dataset: Any, description: str) -> Any:
        if not self.args.remove_unused_columns:
            return dataset
        keep = self._signature()
        unused = [name for name in dataset.column_names if name not in keep]
        if len(unused) == len(dataset.column_names):
            raise TrainingError(
                f"No column of the {description} dataset ({dataset.column_names}) is an input of "
                f"{type(self.model).__name__}.forward ({self._forward_parameters}). Tokenize the dataset into the "
                "model's inputs, or pass remove_unused_columns=False with a data_collator that builds them."
            )
        if unused:
            logger.info("Columns %s of the %s dataset are not inputs of %s.forward and are removed.", unused,
                        description, type(self.model).__name__)
        return dataset.remove_columns(unused) if unused else dataset

    def _dataloader(self, dataset: Any, batch_size: int, training: bool, description: str) -> DataLoader:
        collator = self.data_collator
        if _is_datasets_dataset(dataset):
            dataset = self._remove_unused_columns(dataset, description)
        elif self.args.remove_unused_columns:
            collator = _KeepColumns(collator, set(self._signature()))
        args = self.args
        sampler = None
        if isinstance(dataset, IterableDataset):
            if args.world_size > 1:
                raise UnsupportedArgumentError("IterableDataset under torchrun is not supported: shard it yourself "
                                               "and wrap it in a map-style Dataset, or train in one process.")
        else:
            seed = args.data_seed if args.data_seed is not None else args.seed
            sampler = ShardSampler(len(dataset), shuffle=training, seed=seed, num_replicas=args.world_size,
                                   rank=args.process_index)
        workers = args.dataloader_num_workers
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, num_workers=workers,
            pin_memory=args.dataloader_pin_memory and self.device.type == "cuda",
            drop_last=args.dataloader_drop_last, persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor, worker_init_fn=_seed_worker if workers else None,
            # The loader's own generator (worker seeds) keeps the global random state untouched.
            generator=torch.Generator().manual_seed(args.seed),
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise TrainingError("Trainer.train() needs a train_dataset.")
        return self._dataloader(self.train_dataset, self._train_batch_size, True, "training")

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise TrainingError("Trainer.evaluate() needs an eval_dataset.")
        return self._dataloader(dataset, self.args.eval_batch_size, False, "evaluation")

    def get_test_dataloader(self, test_dataset: Dataset) -> DataLoader:
        return self._dataloader(test_dataset, self.args.eval_batch_size, False, "test")

    def num_examples(self, dataloader: DataLoader) -> int:
        try:
            return len(dataloader.dataset)
        except (TypeError, AttributeError):
            return len(dataloader) * self.args.per_device_train_batch_size

    def _prepare_input(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            return type(data)({key: self._prepare_input(value) for key, value in data.items()})
        if isinstance(data, (list, tuple)):
            return type(data)(self._prepare_input(value) for value in data)
        if isinstance(data, torch.Tensor):
            return data.to(self.device, non_blocking=True)
        return data

    def _prepare_inputs(self, inputs: Any) -> Any:
        inputs = self._prepare_input(inputs)
        if isinstance(inputs, Mapping):
            self._check_batch(inputs)
        return inputs

    def _check_batch(self, inputs: Mapping[str, Any]) -> None:
        main = getattr(self.model, "main_input_name", "input_ids")
        name = type(self.model).__name__
        if main in self._forward_parameters and main not in inputs and "inputs_embeds" not in inputs:
            raise TrainingError(
                f"A batch has keys {sorted(inputs)} but no {main!r}, which {name}.forward needs. Check that the "
                f"dataset rows hold the model's inputs (it takes {self._forward_parameters}); columns it does not "
                "take are removed unless remove_unused_columns=False."
            )
        inputs_tensor = inputs.get(main)
        for label in self.label_names:
            value = inputs.get(label)
            if isinstance(value, torch.Tensor) and isinstance(inputs_tensor, torch.Tensor) and (
                    value.ndim == 0 or value.shape[0] != inputs_tensor.shape[0]):
                raise TrainingError(
                    f"{label!r} has shape {list(value.shape)} but {main!r} has {list(inputs_tensor.shape)}: a batch "
                    "needs one label entry per row. Check how the dataset's labels are stored and collated."
                )

    # -- optimizer and schedule -------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Names of the parameters that get weight decay: all but biases and normalization weights."""
        pattern = re.compile(_NO_DECAY_NAMES)
        names = []
        for module_name, module in model.named_modules():
            is_norm = isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                if not is_norm and not pattern.search(full.lower()):
                    names.append(full)
        return names

    def create_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over two groups: weight decay for weights, none for biases and norms."""
        if self.optimizer is None:
            decay = set(self.get_decay_parameter_names(self.model))
            trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for name, p in trainable if name in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0},
            ]
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, options = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls = torch.optim.AdamW
                options = {"lr": self.args.learning_rate, "betas": (self.args.adam_beta1, self.args.adam_beta2),
                           "eps": self.args.adam_epsilon, "fused": self.args.optim == "adamw_torch_fused"}
            self.optimizer = optimizer_cls(groups, **options)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps)

    def _get_learning_rate(self) -> float:
        lr = self.lr_scheduler.get_last_lr()[0]
        return lr.item() if isinstance(lr, torch.Tensor) else lr

    # -- training -----------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any) -> TrainOutput:
        """Train; with ``resume_from_checkpoint`` (a ``checkpoint-N`` folder, or True for the newest in
        ``output_dir``) continue a saved run exactly: same weights, optimizer, schedule, data order and
        random state."""
        if trial is not None or kwargs:
            raise UnsupportedArgumentError(f"train() got unsupported arguments {['trial'] if trial else sorted(kwargs)}.")
        args = self.args
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        if resume_from_checkpoint is True:
            resume_from_checkpoint = checkpoints.get_last_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise TrainingError(f"resume_from_checkpoint=True but {describe_path(args.output_dir)} holds no "
                                    "checkpoint-N folder.")
        resume = None
        if resume_from_checkpoint:
            resume = checkpoints.read_checkpoint(os.fspath(resume_from_checkpoint), args.world_size,
                                                 args.process_index)
        self.is_in_train = True
        if args.gradient_checkpointing:
            if not hasattr(self.model, "gradient_checkpointing_enable"):
                raise UnsupportedArgumentError(f"{type(self.model).__name__} has no gradient checkpointing.")
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        if args.should_save:
            checkpoints.remove_stale_staging(args.output_dir)
        try:
            return self._training_loop(resume, ignore_keys_for_eval)
        finally:
            self.is_in_train = False

    def _training_loop(self, resume: checkpoints.TrainingCheckpoint | None,
                       ignore_keys_for_eval: list[str] | None) -> TrainOutput:
        args = self.args
        dataloader = self.get_train_dataloader()
        accumulation = args.gradient_accumulation_steps
        batches_per_epoch = len(dataloader) if _has_length(dataloader) else None
        if batches_per_epoch is not None:
            updates_per_epoch = max(math.ceil(batches_per_epoch / accumulation), 1)
            if args.max_steps > 0:
                max_steps = args.max_steps
                num_epochs = math.ceil(max_steps / updates_per_epoch)
            else:
                max_steps = math.ceil(args.num_train_epochs * updates_per_epoch)
                num_epochs = math.ceil(args.num_train_epochs)
        elif args.max_steps > 0:
            max_steps = updates_per_epoch = args.max_steps
            num_epochs = sys.maxsize
            batches_per_epoch = max_steps * accumulation
        else:
            raise ConfigError("A training dataset without a length needs max_steps above 0.")

        self.state = TrainerState(train_batch_size=self._train_batch_size)
        self.state.compute_steps(args, max_steps)
        epochs_trained = batches_to_skip = 0
        if resume is not None:
            self.state = resume.state
            if self.state.best_model_checkpoint and not os.path.isdir(self.state.best_model_checkpoint):
                self.state.best_model_checkpoint = None
            if self.state.train_batch_size not in (None, self._train_batch_size):
                logger.warning("The checkpoint was trained with batches of %s, this run uses %s: the data order "
                               "differs from an uninterrupted run.", self.state.train_batch_size,
                               self._train_batch_size)
            epochs_trained = self.state.global_step // updates_per_epoch
            if not args.ignore_data_skip:
                batches_to_skip = (self.state.global_step % updates_per_epoch) * accumulation
        self.state.max_steps = max_steps
        self.state.num_train_epochs = num_epochs
        self.state.is_local_process_zero = self.is_local_process_zero()
        self.state.is_world_process_zero = self.is_world_process_zero()

        if self._created_lr_scheduler:
            self.lr_scheduler, self._created_lr_scheduler = None, False
        model = self._wrap_model()
        self.create_optimizer()
        self.create_scheduler(max_steps)
        if resume is not None:
            self._apply_checkpoint(resume)
        for name in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, name, getattr(self, name))
        self.callback_handler.train_dataloader = dataloader
        self._flos_per_token = 6 * _count_parameters(self.model)

        logger.info("***** Running training *****  examples: %s, epochs: %s, batch per device: %s, accumulation: "
                    "%s, processes: %s, optimization steps: %s", self.num_examples(dataloader) if
                    _has_length(dataloader) else "unknown", num_epochs, self._train_batch_size, accumulation,
                    args.world_size, max_steps)
        start_time = time.time()
        self._initial_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss = torch.zeros((), device=self.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self._grad_norm: torch.Tensor | None = None
        self._learning_rate: float | None = None
        model.zero_grad(set_to_none=True)
        self._event("on_train_begin")
        if args.eval_on_start:
            self._evaluate(ignore_keys_for_eval)
        sampler = dataloader.sampler if isinstance(dataloader.sampler, ShardSampler) else None
        for epoch in range(epochs_trained, num_epochs):
            resuming_epoch = resume if (resume is not None and epoch == epochs_trained) else None
            self._run_epoch(model, dataloader, sampler, epoch, batches_per_epoch, updates_per_epoch,
                            batches_to_skip if resuming_epoch else 0, resuming_epoch, start_time,
                            ignore_keys_for_eval)
            if self.control.should_training_stop:
                break
        return self._finish_training(start_time)

    def _run_epoch(self, model: nn.Module, dataloader: DataLoader, sampler: ShardSampler | None, epoch: int,
                   batches_per_epoch: int, updates_per_epoch: int, batches_to_skip: int,
                   resume: checkpoints.TrainingCheckpoint | None, start_time: float,
                   ignore_keys_for_eval: list[str] | None) -> None:
        args = self.args
        accumulation = args.gradient_accumulation_steps
        if sampler is not None:
            sampler.set_epoch(epoch)
            sampler.skip = batches_to_skip * self._train_batch_size
        self._event("on_epoch_begin")
        batches = iter(dataloader)
        if sampler is None and batches_to_skip:
            for _ in range(batches_to_skip):
                next(batches, None)
        if resume is not None and resume.rng is not None:
            # The uninterrupted run saved its random state right before drawing these batches.
            checkpoints.restore_rng_state(resume.rng)
        step = batches_to_skip - 1  # index of the micro-batch within the epoch
        last_update_size = batches_per_epoch % accumulation or accumulation
        for update in range(batches_to_skip // accumulation, updates_per_epoch):
            wanted = accumulation if update != updates_per_epoch - 1 else last_update_size
            micro_batches = [batch for _, batch in zip(range(wanted), batches, strict=False)]
            if not micro_batches:
                break
            num_items = self._num_items_in_batch(micro_batches)
            self.current_gradient_accumulation_steps = len(micro_batches)
            for index, inputs in enumerate(micro_batches):
                step += 1
                is_last = index == len(micro_batches) - 1
                if index == 0:
                    self._event("on_step_begin")
                with distributed.gradient_sync_paused(model, pause=not is_last):
                    loss = self.training_step(model, inputs, num_items)
                self._accumulate_loss(loss)
                self._count_inputs(inputs)
                if is_last:
                    self._optimizer_step(model)
                    self.state.global_step += 1
                    self.state.epoch = epoch + (step + 1) / batches_per_epoch
                    self._event("on_step_end")
                    self._maybe_log_save_evaluate(model, start_time, ignore_keys_for_eval)
                else:
                    self._event("on_substep_end")
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        if step < 0:
            logger.warning("The training data yielded no batch; stopping at step %d.", self.state.global_step)
            self.control.should_training_stop = True
        self._event("on_epoch_end")
        self._maybe_log_save_evaluate(model, start_time, ignore_keys_for_eval)

    def _accumulate_loss(self, loss: torch.Tensor) -> None:
        if self.args.logging_nan_inf_filter:
            # A non-finite loss counts as the average of the losses since the last log, without a host sync.
            steps = 1 + self.state.global_step - self._globalstep_last_logged
            loss = torch.where(torch.isfinite(loss), loss, self._tr_loss / steps)
        self._tr_loss += loss

    def _count_inputs(self, inputs: Any) -> None:
        main = getattr(self.model, "main_input_name", "input_ids")
        tokens = inputs.get(main) if isinstance(inputs, Mapping) else None
        if isinstance(tokens, torch.Tensor):
            self.current_flos += float(self._flos_per_token * tokens.numel())
            mode = self.args.include_num_input_tokens_seen
            if mode != "no":
                count = inputs["attention_mask"].sum() if mode == "non_padding" and "attention_mask" in inputs \
                    else torch.tensor(tokens.numel())
                self.state.num_input_tokens_seen += int(distributed.sum_across_ranks(count.to(self.device)).item())

    def _optimizer_step(self, model: nn.Module) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm and self.args.max_grad_norm > 0 else math.inf
        self._grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        self._event("on_pre_optimizer_step")
        stepped = True
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # a lowered scale means inf/nan gradients: step skipped
        else:
            self.optimizer.step()
        self._event("on_optimizer_step")
        self._learning_rate = self._get_learning_rate()
        if stepped:
            self.lr_scheduler.step()
        model.zero_grad(set_to_none=True)

    def _num_items_in_batch(self, batches: list[Any]) -> torch.Tensor | None:
        """Labelled tokens in one optimizer step's micro-batches (over all processes), for models whose
        loss divides by it so that accumulation matches one large batch."""
        if not (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return None
        labels = [batch.get("labels") if isinstance(batch, Mapping) else None for batch in batches]
        if not labels or not all(isinstance(label, torch.Tensor) for label in labels):
            return None
        count = sum((label[..., 1:] if self._loss_shifts_labels else label).ne(IGNORE_INDEX).sum()
                    for label in labels).to(self.device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = distributed.sum_across_ranks(count)
        return count

    def _wrap_model(self) -> nn.Module:
        args = self.args
        if self.model_wrapped is not self.model:
            return self.model_wrapped
        ddp_options = {"find_unused_parameters": bool(args.ddp_find_unused_parameters)}
        if args.ddp_bucket_cap_mb is not None:
            ddp_options["bucket_cap_mb"] = args.ddp_bucket_cap_mb
        if args.ddp_broadcast_buffers is not None:
            ddp_options["broadcast_buffers"] = args.ddp_broadcast_buffers
        model = distributed.wrap_model(self.model, self.device, args.fsdp_options, args.fsdp_config, ddp_options)
        if args.torch_compile or args.torch_compile_backend or args.torch_compile_mode:
            model = torch.compile(model, backend=args.torch_compile_backend or "inductor",
                                  mode=args.torch_compile_mode)
        self.model_wrapped = model
        return model

    def compute_loss_context_manager(self) -> contextlib.AbstractContextManager:
        """Autocast to bf16 or fp16 when asked."""
        if self.args.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.args.fp16:
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def training_step(self, model: nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its (detached) share of the step's loss."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        loss_is_normalized = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
            self.compute_loss_func is not None
        if not loss_is_normalized:
            loss = loss / self.current_gradient_accumulation_steps
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return loss.detach()

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        """The model's loss on ``inputs`` (or ``compute_loss_func(outputs, labels, num_items_in_batch=...)``)."""
        labels = inputs.pop("labels") if self.compute_loss_func is not None and "labels" in inputs else None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = self._forward(model, inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            if hasattr(outputs, "keys") and "loss" not in outputs:
                raise TrainingError(
                    f"{type(self.model).__name__} returned no loss (outputs: {list(outputs.keys())}) for a batch with "
                    f"keys {sorted(inputs)}. Include the labels ({self.label_names or ['labels']}) in the dataset, "
                    "or pass compute_loss_func."
                )
            loss = outputs["loss"] if hasattr(outputs, "keys") else outputs[0]
        if (self.args.average_tokens_across_devices and self.args.world_size > 1 and num_items_in_batch is not None
                and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None)):
            # The loss is this process's share of a total over all processes; DDP averages gradients.
            loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss

    def _forward(self, model: nn.Module, inputs: Mapping[str, Any]) -> Any:
        try:
            return model(**inputs)
        except (TorchformersError, torch.OutOfMemoryError):
            raise
        except (RuntimeError, ValueError, IndexError) as error:
            raise TrainingError(
                f"{type(self.model).__name__} failed on a batch ({_describe_batch(inputs)}): {error}. Check that "
                "each row holds the model's inputs and labels of the shape its head expects: one class per "
                "sequence for sequence classification, one label per token for token classification and "
                "language modelling."
            ) from error

    def _maybe_log_save_evaluate(self, model: nn.Module, start_time: float,
                                 ignore_keys_for_eval: list[str] | None) -> None:
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            loss_sum = distributed.sum_across_ranks(self._tr_loss).item() / self.args.world_size
            self._tr_loss.zero_()
            logs: dict[str, float] = {"loss": loss_sum / (self.state.global_step - self._globalstep_last_logged)}
            if self._grad_norm is not None:
                norm = self._grad_norm
                norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                logs["grad_norm"] = float(norm)
            logs["learning_rate"] = self._learning_rate if self._learning_rate is not None else \
                self._get_learning_rate()
            self._total_loss_scalar += loss_sum
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            self.log(logs, start_time)
        if self.control.should_evaluate:
            metrics = self._evaluate(ignore_keys_for_eval)
            is_new_best = self._determine_best_metric(metrics)
            if self.args.save_strategy is SaveStrategy.BEST:
                self.control.should_save = is_new_best
        if self.control.should_save:
            self._save_checkpoint()
            self._event("on_save")

    def _evaluate(self, ignore_keys: list[str] | None) -> dict[str, float]:
        return self.evaluate(ignore_keys=ignore_keys)

    def _determine_best_metric(self, metrics: dict[str, float]) -> bool:
        name = self.args.metric_for_best_model
        if name is None:
            return False
        name = name if name.startswith("eval_") else f"eval_{name}"
        if name not in metrics:
            raise ConfigError(f"metric_for_best_model is {name!r}, which the evaluation does not report; it reports "
                              f"{sorted(metrics)}. Change metric_for_best_model or compute_metrics.")
        value = metrics[name]
        best = self.state.best_metric
        if best is None or (value > best if self.args.greater_is_better else value < best):
            self.state.best_metric = value
            if self.args.save_strategy is not SaveStrategy.NO:
                self.state.best_global_step = self.state.global_step
            return True
        return False

    def _finish_training(self, start_time: float) -> TrainOutput:
        self._total_loss_scalar += distributed.sum_across_ranks(self._tr_loss).item() / self.args.world_size
        steps = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(steps, 0.001)
        samples = steps * self._train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        metrics = speed_metrics("train", start_time, num_samples=samples, num_steps=steps)
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self.log(metrics)
        best = self.state.best_model_checkpoint
        if self.args.load_best_model_at_end and best is not None:
            logger.info("Loading the best model from %s (score %s).", best, self.state.best_metric)
            self._load_model_weights(checkpoints.load_model_tensors(best), best)
        if self.args.should_save and best is not None and self.args.save_total_limit == 1:
            for path in checkpoints.sorted_checkpoints(self.args.output_dir):
                if os.path.normpath(path) != os.path.normpath(best):
                    shutil.rmtree(path, ignore_errors=True)
        self._event("on_train_end")
        return TrainOutput(self.state.global_step, train_loss, metrics)

    # -- logging ------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``epoch`` (and tokens seen) to ``logs``, record them in the state's history and call on_log."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                seen = self.state.num_input_tokens_seen - self._initial_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=seen))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._event("on_log", logs=logs)

    def store_flos(self) -> None:
        flos = torch.tensor(self.current_flos, dtype=torch.float64, device=self.device)
        self.state.total_flos += distributed.sum_across_ranks(flos).item() if self.args.world_size > 1 \
            else self.current_flos
        self.current_flos = 0.0

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        main = getattr(self.model, "main_input_name", "input_ids")
        tokens = inputs.get(main)
        return 6 * tokens.numel() * _count_parameters(self.model) if isinstance(tokens, torch.Tensor) else 0

    # -- evaluation and prediction ------------------------------------------------------------
    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Loss (and ``compute_metrics``) over the evaluation set; a dict of datasets evaluates each, its
        metrics prefixed with ``{metric_key_prefix}_{name}``."""
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics: dict[str, float] = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset if eval_dataset is not None else name, ignore_keys,
                                             f"{metric_key_prefix}_{name}"))
            return metrics
        dataloader = self.get_eval_dataloader(eval_dataset)
        start_time = time.time()
        output = self.evaluation_loop(dataloader, "Evaluation", True if self.compute_metrics is None else None,
                                      ignore_keys, metric_key_prefix)
        total_batch = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / total_batch)))
        self.log(output.metrics)
        self._event("on_evaluate", metrics=output.metrics)
        return output.metrics

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> PredictionOutput:
        """Predictions (and, when the dataset has labels, metrics) for ``test_dataset``."""
        dataloader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(dataloader, "Prediction", None, ignore_keys, metric_key_prefix)
        total_batch = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                            num_steps=math.ceil(output.num_samples / total_batch)))
        self._event("on_predict", metrics=output.metrics)
        return PredictionOutput(output.predictions, output.label_ids, output.metrics)

    def evaluation_loop(self, dataloader: DataLoader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """Run the model over ``dataloader``; gather losses, predictions and labels from every process."""
        args = self.args
        loss_only = args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
        model = self.model_wrapped if distributed.is_fsdp(self.model) else self.model
        model.eval()
        self.callback_handler.eval_dataloader = dataloader
        losses, predictions, labels = [], [], []
        observed = 0
        for inputs in dataloader:
            batch_size = _batch_size(inputs) or 1
            observed += batch_size
            loss, logits, label = self.prediction_step(model, inputs, loss_only, ignore_keys)
            if loss is not None:
                losses.append(_to_numpy(loss.float().reshape(1).repeat(batch_size)))
            if logits is not None:
                if self.preprocess_logits_for_metrics is not None:
                    logits = self.preprocess_logits_for_metrics(logits, label)
                predictions.append(_to_numpy(logits))
            if label is not None:
                labels.append(_to_numpy(label))
            self._event("on_prediction_step")
        all_losses = _concat_padded(losses) if losses else None
        all_predictions = _concat_padded(predictions) if predictions else None
        all_labels = _concat_padded(labels) if labels else None
        dataset = dataloader.dataset
        num_samples = len(dataset) if _has_length(dataset) else observed
        if args.world_size > 1:
            gathered = distributed.gather_objects((all_losses, all_predictions, all_labels))
            all_losses, all_predictions, all_labels = (
                _interleave_ranks([part[i] for part in gathered], num_samples) for i in range(3))
        metrics: dict[str, Any] = {}
        if self.compute_metrics is not None and all_predictions is not None and all_labels is not None:
            metrics = {key: _plain_number(value)
                       for key, value in self.compute_metrics(EvalPrediction(all_predictions, all_labels)).items()}
        if all_losses is not None:
            finite = all_losses[np.isfinite(all_losses)] if args.logging_nan_inf_filter else all_losses
            metrics[f"{metric_key_prefix}_loss"] = float((finite if finite.size else all_losses).mean())
        metrics = {key if key.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{key}": value
                   for key, value in metrics.items()}
        return EvalLoopOutput(all_predictions, all_labels, metrics, num_samples)

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        """``(loss, logits, labels)`` for one batch, without gradients."""
        has_labels = bool(self.label_names) and all(inputs.get(name) is not None for name in self.label_names)
        return_loss = inputs.get("return_loss")
        loss_without_labels = not self.label_names and (self.can_return_loss if return_loss is None else return_loss)
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            ignore_keys = list(getattr(getattr(self.model, "config", None), "keys_to_ignore_at_inference", None)
                               or ["past_key_values"])
        labels = None
        if has_labels or loss_without_labels:
            labels = tuple(inputs.get(name) for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
        with torch.no_grad(), self.compute_loss_context_manager():
            if has_labels or loss_without_labels:
                loss, outputs = self.compute_loss(model, dict(inputs), return_outputs=True,
                                                  num_items_in_batch=self._num_items_in_batch([inputs]))
                loss = loss.detach().mean()
                skip = [*ignore_keys, "loss"]
            else:
                loss, outputs, skip = None, self._forward(model, inputs), ignore_keys
        if prediction_loss_only:
            return loss, None, None
        if hasattr(outputs, "keys"):
            logits = tuple(value for key, value in outputs.items() if key not in skip)
        else:
            logits = tuple(outputs[1:] if loss is not None else outputs)
        logits = logits[0] if len(logits) == 1 else logits
        return loss, logits, labels

    # -- saving and loading ---------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (safetensors), its config and the processing class; rank 0 writes."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        full_state = distributed.full_model_state(self.model)  # a collective under FSDP
        if self.args.should_save:
            self._save(output_dir, full_state)

    def _save(self, output_dir: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        os.makedirs(output_dir, exist_ok=True)
        if hasattr(self.model, "save_pretrained"):
            self.model.save_pretrained(output_dir, state_dict=state_dict)
        else:
            tensors = state_dict if state_dict is not None else self.model.state_dict()
            save_safetensors(tensors, os.path.join(output_dir, "model.safetensors"))
        tokenizer = self.processing_class or getattr(self.data_collator, "tokenizer", None)
        if hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(output_dir)
        atomic_write_text(os.path.join(output_dir, checkpoints.TRAINING_ARGS_NAME), self.args.to_json_string())

    def _save_checkpoint(self) -> None:
        """Write ``checkpoint-{global_step}`` into a staging folder, then rename it into place."""
        args = self.args
        final_dir = os.path.join(args.output_dir, f"{checkpoints.PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        staged = checkpoints.staging_dir(final_dir)
        self.store_flos()
        if args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
            os.makedirs(staged)
        distributed.barrier()
        try:
            full_model = distributed.full_model_state(self.model)
            optimizer_state = None if args.save_only_model else \
                distributed.full_optimizer_state(self.model, self.optimizer)
            if args.should_save:
                self._save(staged, full_model)
                if optimizer_state is not None:
                    torch.save(optimizer_state, os.path.join(staged, checkpoints.OPTIMIZER_NAME))
                    torch.save(self.lr_scheduler.state_dict(), os.path.join(staged, checkpoints.SCHEDULER_NAME))
                    if self.scaler is not None:
                        torch.save(self.scaler.state_dict(), os.path.join(staged, checkpoints.SCALER_NAME))
            if not args.save_only_model:
                rng_file = checkpoints.rng_file_name(args.world_size, args.process_index)
                torch.save(checkpoints.capture_rng_state(), os.path.join(staged, rng_file))
            if self.state.best_global_step is not None:
                best_dir = os.path.join(args.output_dir,
                                        f"{checkpoints.PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
                if self.state.best_global_step == self.state.global_step or os.path.isdir(best_dir):
                    self.state.best_model_checkpoint = best_dir
            if args.should_save:
                self.state.record_callback_states(self.callback_handler.callbacks + [self.control])
                self.state.save_to_json(os.path.join(staged, checkpoints.TRAINER_STATE_NAME))
            distributed.barrier()
            if args.should_save:
                checkpoints.publish(staged, final_dir)
        except BaseException:
            if args.should_save:
                shutil.rmtree(staged, ignore_errors=True)
            raise
        if args.should_save:
            checkpoints.rotate_checkpoints(args.output_dir, args.save_total_limit, self.state.best_model_checkpoint)

    def _apply_checkpoint(self, resume: checkpoints.TrainingCheckpoint) -> None:
        """Load a checkpoint's weights, optimizer, schedule and scaler (its random state is restored later,
        right before the first batch is drawn)."""
        self._load_model_weights(resume.model, resume.path)
        where = describe_path(resume.path)
        try:
            distributed.load_full_optimizer_state(self.model, self.optimizer, resume.optimizer)
            self.lr_scheduler.load_state_dict(resume.scheduler)
            if self.scaler is not None and resume.scaler is not None:
                self.scaler.load_state_dict(resume.scaler)
        except (ValueError, KeyError, RuntimeError, TypeError) as error:
            raise TrainingError(f"{where}: the optimizer or scheduler state does not fit this model and these "
                                f"arguments ({error}). Resume with the model and optimizer the run used.") from error

    def _load_model_weights(self, tensors: dict[str, torch.Tensor], path: str) -> None:
        tied = set(self.model.tied_weight_keys()) if hasattr(self.model, "tied_weight_keys") else set()
        try:
            result = distributed.load_full_model_state(self.model, tensors)
        except RuntimeError as error:
            raise TrainingError(f"{describe_path(path)}: the saved weights do not fit "
                                f"{type(self.model).__name__} ({error}).") from error
        missing = [key for key in result.missing_keys if key not in tied]
        if missing or result.unexpected_keys:
            raise TrainingError(
                f"{describe_path(path)} does not hold the weights of this {type(self.model).__name__}: missing "
                f"{missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}. Resume with the model the run used."
            )

    def end(self) -> None:
        """Leave the process group (call once, after the last train/evaluate/save)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # The DDP wrapper goes first, while its process group still exists, and every rank
            # arrives before any tears down: left to interpreter exit, its reducer sometimes
            # aborted the process ("terminate called without an active exception").
            self.model_wrapped = self.model
            gc.collect()
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _find_labels(model: nn.Module) -> list[str]:
    parameters = inspect.signature(model.forward).parameters
    if "QuestionAnswering" in type(model).__name__:
        return [name for name in parameters if "label" in name or name in ("start_positions", "end_positions")]
    return [name for name in parameters if "label" in name]


def _count_parameters(model: nn.Module) -> int:
    if hasattr(model, "num_parameters"):
        return model.num_parameters(exclude_embeddings=True)
    return sum(p.numel() for p in model.parameters())


def _check_trainable(model: nn.Module) -> None:
    """A library model without a head (``BertModel``, ``LlamaModel``) returns no loss: refuse it early."""
    forward = inspect.signature(model.forward).parameters
    is_base_model = hasattr(model, "save_pretrained") and type(model).__name__.endswith("Model")
    if is_base_model and not any("label" in name or name.endswith("_positions") for name in forward):
        raise TrainingError(
            f"{type(model).__name__} only computes hidden states and takes no labels, so it cannot be trained as "
            "is; use a class with a head for your task (AutoModelForSequenceClassification, "
            "AutoModelForCausalLM, ...)."
        )
