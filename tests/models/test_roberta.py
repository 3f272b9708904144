"""Parity of RoBERTa and XLM-RoBERTa (every head) with the reference library."""

from __future__ import annotations

import json

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

PAD = 1
TINY = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    # RoBERTa positions run from padding_idx + 1: a 10-token input needs 12 positions.
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
    "pad_token_id": PAD,
}
MODEL_TYPES = ["roberta", "xlm-roberta"]
PREFIXES = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta"}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("task", ENCODER_TASKS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_head_matches_reference(tmp_path, model_type, task, attn_implementation):
    check_forward_parity(tmp_path, model_type, TINY, task, PAD, token_types=True,
                         attn_implementation=attn_implementation)


@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_untied_and_other_pad_id_match_reference(tmp_path, task):
    """A different padding_idx moves every position; the untied decoder has its own weight and bias."""
    config = {**TINY, "pad_token_id": 4, "tie_word_embeddings": False}
    check_forward_parity(tmp_path, "roberta", config, task, 4, token_types=False)


@pytest.mark.parametrize("task", ["base", "masked_lm"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_inputs_embeds_match_reference(tmp_path, model_type, task):
    """Without ids, positions count from padding_idx + 1 for every token."""
    check_inputs_embeds_parity(tmp_path, model_type, TINY, task, PAD)


@pytest.mark.parametrize("task", ["base", "sequence_classification", "multiple_choice"])
def test_hidden_states_and_attentions_match_reference(tmp_path, task):
    check_hidden_states_and_attentions(tmp_path, "roberta", TINY, task, PAD, TINY["num_hidden_layers"])


@pytest.mark.parametrize("task", ["masked_lm", "token_classification", "question_answering", "multiple_choice"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_head_losses_match_reference(tmp_path, model_type, task):
    check_loss_parity(tmp_path, model_type, TINY, task, PAD)


@pytest.mark.parametrize(("problem_type", "labels"), SEQUENCE_PROBLEMS)
def test_sequence_classification_losses_match_reference(tmp_path, problem_type, labels):
    check_sequence_classification_loss(tmp_path, "roberta", TINY, PAD, problem_type, labels)


@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification", "multiple_choice"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_torchformers_checkpoint_loads_in_reference(tmp_path, model_type, task):
    check_torchformers_checkpoint_loads_in_reference(tmp_path, model_type, TINY, task, PAD)


def test_untied_masked_lm_checkpoint_loads_in_reference(tmp_path):
    check_torchformers_checkpoint_loads_in_reference(
        tmp_path, "roberta", {**TINY, "tie_word_embeddings": False}, "masked_lm", PAD
    )


def test_left_padding_does_not_move_the_real_tokens(tmp_path):
    """Positions count real tokens only, so left padding changes nothing for them."""
    path, _ = save_reference(tmp_path, "roberta", "base", TINY)
    model = load_ours(path, "base")
    ids = random_ids(TINY["vocab_size"], batch=1)
    longer = torch.cat([torch.full((1, 3), PAD), ids], dim=1)
    mask = (longer != PAD).long()
    alone = outputs_of(model, input_ids=ids).last_hidden_state
    with_padding = outputs_of(model, input_ids=longer, attention_mask=mask).last_hidden_state
    assert_close(with_padding[:, 3:], alone, atol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_classes_configs_and_files_use_the_family_names(tmp_path, model_type):
    prefix = PREFIXES[model_type]
    path, reference = save_reference(tmp_path / "reference", model_type, "masked_lm", TINY)
    config = torchformers.AutoConfig.from_pretrained(path)
    assert type(config).__name__ == f"{prefix}Config" and config.model_type == model_type
    model = load_ours(path, "masked_lm")
    assert type(model) is getattr(torchformers, f"{prefix}ForMaskedLM")
    assert isinstance(model, getattr(torchformers, f"{prefix}PreTrainedModel"))
    assert type(model.roberta) is getattr(torchformers, f"{prefix}Model")
    assert type(model.config) is type(config)
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["model_type"] == model_type and saved["architectures"] == [f"{prefix}ForMaskedLM"]
    reread = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert type(reread).__name__ == f"{prefix}Config"
    assert settings_of(reread) == settings_of(reference.config)


def test_multiple_choice_takes_the_reference_positional_order(tmp_path):
    """RoBERTa's multiple-choice forward takes (input_ids, token_type_ids, attention_mask, labels, ...)."""
    path, reference = save_reference(tmp_path, "roberta", "multiple_choice", TINY)
    model = load_ours(path, "multiple_choice")
    ids, mask = padded(random_ids(TINY["vocab_size"]), PAD)
    ids, mask = as_choices(ids), as_choices(mask)
    types = torch.zeros_like(ids)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        ours = model(ids, types, mask, labels)
        theirs = reference(ids, types, mask, labels)
    assert_close(ours.logits, theirs.logits)
    assert_close(ours.loss, theirs.loss)


def test_roberta_heads_have_the_reference_structure():
    config = torchformers.RobertaConfig(**TINY, num_labels=3)
    classifier = torchformers.RobertaForSequenceClassification(config)
    assert not hasattr(classifier.roberta, "pooler") or classifier.roberta.pooler is None
    assert classifier.classifier.out_proj.out_features == 3
    multiple_choice = torchformers.RobertaForMultipleChoice(config)
    assert multiple_choice.roberta.pooler is not None and multiple_choice.classifier.out_features == 1
    masked_lm = torchformers.RobertaForMaskedLM(config)
    assert masked_lm.lm_head.decoder.weight is masked_lm.roberta.embeddings.word_embeddings.weight
    assert masked_lm.lm_head.decoder.bias is masked_lm.lm_head.bias
    assert masked_lm.roberta.embeddings.position_embeddings.padding_idx == PAD
