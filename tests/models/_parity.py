"""Helpers the family parity tests share: seeded reference checkpoints, inputs and comparisons.

A test builds a tiny reference model with seeded random weights (every parameter, biases
and norms included, so no option can hide behind a zero or a one), saves it with the
reference's ``save_pretrained`` and checks that torchformers reads the same numbers out.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

import torchformers

ATOL = 1e-4

# task -> Auto class name, the same in both libraries
AUTO_CLASSES = {
    "base": "AutoModel",
    "causal": "AutoModelForCausalLM",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "multiple_choice": "AutoModelForMultipleChoice",
}


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter with seeded noise (norm weights around one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.2
            is_norm = "norm" in name.lower() or ".ln_" in name or name.startswith("ln_")
            param.copy_(noise + (1.0 if is_norm and name.endswith("weight") else 0.0))


def reference_model(model_type: str, task: str, config: dict, attn_implementation: str = "sdpa", seed: int = 0):
    reference_config = transformers.AutoConfig.for_model(model_type, **config)
    model = getattr(transformers, AUTO_CLASSES[task]).from_config(
        reference_config, attn_implementation=attn_implementation
    )
    randomize_(model, seed)
    return model.eval()


def save_reference(directory: Path, model_type: str, task: str, config: dict, attn_implementation: str = "sdpa"):
    """Save a seeded reference model; returns the directory and the model."""
    model = reference_model(model_type, task, config, attn_implementation)
    model.save_pretrained(directory)
    return directory, model


def load_ours(directory: Path, task: str, **kwargs):
    return getattr(torchformers, AUTO_CLASSES[task]).from_pretrained(directory, **kwargs)


def load_reference(directory: Path, task: str, **kwargs):
    return getattr(transformers, AUTO_CLASSES[task]).from_pretrained(directory, **kwargs).eval()


def random_ids(vocab: int, batch: int = 2, length: int = 10, seed: int = 1, low: int = 3) -> torch.Tensor:
    """Token ids from ``low`` up, so they avoid the special and padding ids below it."""
    return torch.randint(low, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded(ids: torch.Tensor, pad_id: int, pad_lengths: tuple[int, ...] = (0, 4), side: str = "right"):
    """``ids`` with the last (or first) ``pad_lengths[row]`` tokens of each row replaced by padding,
    and the matching attention mask."""
    mask = torch.ones_like(ids)
    for row, count in enumerate(pad_lengths):
        if count:
            padding = slice(ids.shape[-1] - count, None) if side == "right" else slice(0, count)
            mask[row, padding] = 0
    return ids.masked_fill(mask == 0, pad_id), mask


@torch.no_grad()
def outputs_of(model, **inputs):
    return model(**inputs)


def main_output(outputs) -> torch.Tensor:
    """What a head produces: logits, span scores stacked, or the last hidden state."""
    if getattr(outputs, "start_logits", None) is not None:
        return torch.stack([outputs.start_logits, outputs.end_logits])
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    return outputs.last_hidden_state


def assert_close(ours: torch.Tensor, reference: torch.Tensor, atol: float = ATOL) -> float:
    """Assert equality within ``atol``; returns the largest difference (for reports)."""
    assert ours.shape == reference.shape and ours.numel() > 0
    torch.testing.assert_close(ours, reference, atol=atol, rtol=0)
    return float((ours.detach().float() - reference.detach().float()).abs().max())


def settings_of(config) -> dict:
    """A config's values, without where and by which version it was written."""
    ignored = {"_name_or_path", "transformers_version", "torchformers_version"}
    return {key: value for key, value in config.to_dict().items() if key not in ignored}


# -- encoder families (BERT, RoBERTa, XLM-RoBERTa, DistilBERT) ---------------------------------------
ENCODER_TASKS = ["base", "masked_lm", "sequence_classification", "token_classification", "question_answering",
                 "multiple_choice"]
NUM_CHOICES = 3


def task_config(config: dict, task: str) -> dict:
    """Classification heads get three labels (the default two would hide a transposed head)."""
    if task in ("sequence_classification", "token_classification"):
        return {**config, "num_labels": 3}
    return config


