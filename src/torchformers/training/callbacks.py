"""Callbacks: code that watches the training loop at named events and may steer it.

The events and the objects they receive are the reference library's: each ``on_*`` method gets the
``TrainingArguments``, the ``TrainerState`` (saved as ``trainer_state.json`` in each checkpoint) and
the ``TrainerControl`` whose flags ask the loop to log, evaluate, save or stop; keyword arguments
carry the model, processing class, optimizer, scheduler and data loaders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

from ..errors import CheckpointError, ConfigError, describe_path
from ..files import atomic_write_text
from .arguments import IntervalStrategy, SaveStrategy, TrainingArguments

logger = logging.getLogger("torchformers")

EVENTS = (
    "on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
    "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate", "on_predict",
    "on_save", "on_log", "on_prediction_step", "on_push_begin",
)


class ExportableState:
    """A callback whose state is saved in checkpoints: ``state()`` returns ``{"args": ..., "attributes": ...}``
    and ``from_state`` rebuilds the object from it."""

    def state(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define state() to be saved in checkpoints.")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExportableState:
        instance = cls(**state["args"])
        for name, value in state["attributes"].items():
            setattr(instance, name, value)
        return instance


@dataclasses.dataclass
class TrainerState:
    """Where training stands; ``log_history`` holds every logged dict (with its ``step``)."""

    epoch: float | None = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save_to_json(self, json_path: str) -> None:
        """Write the state to ``json_path`` (atomically)."""
        atomic_write_text(json_path, json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_from_json(cls, json_path: str) -> TrainerState:
        where = describe_path(json_path)
        try:
            with open(json_path, encoding="utf-8") as handle:
                values = json.load(handle)
        except FileNotFoundError:
            raise CheckpointError(f"{where} is missing; the checkpoint is incomplete.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{where} is not valid JSON ({error}); the checkpoint is corrupt.") from None
        known = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(values, dict) or not isinstance(values.get("global_step"), int):
            raise CheckpointError(f"{where} lacks an integer 'global_step'; the checkpoint is corrupt.")
        return cls(**{key: value for key, value in values.items() if key in known})

    def compute_steps(self, args: TrainingArguments, max_steps: int) -> None:
        """Turn fractional ``logging/eval/save_steps`` (below 1: a share of ``max_steps``) into step counts."""
        for kind in ("logging", "eval", "save"):
            steps = getattr(args, f"{kind}_steps")
            if steps is not None:
                setattr(self, f"{kind}_steps", math.ceil(max_steps * steps) if steps < 1 else int(steps))

    def record_callback_states(self, callbacks: list[Any]) -> None:
        """Store the state of every ExportableState callback (and the TrainerControl) by class name."""
        states: dict[str, Any] = {}
        for callback in callbacks:
            if not isinstance(callback, ExportableState):
                continue
            name = type(callback).__name__
            if name in states:
                previous = states[name] if isinstance(states[name], list) else [states[name]]
                states[name] = [*previous, callback.state()]
            else:
                states[name] = callback.state()
        self.stateful_callbacks = states


@dataclasses.dataclass
class TrainerControl(ExportableState):
    """Flags callbacks set to steer the loop. ``should_training_stop`` stays set; the epoch flag is reset
    at each epoch and the log/evaluate/save flags at each step."""

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = self.should_evaluate = self.should_log = False

    def state(self) -> dict[str, Any]:
        return {"args": dataclasses.asdict(self), "attributes": {}}


class TrainerCallback:
    """Base class of callbacks: override the events you need; each may return a new TrainerControl.

    Events: on_init_end, on_train_begin, on_train_end, on_epoch_begin, on_epoch_end, on_step_begin,
    on_pre_optimizer_step, on_optimizer_step, on_substep_end (a micro-batch of gradient accumulation),
    on_step_end, on_evaluate, on_predict, on_save, on_log, on_prediction_step, on_push_begin.
    """


for _event in EVENTS:
    setattr(TrainerCallback, _event, lambda self, args, state, control, **kwargs: None)


class CallbackHandler(TrainerCallback):
    """Calls every callback in order for each event; the Trainer's one handle on its callbacks."""

    def __init__(self, callbacks: list[Any], model: Any, processing_class: Any, optimizer: Any,
                 lr_scheduler: Any) -> None:
        self.callbacks: list[TrainerCallback] = []
        for callback in callbacks:
            self.add_callback(callback)
        self.model = model
        self.processing_class = processing_class
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = None
        self.eval_dataloader = None

    def add_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        instance = callback() if isinstance(callback, type) else callback
        if any(type(existing) is type(instance) for existing in self.callbacks):
            logger.warning("Adding a second %s to the Trainer's callbacks.", type(instance).__name__)
        self.callbacks.append(instance)

    def pop_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> TrainerCallback | None:
        for existing in self.callbacks:
            if (isinstance(existing, callback) if isinstance(callback, type) else existing is callback):
                self.callbacks.remove(existing)
                return existing
        return None

    def remove_callback(self, callback: type[TrainerCallback] | TrainerCallback) -> None:
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        return "\n".join(type(callback).__name__ for callback in self.callbacks)

    def call_event(self, event: str, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   **kwargs: Any) -> TrainerControl:
        if event == "on_train_begin":
            control._new_training()
        elif event == "on_epoch_begin":
            control._new_epoch()
        elif event == "on_step_begin":
            control._new_step()
        elif event == "on_evaluate":
            control.should_evaluate = False
        elif event == "on_save":
            control.should_save = False
        elif event == "on_log":
            control.should_log = False
        for callback in self.callbacks:
            result = getattr(callback, event)(
                args, state, control, model=self.model, processing_class=self.processing_class,
                optimizer=self.optimizer, lr_scheduler=self.lr_scheduler, train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader, **kwargs,
            )
            if result is not None:
                control = result
        return control


