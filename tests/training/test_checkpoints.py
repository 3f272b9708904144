"""Checkpoints: exact resumption, crash safety, rotation, the best model, and corrupt checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from training_cases import as_rows, marker_rows, max_difference, weights

from torchformers import Trainer, TrainerCallback, get_last_checkpoint
from torchformers.errors import CheckpointError, TrainingError
from torchformers.training import checkpoints

HERE = Path(__file__).parent


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def checkpoint_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("stop_at", [5, 7])  # resume mid-epoch (from step 4) and at an epoch boundary (step 6)
def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(stop_at, tiny_bert, training_args, tmp_path):
    rows = as_rows(marker_rows(24, 0))  # 6 batches of 4, accumulated by 2: 3 steps per epoch
    options = dict(max_steps=8, per_device_train_batch_size=4, gradient_accumulation_steps=2, save_strategy="steps",
                   save_steps=2, logging_steps=1, learning_rate=1e-3, warmup_steps=2)
    # Dropout stays on: the resumed run must also restore the random state the uninterrupted run had.
    uninterrupted = tiny_bert()
    first = Trainer(uninterrupted, training_args(output_dir=str(tmp_path / "a"), **options), train_dataset=rows)
    first.train()

    interrupted = Trainer(tiny_bert(), training_args(output_dir=str(tmp_path / "b"), **options), train_dataset=rows,
                          callbacks=[StopAt(stop_at)])
    interrupted.train()
    assert interrupted.state.global_step == stop_at
    resumed_model = tiny_bert()
    resumed = Trainer(resumed_model, training_args(output_dir=str(tmp_path / "b"), **options), train_dataset=rows)
    resumed.train(resume_from_checkpoint=True)

    assert all(torch.equal(value, weights(resumed_model)[name]) for name, value in weights(uninterrupted).items())
    step_logs = [{k: e[k] for k in ("step", "loss", "grad_norm", "learning_rate", "epoch")}
                 for e in first.state.log_history if "loss" in e]
    resumed_logs = [{k: e[k] for k in ("step", "loss", "grad_norm", "learning_rate", "epoch")}
                    for e in resumed.state.log_history if "loss" in e]
    assert resumed_logs == step_logs  # the history before the checkpoint comes back with it


def test_checkpoint_files_load_safely_in_both_libraries(tiny_bert, training_args, tmp_path):
    transformers = pytest.importorskip("transformers")
    Trainer(tiny_bert(), training_args(max_steps=2, save_strategy="steps", save_steps=2, per_device_train_batch_size=4),
            train_dataset=as_rows(marker_rows(8, 0))).train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert checkpoint_names(checkpoint) == sorted([
        "config.json", "model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "trainer_state.json",
        "training_args.json"])
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt"):
        torch.load(checkpoint / name, weights_only=True)  # tensors and plain values only
    state = transformers.TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    assert state.global_step == 2 and state.max_steps == 2
    transformers.BertForSequenceClassification.from_pretrained(checkpoint)


def test_a_reference_rng_file_loads(tmp_path):
    """The reference stores NumPy's generator state as an array; resuming from its checkpoints still works."""
    import random

    path = tmp_path / "rng_state.pth"
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               path)
    state = checkpoints.load_torch_file(str(path))
    expected = np.random.rand()
    checkpoints.restore_rng_state(state)
    assert np.random.rand() == expected


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tiny_bert, training_args, tmp_path, monkeypatch):
    rows = as_rows(marker_rows(16, 0))
    options = dict(max_steps=6, per_device_train_batch_size=4, save_strategy="steps", save_steps=2)
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if ".tmp-checkpoint-4" in str(path) and str(path).endswith("optimizer.pt"):
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        Trainer(tiny_bert(), training_args(**options), train_dataset=rows).train()
    monkeypatch.setattr(torch, "save", real_save)
    output = tmp_path / "out"
    assert checkpoint_names(output) == ["checkpoint-2"]  # no half-written checkpoint-4, no staging folder
    resumed = Trainer(tiny_bert(), training_args(**options), train_dataset=rows)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert checkpoint_names(output) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_killed_process_leaves_the_previous_checkpoint(tmp_path):
    """The process dies (no cleanup runs) while writing checkpoint-4's optimizer state."""
    script = textwrap.dedent(
        f"""
        import os, sys, torch
        sys.path.insert(0, {str(HERE)!r})
        from training_cases import TINY_BERT, as_rows, marker_rows
        from torchformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

        real_save = torch.save
        def dying_save(obj, path, *args, **kwargs):
            if ".tmp-checkpoint-4" in str(path) and str(path).endswith("optimizer.pt"):
                with open(path, "wb") as handle:
                    handle.write(b"half")
                os._exit(3)
            return real_save(obj, path, *args, **kwargs)
        torch.save = dying_save
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_config(BertConfig(**TINY_BERT))
        args = TrainingArguments(output_dir={str(tmp_path / "out")!r}, max_steps=6, per_device_train_batch_size=4,
                                 save_steps=2, disable_tqdm=True)
        Trainer(model, args, train_dataset=as_rows(marker_rows(16, 0))).train()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    output = tmp_path / "out"
    assert checkpoint_names(output) == [".tmp-checkpoint-4", "checkpoint-2"]
    assert get_last_checkpoint(str(output)) == str(output / "checkpoint-2")
    loaded = checkpoints.read_checkpoint(str(output / "checkpoint-2"), world_size=1, rank=0)
    assert loaded.state.global_step == 2


def test_rotation_keeps_the_best_checkpoint_and_loads_it_at_the_end(tiny_bert, training_args, tmp_path):
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0])
    rows = as_rows(marker_rows(16, 0))
    args = training_args(max_steps=10, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="steps",
                         save_steps=2, eval_strategy="steps", eval_steps=2, save_total_limit=2,
                         metric_for_best_model="score", load_best_model_at_end=True)
    model = tiny_bert()
    trainer = Trainer(model, args, train_dataset=rows, eval_dataset=rows[:4],
                      compute_metrics=lambda prediction: {"score": next(scores)})
    trainer.train()
    output = tmp_path / "out"
    assert checkpoint_names(output) == ["checkpoint-10", "checkpoint-2"]
    assert trainer.state.best_model_checkpoint == str(output / "checkpoint-2") and trainer.state.best_metric == 5.0
    best = checkpoints.load_model_tensors(str(output / "checkpoint-2"))
    assert max_difference({k: v for k, v in weights(model).items() if k in best}, best) == 0


def test_corrupt_checkpoints_raise_and_nothing_is_lost(tiny_bert, training_args, tmp_path):
    rows = as_rows(marker_rows(8, 0))
    options = dict(max_steps=4, per_device_train_batch_size=4, save_strategy="steps", save_steps=2)
    Trainer(tiny_bert(), training_args(**options), train_dataset=rows).train()
    output = tmp_path / "out"
    newest = output / "checkpoint-4"
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}

    def resume_fails(error, match):
        with pytest.raises(error, match=match):
            Trainer(tiny_bert(), training_args(**options), train_dataset=rows).train(resume_from_checkpoint=True)

    weights_file = newest / "model.safetensors"
    weights_file.write_bytes(before[weights_file][:200])
    resume_fails(CheckpointError, "model.safetensors is truncated")
    weights_file.write_bytes(before[weights_file])
    (newest / "trainer_state.json").write_text("{not json")
    resume_fails(CheckpointError, "trainer_state.json is not valid JSON")
    (newest / "trainer_state.json").write_bytes(before[newest / "trainer_state.json"])
    os.remove(newest / "optimizer.pt")
    resume_fails(CheckpointError, "optimizer.pt is missing")
    (newest / "optimizer.pt").write_bytes(b"garbage")
    resume_fails(CheckpointError, "optimizer.pt cannot be read")
    (newest / "optimizer.pt").write_bytes(before[newest / "optimizer.pt"])
    with pytest.raises(TrainingError, match="does not hold the weights"):
        bigger = tiny_bert(num_hidden_layers=3)
        Trainer(bigger, training_args(**options), train_dataset=rows).train(resume_from_checkpoint=str(newest))
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        Trainer(tiny_bert(), training_args(**options), train_dataset=rows).train(str(output / "checkpoint-9"))
    with pytest.raises(TrainingError, match="holds no checkpoint"):
        Trainer(tiny_bert(), training_args(**dict(options, output_dir=str(tmp_path / "empty"))),
                train_dataset=rows).train(resume_from_checkpoint=True)
    after = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert after == before  # every checkpoint file is as it was