def as_choices(tensor: torch.Tensor, seed: int = 5) -> torch.Tensor:
    """(batch, seq) -> (batch, NUM_CHOICES, seq): each choice a different permutation of the row."""
    generator = torch.Generator().manual_seed(seed)
    rows = [tensor[:, torch.randperm(tensor.shape[1], generator=generator)] for _ in range(NUM_CHOICES)]
    return torch.stack(rows, dim=1)


def encoder_inputs(vocab: int, pad_id: int, task: str, token_types: bool, length: int = 10) -> list[dict]:
    """Forward inputs: plain, right-padded with a mask, left-padded, token types, explicit positions."""
    ids = random_ids(vocab, length=length)
    right_ids, right_mask = padded(ids, pad_id, (0, 4), "right")
    left_ids, left_mask = padded(ids, pad_id, (3, 0), "left")
    cases = [
        {"input_ids": ids},
        {"input_ids": right_ids, "attention_mask": right_mask},
        {"input_ids": left_ids, "attention_mask": left_mask},
        {"input_ids": right_ids, "attention_mask": right_mask,
         "position_ids": torch.arange(length) * torch.arange(1, ids.shape[0] + 1)[:, None]},
    ]
    if token_types:
        types = (torch.arange(length) >= length // 2).long().expand_as(ids).contiguous()
        cases.append({"input_ids": right_ids, "attention_mask": right_mask, "token_type_ids": types})
    if task == "multiple_choice":
        # Left padding of every choice would have no row without padding; keep the cases simple.
        cases = [{key: as_choices(value) for key, value in case.items()} for case in cases]
    return cases


def check_forward_parity(tmp_path: Path, model_type: str, config: dict, task: str, pad_id: int,
                         token_types: bool, attn_implementation: str = "sdpa") -> float:
    """Every input case gives the reference's outputs (every position, padding included)."""
    config = task_config(config, task)
    path, reference = save_reference(tmp_path, model_type, task, config, attn_implementation)
    model = load_ours(path, task, attn_implementation=attn_implementation)
    assert type(model).__name__ == type(reference).__name__
    worst = 0.0
    for inputs in encoder_inputs(config["vocab_size"], pad_id, task, token_types):
        if model_type == "distilbert" and task == "multiple_choice" and "position_ids" in inputs:
            continue  # the reference does not flatten them there (tested on its own in test_distilbert)
        ours, theirs = outputs_of(model, **inputs), outputs_of(reference, **inputs)
        worst = max(worst, assert_close(main_output(ours), main_output(theirs)))
        if task == "base" and getattr(theirs, "pooler_output", None) is not None:
            worst = max(worst, assert_close(ours.pooler_output, theirs.pooler_output))
    return worst


def check_inputs_embeds_parity(tmp_path: Path, model_type: str, config: dict, task: str, pad_id: int) -> None:
    path, reference = save_reference(tmp_path, model_type, task, task_config(config, task))
    model = load_ours(path, task)
    ids, mask = padded(random_ids(config["vocab_size"]), pad_id)
    embeds = reference.get_input_embeddings()(ids).detach()
    assert torch.equal(model.get_input_embeddings()(ids), embeds)
    ours = outputs_of(model, inputs_embeds=embeds, attention_mask=mask)
    theirs = outputs_of(reference, inputs_embeds=embeds, attention_mask=mask)
    assert_close(main_output(ours), main_output(theirs))


def check_hidden_states_and_attentions(tmp_path: Path, model_type: str, config: dict, task: str, pad_id: int,
                                       num_layers: int, our_attn_implementation: str = "eager") -> None:
    """``output_hidden_states`` gives the embeddings and each layer's output, ``output_attentions``
    each layer's weights, as the reference's eager attention computes them; padded keys get none."""
    config = task_config(config, task)
    path, reference = save_reference(tmp_path, model_type, task, config, attn_implementation="eager")
    model = load_ours(path, task, attn_implementation=our_attn_implementation)
    ids, mask = padded(random_ids(config["vocab_size"]), pad_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "multiple_choice":
        inputs = {key: as_choices(value) for key, value in inputs.items()}
    ours = outputs_of(model, **inputs, output_hidden_states=True, output_attentions=True)
    theirs = outputs_of(reference, **inputs, output_hidden_states=True, output_attentions=True)
    assert_close(main_output(ours), main_output(theirs))
    assert len(ours.hidden_states) == len(theirs.hidden_states) == num_layers + 1
    for our_states, their_states in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert_close(our_states, their_states)
    assert len(ours.attentions) == len(theirs.attentions) == num_layers
    for our_weights, their_weights in zip(ours.attentions, theirs.attentions, strict=True):
        assert_close(our_weights, their_weights)
    if task != "multiple_choice":
        assert our_weights[1, :, :, -4:].abs().max() == 0  # the padded keys of row 1
    plain = outputs_of(model, **inputs)
    assert plain.hidden_states is None and plain.attentions is None


def encoder_labels(task: str, vocab: int, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    generator = torch.Generator().manual_seed(3)
    if task == "masked_lm":
        labels = ids.masked_fill(torch.rand(ids.shape, generator=generator) < 0.5, -100)
        return {"labels": labels.masked_fill(mask == 0, -100)}
    if task == "token_classification":
        return {"labels": torch.randint(0, 3, ids.shape, generator=generator).masked_fill(mask == 0, -100)}
    if task == "question_answering":
        # The second answer starts past the sequence (truncated away): ignored, as in the reference.
        return {"start_positions": torch.tensor([2, 50]), "end_positions": torch.tensor([[5], [7]])}
    if task == "multiple_choice":
        return {"labels": torch.tensor([2, 0])}
    raise ValueError(task)


def check_loss_parity(tmp_path: Path, model_type: str, config: dict, task: str, pad_id: int) -> float:
    config = task_config(config, task)
    path, reference = save_reference(tmp_path, model_type, task, config)
    model = load_ours(path, task)
    ids, mask = padded(random_ids(config["vocab_size"]), pad_id)
    labels = encoder_labels(task, config["vocab_size"], ids, mask)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "multiple_choice":
        inputs = {key: as_choices(value) for key, value in inputs.items()}
    ours = outputs_of(model, **inputs, **labels).loss
    theirs = outputs_of(reference, **inputs, **labels).loss
    assert ours.ndim == 0 and ours > 0
    return assert_close(ours, theirs)


SEQUENCE_PROBLEMS = [
    ("regression", torch.tensor([0.5, -1.5])),
    ("single_label_classification", torch.tensor([2, 0])),
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
]


def check_sequence_classification_loss(tmp_path: Path, model_type: str, config: dict, pad_id: int,
                                       problem_type: str, labels: torch.Tensor) -> None:
    num_labels = 1 if problem_type == "regression" else 3
    path, reference = save_reference(tmp_path, model_type, "sequence_classification",
                                     {**config, "num_labels": num_labels})
    model = load_ours(path, "sequence_classification")
    ids, mask = padded(random_ids(config["vocab_size"]), pad_id)
    ours = outputs_of(model, input_ids=ids, attention_mask=mask, labels=labels).loss
    theirs = outputs_of(reference, input_ids=ids, attention_mask=mask, labels=labels).loss
    assert model.config.problem_type == reference.config.problem_type == problem_type
    assert ours > 0
    assert_close(ours, theirs)


def check_torchformers_checkpoint_loads_in_reference(tmp_path: Path, model_type: str, config: dict, task: str,
                                                     pad_id: int) -> None:
    """Reference -> torchformers -> save -> reference: same keys, same config, identical outputs."""
    config = task_config(config, task)
    path, reference = save_reference(tmp_path / "reference", model_type, task, config)
    load_ours(path, task).save_pretrained(tmp_path / "ours")
    reloaded, info = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(
        tmp_path / "ours", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert settings_of(reloaded.config) == settings_of(reference.config)
    from safetensors.torch import load_file

    ours_file = load_file(tmp_path / "ours" / "model.safetensors")
    reference_file = load_file(path / "model.safetensors")
    assert ours_file.keys() == reference_file.keys()
    for name, tensor in reference_file.items():
        assert torch.equal(ours_file[name], tensor), name
    ids, mask = padded(random_ids(config["vocab_size"]), pad_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if task == "multiple_choice":
        inputs = {key: as_choices(value) for key, value in inputs.items()}
    # Not bit-equal: the reference's own reload of its files differs from the saved model in the last bit.
    assert_close(main_output(outputs_of(reloaded.eval(), **inputs)), main_output(outputs_of(reference, **inputs)),
                 atol=1e-6)
