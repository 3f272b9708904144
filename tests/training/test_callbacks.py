"""Callbacks: the events and their order, TrainerState files, and early stopping's checks."""

from __future__ import annotations

import pytest
import torch
from training_cases import TINY_BERT, as_rows, marker_rows

import torchformers
from torchformers import EarlyStoppingCallback, TrainerCallback, TrainerState
from torchformers.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")


def recorder(base: type) -> TrainerCallback:
    """A callback of ``base`` that records every event's name."""

    class Recorder(base):
        def __init__(self) -> None:
            self.events: list[str] = []

        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda *args, **kwargs: self.events.append(name)
            return super().__getattribute__(name)

    return Recorder()


def test_events_arrive_in_the_reference_order(tmp_path):
    options = dict(max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2, eval_strategy="steps",
                   eval_steps=2, logging_steps=2, save_strategy="steps", save_steps=3, disable_tqdm=True,
                   report_to="none", dataloader_pin_memory=False)
    rows = as_rows(marker_rows(32, 0))
    events = []
    for library in (torchformers, transformers):
        torch.manual_seed(0)
        model = library.BertForSequenceClassification(library.BertConfig(**TINY_BERT))
        record = recorder(library.TrainerCallback)
        library.Trainer(model, library.TrainingArguments(output_dir=str(tmp_path / library.__name__), **options),
                        train_dataset=rows, eval_dataset=rows[:4], callbacks=[record]).train()
        events.append(record.events)
    assert events[0] == events[1]
    assert events[0].count("on_step_end") == 3 and events[0].count("on_substep_end") == 3
    assert events[0].count("on_save") == 1 and events[0].count("on_evaluate") == 2


def test_trainer_state_files_round_trip_with_the_reference(tmp_path):
    state = TrainerState(global_step=7, max_steps=10, epoch=1.5, best_metric=0.25,
                         log_history=[{"loss": 1.0, "step": 5}])
    state.record_callback_states([EarlyStoppingCallback(3, 0.1), torchformers.TrainerControl()])
    path = str(tmp_path / "trainer_state.json")
    state.save_to_json(path)
    assert TrainerState.load_from_json(path) == state
    reference = transformers.TrainerState.load_from_json(path)
    assert (reference.global_step, reference.log_history, reference.best_metric) == (7, [{"loss": 1.0, "step": 5}],
                                                                                     0.25)
    assert reference.stateful_callbacks["EarlyStoppingCallback"]["args"]["early_stopping_patience"] == 3
    reference.save_to_json(path)
    assert TrainerState.load_from_json(path).global_step == 7
    (tmp_path / "bad.json").write_text('{"epoch": 1}')
    with pytest.raises(CheckpointError, match="global_step"):
        TrainerState.load_from_json(str(tmp_path / "bad.json"))


def test_early_stopping_needs_a_metric_and_evaluation(tmp_path):
    args = torchformers.TrainingArguments(output_dir=str(tmp_path), eval_strategy="no", metric_for_best_model="loss")
    with pytest.raises(ConfigError, match="eval_strategy"):
        EarlyStoppingCallback().on_train_begin(args, TrainerState(), torchformers.TrainerControl())
    args = torchformers.TrainingArguments(output_dir=str(tmp_path), eval_strategy="epoch")
    with pytest.raises(ConfigError, match="metric_for_best_model"):
        EarlyStoppingCallback().on_train_begin(args, TrainerState(), torchformers.TrainerControl())
