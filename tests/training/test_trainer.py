"""The Trainer: learning, parity with the reference Trainer, gradient accumulation, evaluation and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_cases import TINY_BERT, TINY_LLAMA, as_rows, lm_rows, marker_rows, max_difference, weights

from torchformers import EarlyStoppingCallback, Trainer
from torchformers.errors import ConfigError, TrainingError, UnsupportedArgumentError


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def test_tiny_bert_learns_a_rule_from_a_datasets_dataset(tiny_bert, training_args):
    datasets = pytest.importorskip("datasets", reason="datasets is a test extra")
    train = datasets.Dataset.from_dict({**marker_rows(512, 0), "text": ["unused"] * 512})
    test = datasets.Dataset.from_dict({**marker_rows(256, 1), "text": ["unused"] * 256})
    args = training_args(num_train_epochs=3, learning_rate=3e-3, per_device_train_batch_size=16, warmup_steps=0.1,
                         eval_strategy="epoch", per_device_eval_batch_size=64)
    trainer = Trainer(tiny_bert(), args, train_dataset=train, eval_dataset=test, compute_metrics=accuracy)
    result = trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] >= 0.95, metrics
    assert result.global_step == 96 and metrics["epoch"] == 3.0
    evaluations = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    assert [entry["step"] for entry in evaluations] == [32, 64, 96, 96]
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged == []  # logging_steps=1000: no step logs, only the final train metrics
    assert {"train_loss", "train_runtime", "total_flos"} <= trainer.state.log_history[-2].keys()
    predictions = trainer.predict(test.select(range(10)))
    assert predictions.predictions.shape == (10, 2) and predictions.label_ids.shape == (10,)
    assert "test_accuracy" in predictions.metrics


def test_tiny_causal_lm_loss_falls_and_logs(tiny_lm, training_args, tmp_path):
    rows = [{"input_ids": torch.arange(i, i + 12) % 16, "labels": torch.arange(i, i + 12) % 16} for i in range(64)]
    args = training_args(max_steps=40, learning_rate=1e-2, per_device_train_batch_size=8, logging_steps=10,
                         report_to="jsonl", logging_first_step=True)
    trainer = Trainer(tiny_lm(), args, train_dataset=rows)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 5 and losses[-1] < 0.3 * losses[0], losses
    lines = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 10, 20, 30, 40]
    assert all({"grad_norm", "learning_rate", "epoch"} <= line.keys() for line in lines if "loss" in line)


def _reference_and_ours(reference_class, ours_class, config_kwargs):
    transformers = pytest.importorskip("transformers")
    import torchformers

    torch.manual_seed(0)
    config_name = reference_class.__name__.split("For")[0] + "Config"
    reference = getattr(transformers, reference_class.__name__)(getattr(transformers, config_name)(**config_kwargs))
    ours = getattr(torchformers, ours_class).from_config(getattr(torchformers, config_name)(**config_kwargs))
    ours.load_state_dict(reference.state_dict(), strict=False)
    ours.tie_weights()
    return reference, ours


@pytest.mark.parametrize("case", ["bert-classifier", "llama-accumulation"])
def test_same_run_as_the_reference_trainer(case, tmp_path):
    """Same weights, data, optimizer and schedule: the same logs and final weights as the reference Trainer."""
    transformers = pytest.importorskip("transformers")
    import torchformers

    if case == "bert-classifier":
        config = {**TINY_BERT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        reference, ours = _reference_and_ours(transformers.BertForSequenceClassification,
                                              "BertForSequenceClassification", config)
        data, accumulation = as_rows(marker_rows(96, 0)), 1
    else:
        # The reference's loss normalization of token-level losses across accumulated batches applies here
        # (its sequence classifiers' losses are not divided by the accumulation steps; ours are).
        reference, ours = _reference_and_ours(transformers.LlamaForCausalLM, "LlamaForCausalLM", TINY_LLAMA)
        data, accumulation = lm_rows(96, 0), 2
    common = dict(num_train_epochs=2, learning_rate=1e-3, per_device_train_batch_size=8, save_strategy="no",
                  gradient_accumulation_steps=accumulation, logging_steps=2, disable_tqdm=True, warmup_steps=2,
                  weight_decay=0.01, max_grad_norm=0.5, report_to="none", lr_scheduler_type="cosine",
                  dataloader_pin_memory=False)
    reference_trainer = transformers.Trainer(
        reference, transformers.TrainingArguments(output_dir=str(tmp_path / "ref"), **common), train_dataset=data)
    reference_trainer.train()
    trainer = torchformers.Trainer(ours, torchformers.TrainingArguments(output_dir=str(tmp_path / "ours"), **common),
                                   train_dataset=data)
    trainer.train()
    assert max_difference(weights(reference), weights(ours)) < 1e-5
    logged = ("loss", "grad_norm", "learning_rate", "epoch", "step")
    expected = [[entry[key] for key in logged] for entry in reference_trainer.state.log_history if "loss" in entry]
    actual = [[entry[key] for key in logged] for entry in trainer.state.log_history if "loss" in entry]
    assert len(actual) == len(expected) >= 5
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_gradient_accumulation_matches_one_large_batch(tiny_lm, tiny_bert, training_args):
    """4 micro-batches of 2 give the update of one batch of 8, for a token-level loss (normalized by the
    labelled tokens of the whole step) and a sequence-level one (a mean per micro-batch)."""
    sgd = (torch.optim.SGD, {"lr": 0.5})
    for build, rows in ((tiny_lm, lm_rows(32, 0)), (tiny_bert, as_rows(marker_rows(32, 0)))):
        results = []
        for batch, accumulation in ((8, 1), (2, 4)):
            model = build(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) if build is tiny_bert else build()
            args = training_args(max_steps=3, per_device_train_batch_size=batch, max_grad_norm=0,
                                 gradient_accumulation_steps=accumulation, logging_steps=1)
            trainer = Trainer(model, args, train_dataset=rows, optimizer_cls_and_kwargs=sgd)
            trainer.train()
            results.append((weights(model), [e["loss"] for e in trainer.state.log_history if "loss" in e]))
        (large, large_losses), (accumulated, accumulated_losses) = results
        assert max_difference(large, accumulated) < 1e-6
        np.testing.assert_allclose(large_losses, accumulated_losses, rtol=1e-5)


def test_early_stopping_and_best_metric(tiny_bert, training_args):
    rows = as_rows(marker_rows(64, 0))
    args = training_args(num_train_epochs=50, learning_rate=1e-7, per_device_train_batch_size=32, eval_strategy="epoch",
                         metric_for_best_model="loss")
    stopper = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=1.0)
    trainer = Trainer(tiny_bert(), args, train_dataset=rows, eval_dataset=rows, callbacks=[stopper])
    trainer.train()
    # No evaluation improves on the first by more than 1.0: stop after the third epoch.
    assert trainer.state.global_step == 6 and stopper.early_stopping_patience_counter == 2
    assert trainer.state.best_metric is not None and args.greater_is_better is False


def test_evaluate_a_dict_of_datasets_and_keep_unused_columns_out(tiny_bert, training_args):
    rows = [dict(row, note="dropped") for row in as_rows(marker_rows(8, 0))]
    trainer = Trainer(tiny_bert(), training_args(), eval_dataset={"a": rows[:4], "b": rows[4:]},
                      compute_metrics=accuracy)
    metrics = trainer.evaluate()
    assert {"eval_a_loss", "eval_a_accuracy", "eval_b_loss", "eval_b_accuracy"} <= metrics.keys()


def test_bad_inputs_raise_clear_errors(tiny_bert, training_args, tmp_path):
    model = tiny_bert()
    rows = as_rows(marker_rows(8, 0))
    no_inputs = [{"tokens": row["input_ids"], "label": row["label"]} for row in rows]
    with pytest.raises(TrainingError, match="no 'input_ids'"):
        Trainer(model, training_args(max_steps=1), train_dataset=no_inputs).train()
    wrong_labels = [{"input_ids": row["input_ids"], "labels": [row["label"]] * 12} for row in rows]
    with pytest.raises(TrainingError, match="one class per sequence"):
        Trainer(model, training_args(max_steps=1), train_dataset=wrong_labels).train()
    per_batch_labels = [{"input_ids": row["input_ids"]} for row in rows]
    collate = lambda rows: {"input_ids": torch.tensor([r["input_ids"] for r in rows]), "labels": torch.tensor([1])}  # noqa: E731
    with pytest.raises(TrainingError, match="one label entry per row"):
        Trainer(model, training_args(max_steps=1), train_dataset=per_batch_labels, data_collator=collate).train()
    no_labels = [{"input_ids": row["input_ids"]} for row in rows]
    with pytest.raises(TrainingError, match="returned no loss"):
        Trainer(model, training_args(max_steps=1), train_dataset=no_labels).train()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(ConfigError, match="is a file"):
        Trainer(model, training_args(output_dir=str(a_file)))
    from torchformers import BertConfig, BertModel

    with pytest.raises(TrainingError, match="only computes hidden states"):
        Trainer(BertModel.from_config(BertConfig(**TINY_BERT)), training_args())
    with pytest.raises(UnsupportedArgumentError, match="model_init"):
        Trainer(model, training_args(), model_init=lambda: model)
    with pytest.raises(TrainingError, match="needs a train_dataset"):
        Trainer(model, training_args()).train()


def test_save_model_loads_in_both_libraries(tiny_bert, training_args, tmp_path):
    transformers = pytest.importorskip("transformers")
    from torchformers import BertForSequenceClassification

    model = tiny_bert()
    Trainer(model, training_args()).save_model(str(tmp_path / "saved"))
    ids = torch.tensor([[2, 7, 3, 9]])
    with torch.no_grad():
        expected = model.eval()(ids).logits
        ours = BertForSequenceClassification.from_pretrained(tmp_path / "saved")(ids).logits
        reference = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "saved")(ids).logits
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    torch.testing.assert_close(reference, expected, rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "saved" / "training_args.json").read_text())["seed"] == 42
