"""TrainingArguments: the reference's defaults, derived values, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from torchformers import TrainingArguments
from torchformers.errors import ConfigError, UnsupportedArgumentError

transformers = pytest.importorskip("transformers")


def test_defaults_match_the_reference():
    ours = TrainingArguments(output_dir="o")
    reference = transformers.TrainingArguments(output_dir="o")
    shared = [f.name for f in dataclasses.fields(ours) if hasattr(reference, f.name)]
    assert len(shared) > 60
    differences = {}
    for name in shared:
        mine, theirs = getattr(ours, name), getattr(reference, name)
        mine, theirs = getattr(mine, "value", mine), getattr(theirs, "value", theirs)
        if mine != theirs:
            differences[name] = (mine, theirs)
    assert set(differences) == {"fsdp_config"}, differences  # {} here, None there


def test_derived_values():
    args = TrainingArguments(output_dir="o", eval_strategy="steps", logging_steps=7, load_best_model_at_end=True,
                             save_steps=14)
    assert args.eval_steps == 7 and args.metric_for_best_model == "loss" and args.greater_is_better is False
    assert TrainingArguments(output_dir="o", metric_for_best_model="accuracy").greater_is_better is True
    assert TrainingArguments(output_dir="o").output_dir == "o" and TrainingArguments().output_dir == "trainer_output"
    assert TrainingArguments(output_dir="o", warmup_steps=0.1).get_warmup_steps(95) == 10
    assert TrainingArguments(output_dir="o", warmup_ratio=0.2).get_warmup_steps(10) == 2
    assert TrainingArguments(output_dir="o", warmup_steps=3).get_warmup_steps(10) == 3
    assert TrainingArguments(output_dir="o", report_to=["jsonl"]).report_to == ["jsonl"]
    assert json.loads(TrainingArguments(output_dir="o").to_json_string())["lr_scheduler_type"] == "linear"
    assert TrainingArguments(output_dir="o", push_to_hub=False).seed == 42  # a reference field left off is fine


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"learning_rat": 1e-3}, UnsupportedArgumentError, "Did you mean 'learning_rate'"),
    ({"push_to_hub": True}, UnsupportedArgumentError, "huggingface_hub"),
    ({"deepspeed": "ds.json"}, UnsupportedArgumentError, "DeepSpeed"),
    ({"optim": "adafactor"}, UnsupportedArgumentError, "adamw_torch"),
    ({"lr_scheduler_type": "wsd"}, UnsupportedArgumentError, "lr_scheduler_type"),
    ({"report_to": "wandb"}, UnsupportedArgumentError, "report_to"),
    ({"eval_strategy": "sometimes"}, ConfigError, "eval_strategy"),
    ({"load_best_model_at_end": True, "eval_strategy": "epoch"}, ConfigError, "match eval_strategy"),
    ({"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 3, "save_steps": 4}, ConfigError,
     "multiple of"),
    ({"fp16": True}, UnsupportedArgumentError, "CUDA"),
    ({"per_device_train_batch_size": 0}, ConfigError, "positive integer"),
    ({"save_steps": 2.5}, ConfigError, "whole number"),
    ({"fsdp": "full_shard wrap_everything"}, UnsupportedArgumentError, "fsdp options"),
])
def test_bad_arguments_raise(options, error, match):
    with pytest.raises(error, match=match):
        TrainingArguments(output_dir="o", **options)


def test_tensorboard_is_used_only_when_installed(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(UnsupportedArgumentError, match="pip install tensorboard"):
            TrainingArguments(output_dir="o", report_to="tensorboard")
        assert TrainingArguments(output_dir="o", report_to="all").report_to == ["jsonl"]
    else:
        assert TrainingArguments(output_dir="o", report_to="all").report_to == ["jsonl", "tensorboard"]
