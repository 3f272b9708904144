"""Parity of DistilBERT (every head) with the reference library."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers
from _parity import (
    ENCODER_TASKS,
    SEQUENCE_PROBLEMS,
    as_choices,
    assert_close,
    check_forward_parity,
    check_hidden_states_and_attentions,
    check_inputs_embeds_parity,
    check_loss_parity,
    check_sequence_classification_loss,
    check_torchformers_checkpoint_loads_in_reference,
    load_ours,
    outputs_of,
    padded,
    random_ids,
    save_reference,
    settings_of,
)

import torchformers
import torchformers.nn.fused as fused_module
from torchformers.errors import ConfigError

PAD = 0
TINY = {
    "vocab_size": 99,
    "dim": 32,
    "n_layers": 2,
    "n_heads": 4,
    "hidden_dim": 37,
    "max_position_embeddings": 64,
    "pad_token_id": PAD,
}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("task", ENCODER_TASKS)
def test_every_head_matches_reference(tmp_path, task, attn_implementation):
    check_forward_parity(tmp_path, "distilbert", TINY, task, PAD, token_types=False,
                         attn_implementation=attn_implementation)


@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_plain_path_matches_reference(tmp_path, monkeypatch, task):
    """With the fused oneDNN path off (what training and other devices use)."""
    monkeypatch.setattr(fused_module, "ONEDNN_LINEAR", False)
    check_forward_parity(tmp_path, "distilbert", TINY, task, PAD, token_types=False)


@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_untied_relu_and_sinusoidal_variants_match_reference(tmp_path, task):
    config = {**TINY, "tie_word_embeddings": False, "activation": "relu", "sinusoidal_pos_embds": True}
    check_forward_parity(tmp_path, "distilbert", config, task, PAD, token_types=False)


@pytest.mark.parametrize("task", ["base", "question_answering"])
def test_inputs_embeds_match_reference(tmp_path, task):
    check_inputs_embeds_parity(tmp_path, "distilbert", TINY, task, PAD)


@pytest.mark.parametrize("task", ["base", "masked_lm", "multiple_choice"])
def test_hidden_states_and_attentions_match_reference(tmp_path, task):
    check_hidden_states_and_attentions(tmp_path, "distilbert", TINY, task, PAD, TINY["n_layers"])


@pytest.mark.parametrize("task", ["masked_lm", "token_classification", "question_answering", "multiple_choice"])
def test_head_losses_match_reference(tmp_path, task):
    check_loss_parity(tmp_path, "distilbert", TINY, task, PAD)


@pytest.mark.parametrize(("problem_type", "labels"), SEQUENCE_PROBLEMS)
def test_sequence_classification_losses_match_reference(tmp_path, problem_type, labels):
    check_sequence_classification_loss(tmp_path, "distilbert", TINY, PAD, problem_type, labels)


@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification", "question_answering"])
def test_torchformers_checkpoint_loads_in_reference(tmp_path, task):
    check_torchformers_checkpoint_loads_in_reference(tmp_path, "distilbert", TINY, task, PAD)


def test_config_uses_the_distilbert_names_and_standard_aliases(tmp_path):
    config = torchformers.DistilBertConfig(hidden_size=48, num_attention_heads=6, num_hidden_layers=3)
    assert (config.dim, config.n_heads, config.n_layers) == (48, 6, 3)
    assert config.hidden_size == 48 and config.num_hidden_layers == 3
    config.save_pretrained(tmp_path)
    reference = transformers.AutoConfig.from_pretrained(tmp_path)
    assert (reference.dim, reference.n_heads, reference.n_layers) == (48, 6, 3)
    assert settings_of(reference) == settings_of(transformers.DistilBertConfig(dim=48, n_heads=6, n_layers=3))


def test_sinusoidal_positions_initialize_like_the_reference():
    config = {**TINY, "sinusoidal_pos_embds": True, "max_position_embeddings": 20}
    ours = torchformers.DistilBertModel.from_config(torchformers.DistilBertConfig(**config))
    reference = transformers.DistilBertModel(transformers.DistilBertConfig(**config))
    table = ours.embeddings.position_embeddings.weight.detach()
    assert_close(table, reference.embeddings.position_embeddings.weight, atol=1e-6)
    assert table[3, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)


def test_base_checkpoint_into_question_answering_adds_the_head_with_warning(tmp_path, caplog):
    path, reference = save_reference(tmp_path, "distilbert", "base", TINY)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.DistilBertForQuestionAnswering.from_pretrained(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "qa_outputs.weight" in warnings[0]
    ids = random_ids(TINY["vocab_size"])
    assert_close(outputs_of(model.distilbert, input_ids=ids).last_hidden_state,
                 outputs_of(reference, input_ids=ids).last_hidden_state)


def test_question_answering_needs_two_labels():
    with pytest.raises(ConfigError, match="num_labels must be 2"):
        torchformers.DistilBertForQuestionAnswering(torchformers.DistilBertConfig(**TINY, num_labels=3))


def test_no_token_type_ids_argument():
    """DistilBERT has no token types: passing them is an error, never silently dropped."""
    model = torchformers.DistilBertModel(torchformers.DistilBertConfig(**TINY)).eval()
    with pytest.raises(TypeError):
        model(random_ids(TINY["vocab_size"]), token_type_ids=torch.zeros(2, 10, dtype=torch.long))


def test_masked_lm_loads_from_its_own_tied_checkpoint(tmp_path):
    path, reference = save_reference(tmp_path, "distilbert", "masked_lm", TINY)
    model = load_ours(path, "masked_lm")
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    assert torch.equal(model.vocab_projector.bias, reference.vocab_projector.bias)


def test_multiple_choice_flattens_position_ids(tmp_path):
    """(batch, choices, seq) position ids are flattened like the other inputs (the reference passes
    them on unflattened and fails, so it gets them flat here)."""
    path, reference = save_reference(tmp_path, "distilbert", "multiple_choice", TINY)
    model = load_ours(path, "multiple_choice")
    ids, mask = padded(random_ids(TINY["vocab_size"]), PAD)
    ids, mask = as_choices(ids), as_choices(mask)
    positions = torch.arange(10).flip(0).expand_as(ids)
    ours = outputs_of(model, input_ids=ids, attention_mask=mask, position_ids=positions).logits
    theirs = outputs_of(reference, input_ids=ids, attention_mask=mask, position_ids=positions.reshape(-1, 10)).logits
    assert_close(ours, theirs)
    assert (ours - outputs_of(model, input_ids=ids, attention_mask=mask).logits).abs().max() > 1e-3