class DefaultFlowCallback(TrainerCallback):
    """Sets the log, evaluate and save flags from the strategies in TrainingArguments, and stops at max_steps."""

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy is IntervalStrategy.STEPS and step % state.logging_steps == 0:
            control.should_log = True
        evaluate_now = args.eval_strategy is IntervalStrategy.STEPS and args.eval_delay <= step
        if evaluate_now and step % state.eval_steps == 0:
            control.should_evaluate = True
        if args.save_strategy is SaveStrategy.STEPS and step % state.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            if evaluate_now and step % state.eval_steps:
                control.should_evaluate = True
            if args.save_strategy is SaveStrategy.STEPS:
                control.should_save = True
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if args.logging_strategy is IntervalStrategy.EPOCH:
            control.should_log = True
        if args.eval_strategy is IntervalStrategy.EPOCH and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy is SaveStrategy.EPOCH:
            control.should_save = True
        return control


def _shown_logs(logs: dict[str, Any]) -> dict[str, Any]:
    return {key: (f"{value:.4g}" if isinstance(value, float) else value)
            for key, value in logs.items() if key != "total_flos"}


class ProgressCallback(TrainerCallback):
    """A tqdm bar over the optimizer steps (and one over evaluation batches); log lines printed above it."""

    def __init__(self) -> None:
        self.training_bar = None
        self.prediction_bar = None
        self.current_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True)
        self.current_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
        self.current_step = state.global_step

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero or eval_dataloader is None or not hasattr(eval_dataloader, "__len__"):
            return
        if self.prediction_bar is None:
            from tqdm.auto import tqdm

            self.prediction_bar = tqdm(total=len(eval_dataloader), leave=self.training_bar is None,
                                       dynamic_ncols=True)
        self.prediction_bar.update(1)

    def _close_prediction_bar(self) -> None:
        if self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None

    def on_evaluate(self, args, state, control, **kwargs):
        self._close_prediction_bar()

    def on_predict(self, args, state, control, **kwargs):
        self._close_prediction_bar()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs:
            self.training_bar.write(str(_shown_logs(logs)))

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            self.training_bar.close()
        self.training_bar = None


class PrinterCallback(TrainerCallback):
    """Prints each log dict (used instead of the progress bar when ``disable_tqdm=True``)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(_shown_logs(logs))


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stop training once ``metric_for_best_model`` has not improved (by more than
    ``early_stopping_threshold``) for ``early_stopping_patience`` evaluations in a row."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0) -> None:
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold or 0.0
        self.early_stopping_patience_counter = 0

    def check_metric_value(self, args, state, control, metric_value: float) -> None:
        best = state.best_metric
        improved = best is None or (
            (metric_value > best if args.greater_is_better else metric_value < best)
            and abs(metric_value - best) > self.early_stopping_threshold
        )
        self.early_stopping_patience_counter = 0 if improved else self.early_stopping_patience_counter + 1

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ConfigError("EarlyStoppingCallback needs metric_for_best_model in TrainingArguments.")
        if args.eval_strategy is IntervalStrategy.NO:
            raise ConfigError("EarlyStoppingCallback needs eval_strategy 'steps' or 'epoch'.")
        if not args.load_best_model_at_end:
            logger.warning("EarlyStoppingCallback without load_best_model_at_end=True: the last model is kept, "
                           "not the best one.")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        name = name if name.startswith("eval_") else f"eval_{name}"
        value = (metrics or {}).get(name)
        if value is None:
            logger.warning("EarlyStoppingCallback: the evaluation metrics lack %r; not stopping early.", name)
            return
        self.check_metric_value(args, state, control, value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        return {
            "args": {"early_stopping_patience": self.early_stopping_patience,
                     "early_stopping_threshold": self.early_stopping_threshold},
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }


class JsonlLoggerCallback(TrainerCallback):
    """``report_to="jsonl"``: appends each log dict, with its step, to ``output_dir/trainer_log.jsonl``."""

    file_name = "trainer_log.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, self.file_name), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**logs, "step": state.global_step}) + "\n")


class TensorBoardCallback(TrainerCallback):
    """``report_to="tensorboard"``: writes scalar logs to ``output_dir/runs`` (needs the tensorboard package)."""

    def __init__(self) -> None:
        self.writer = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(args.output_dir, "runs", args.run_name or ""))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.writer is None:
            return
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)):
                name = key if key.startswith(("eval_", "test_")) else f"train/{key}"
                self.writer.add_scalar(name, value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


REPORTING_CALLBACKS = {"jsonl": JsonlLoggerCallback, "tensorboard": TensorBoardCallback}
