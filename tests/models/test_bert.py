"""Parity of BERT (every head) with the reference library, and BERT-specific loading rules."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers
from _parity import (
    ENCODER_TASKS,
    SEQUENCE_PROBLEMS,
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
    reference_model,
    save_reference,
    settings_of,
)
from safetensors.torch import load_file, save_file

import torchformers
import torchformers.nn.fused as fused_module
from torchformers.errors import ConfigError, UnsupportedArgumentError

PAD = 0
TINY = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "pad_token_id": PAD,
}
VARIANTS = {
    "bert": TINY,
    "bert-untied": {**TINY, "tie_word_embeddings": False},
    "bert-relu": {**TINY, "hidden_act": "relu", "layer_norm_eps": 1e-5},
    "bert-gelu-new": {**TINY, "hidden_act": "gelu_new"},
}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("task", ENCODER_TASKS)
def test_every_head_matches_reference(tmp_path, task, attn_implementation):
    check_forward_parity(tmp_path, "bert", TINY, task, PAD, token_types=True,
                         attn_implementation=attn_implementation)


@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification"])
def test_plain_path_matches_reference(tmp_path, monkeypatch, task):
    """With the fused oneDNN path off (what training and other devices use)."""
    monkeypatch.setattr(fused_module, "ONEDNN_LINEAR", False)
    check_forward_parity(tmp_path, "bert", TINY, task, PAD, token_types=True)


@pytest.mark.parametrize("variant", ["bert-untied", "bert-relu", "bert-gelu-new"])
@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_config_variants_match_reference(tmp_path, variant, task):
    check_forward_parity(tmp_path, "bert", VARIANTS[variant], task, PAD, token_types=True)


@pytest.mark.parametrize("task", ["base", "masked_lm", "token_classification"])
def test_inputs_embeds_match_reference(tmp_path, task):
    check_inputs_embeds_parity(tmp_path, "bert", TINY, task, PAD)


@pytest.mark.parametrize("our_attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("task", ["base", "masked_lm", "multiple_choice"])
def test_hidden_states_and_attentions_match_reference(tmp_path, task, our_attn_implementation):
    """With SDPA, asking for attentions computes them eagerly rather than returning nothing."""
    check_hidden_states_and_attentions(tmp_path, "bert", TINY, task, PAD, TINY["num_hidden_layers"],
                                       our_attn_implementation)


@pytest.mark.parametrize("task", ["masked_lm", "token_classification", "question_answering", "multiple_choice"])
def test_head_losses_match_reference(tmp_path, task):
    check_loss_parity(tmp_path, "bert", TINY, task, PAD)


@pytest.mark.parametrize(("problem_type", "labels"), SEQUENCE_PROBLEMS)
def test_sequence_classification_losses_match_reference(tmp_path, problem_type, labels):
    check_sequence_classification_loss(tmp_path, "bert", TINY, PAD, problem_type, labels)


@pytest.mark.parametrize("task", ["base", "masked_lm", "sequence_classification", "multiple_choice"])
@pytest.mark.parametrize("variant", ["bert", "bert-untied"])
def test_torchformers_checkpoint_loads_in_reference(tmp_path, variant, task):
    check_torchformers_checkpoint_loads_in_reference(tmp_path, "bert", VARIANTS[variant], task, PAD)


def test_config_saved_by_torchformers_reads_the_same_in_reference(tmp_path):
    config = transformers.BertConfig(**TINY, classifier_dropout=0.3, num_labels=5)
    config.save_pretrained(tmp_path / "reference")
    ours = torchformers.AutoConfig.from_pretrained(tmp_path / "reference")
    assert type(ours) is torchformers.BertConfig and ours.num_labels == 5
    ours.save_pretrained(tmp_path / "ours")
    assert settings_of(transformers.AutoConfig.from_pretrained(tmp_path / "ours")) == settings_of(config)


def test_tuple_outputs_when_return_dict_is_false(tmp_path):
    path, reference = save_reference(tmp_path, "bert", "base", TINY)
    model = load_ours(path, "base")
    ids = random_ids(TINY["vocab_size"])
    ours = outputs_of(model, input_ids=ids, return_dict=False)
    theirs = outputs_of(reference, input_ids=ids, return_dict=False)
    assert isinstance(ours, tuple) and len(ours) == len(theirs) == 2
    for our_tensor, their_tensor in zip(ours, theirs, strict=True):
        assert_close(our_tensor, their_tensor)


def test_padding_does_not_change_the_real_tokens(tmp_path):
    """Right padding with a mask leaves the real tokens' states as without padding."""
    path, _ = save_reference(tmp_path, "bert", "base", TINY)
    model = load_ours(path, "base")
    ids = random_ids(TINY["vocab_size"], batch=1)
    longer = torch.cat([ids, torch.full((1, 5), PAD)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(1, 5, dtype=torch.long)], dim=1)
    alone = outputs_of(model, input_ids=ids).last_hidden_state
    with_padding = outputs_of(model, input_ids=longer, attention_mask=mask).last_hidden_state
    assert_close(with_padding[:, :10], alone, atol=1e-5)
    unmasked = outputs_of(model, input_ids=longer).last_hidden_state
    assert (unmasked[:, :10] - alone).abs().max() > 1e-3


# -- loading rules -----------------------------------------------------------------------------
def test_masked_lm_checkpoint_into_base_model_gets_a_fresh_pooler_with_warning(tmp_path, caplog):
    path, reference = save_reference(tmp_path, "bert", "masked_lm", TINY)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.BertModel.from_pretrained(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pooler.dense.weight" in warnings[0]
    assert torch.isfinite(model.pooler.dense.weight).all() and model.pooler.dense.weight.std() > 0
    assert torch.equal(model.pooler.dense.bias, torch.zeros(TINY["hidden_size"]))
    ids = random_ids(TINY["vocab_size"])
    assert_close(outputs_of(model, input_ids=ids).last_hidden_state,
                 outputs_of(reference.bert, input_ids=ids).last_hidden_state)


def test_base_checkpoint_into_masked_lm_ties_a_fresh_head(tmp_path, caplog):
    path, reference = save_reference(tmp_path, "bert", "base", TINY)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.BertForMaskedLM.from_pretrained(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cls.predictions.bias" in warnings[0]
    decoder = model.cls.predictions.decoder
    assert decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert decoder.bias is model.cls.predictions.bias and not decoder.bias.is_meta
    assert torch.equal(decoder.bias, torch.zeros(TINY["vocab_size"]))
    logits = outputs_of(model, input_ids=random_ids(TINY["vocab_size"])).logits
    assert torch.isfinite(logits).all()


def test_pooler_in_a_checkpoint_is_loaded_into_sequence_classification(tmp_path, caplog):
    path, reference = save_reference(tmp_path, "bert", "base", TINY)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.BertForSequenceClassification.from_pretrained(path, num_labels=4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "classifier.weight" in warnings[0] and "pooler" not in warnings[0]
    assert torch.equal(model.bert.pooler.dense.weight, reference.pooler.dense.weight)
    assert model.classifier.out_features == 4


def test_missing_encoder_weight_is_an_error(tmp_path):
    path, _ = save_reference(tmp_path, "bert", "base", TINY)
    tensors = load_file(path / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(torchformers.errors.WeightsMismatchError, match="encoder.layer.1.output.dense.weight"):
        load_ours(path, "base")


def test_legacy_layernorm_gamma_beta_names_load(tmp_path):
    """Early BERT checkpoints name LayerNorm parameters gamma and beta; the reference renames them."""
    path, reference = save_reference(tmp_path, "bert", "masked_lm", TINY)
    tensors = load_file(path / "model.safetensors")
    legacy = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t
              for name, t in tensors.items()}
    assert sum("gamma" in name for name in legacy) == 2 * TINY["num_hidden_layers"] + 2
    save_file(legacy, path / "model.safetensors", metadata={"format": "pt"})
    model = load_ours(path, "masked_lm")
    ids = random_ids(TINY["vocab_size"])
    assert_close(outputs_of(model, input_ids=ids).logits, outputs_of(reference, input_ids=ids).logits)


def test_checkpoint_with_only_the_tied_decoder_bias_loads(tmp_path):
    """A checkpoint that stores cls.predictions.decoder.bias but not cls.predictions.bias: the
    reference ties in both directions, so the stored copy fills the source."""
    path, reference = save_reference(tmp_path, "bert", "masked_lm", TINY)
    tensors = load_file(path / "model.safetensors")
    tensors["cls.predictions.decoder.bias"] = tensors.pop("cls.predictions.bias")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    model = load_ours(path, "masked_lm")
    ids = random_ids(TINY["vocab_size"])
    assert_close(outputs_of(model, input_ids=ids).logits, outputs_of(reference, input_ids=ids).logits)


def test_unexpected_buffers_of_old_checkpoints_are_ignored(tmp_path):
    path, reference = save_reference(tmp_path, "bert", "base", TINY)
    tensors = load_file(path / "model.safetensors")
    tensors["embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    model, info = torchformers.BertModel.from_pretrained(path, output_loading_info=True)
    assert info["unexpected_keys"] == ["embeddings.position_ids"]


@pytest.mark.parametrize("fused", [True, False])
def test_bfloat16_loading_is_as_accurate_as_reference(tmp_path, monkeypatch, fused):
    """bfloat16 outputs stay as close to the float32 ones as the reference's bfloat16 outputs.
    (Not bit-equal: the fused CPU path rounds once where the reference rounds after each step.)"""
    monkeypatch.setattr(fused_module, "ONEDNN_LINEAR", fused)
    path, reference = save_reference(tmp_path, "bert", "masked_lm", TINY)
    model = load_ours(path, "masked_lm", dtype=torch.bfloat16)
    reference_bf16 = transformers.AutoModelForMaskedLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, mask = padded(random_ids(TINY["vocab_size"]), PAD)
    exact = outputs_of(reference, input_ids=ids, attention_mask=mask).logits
    ours = outputs_of(model, input_ids=ids, attention_mask=mask).logits
    theirs = outputs_of(reference_bf16, input_ids=ids, attention_mask=mask).logits
    assert ours.dtype == theirs.dtype == torch.bfloat16
    our_error = (ours.float() - exact).abs().mean()
    their_error = (theirs.float() - exact).abs().mean()
    assert our_error <= 1.2 * their_error
    assert_close(ours.float(), theirs.float(), atol=0.15)


# -- options and errors -------------------------------------------------------------------------
def test_chunked_feed_forward_gives_the_same_outputs(tmp_path):
    path, reference = save_reference(tmp_path, "bert", "base", TINY)
    ids, mask = padded(random_ids(TINY["vocab_size"]), PAD)
    whole = outputs_of(load_ours(path, "base"), input_ids=ids, attention_mask=mask).last_hidden_state
    chunked_model = load_ours(path, "base", chunk_size_feed_forward=3)
    chunked = outputs_of(chunked_model, input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close(chunked, whole, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"is_decoder": True}, "is_decoder"), ({"add_cross_attention": True}, "add_cross_attention"),
     ({"position_embedding_type": "relative_key"}, "relative_key")],
)
def test_unsupported_config_options_raise(overrides, match):
    with pytest.raises(ConfigError, match=match):
        torchformers.BertModel(torchformers.BertConfig(**TINY, **overrides))


@pytest.mark.parametrize(
    ("config", "match"),
    [({**TINY, "num_attention_heads": 5}, "multiple"), ({**TINY, "hidden_act": "nope"}, "hidden_act"),
     ({**TINY, "type_vocab_size": 0}, "type_vocab_size")],
)
def test_invalid_configs_raise(config, match):
    with pytest.raises(ConfigError, match=match):
        torchformers.BertConfig(**config)


def test_unsupported_inputs_raise(tmp_path):
    model = torchformers.BertModel(torchformers.BertConfig(**TINY)).eval()
    ids = random_ids(TINY["vocab_size"])
    with pytest.raises(UnsupportedArgumentError, match="encoder_hidden_states"):
        model(ids, encoder_hidden_states=torch.zeros(2, 3, TINY["hidden_size"]))
    with pytest.raises(UnsupportedArgumentError, match="exactly one"):
        model()
    with pytest.raises(UnsupportedArgumentError, match="2-D"):
        model(ids, attention_mask=torch.ones(2, 1, 10, 10))
    with pytest.raises(ConfigError, match="num_labels must be 2"):
        torchformers.BertForQuestionAnswering(torchformers.BertConfig(**TINY, num_labels=3))


def test_resize_token_embeddings_keeps_the_tied_decoder_and_bias_in_step(tmp_path):
    path, _ = save_reference(tmp_path, "bert", "masked_lm", TINY)
    model = load_ours(path, "masked_lm")
    ids = random_ids(TINY["vocab_size"])
    before = outputs_of(model, input_ids=ids).logits
    model.resize_token_embeddings(TINY["vocab_size"] + 5)
    decoder = model.get_output_embeddings()
    assert decoder.weight is model.get_input_embeddings().weight
    assert decoder.bias is model.cls.predictions.bias and decoder.bias.shape == (TINY["vocab_size"] + 5,)
    after = outputs_of(model, input_ids=ids).logits
    assert after.shape[-1] == TINY["vocab_size"] + 5
    assert_close(after[..., : TINY["vocab_size"]], before, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    path, reference = save_reference(tmp_path, "bert", "masked_lm", {**TINY, "hidden_dropout_prob": 0.0,
                                                                    "attention_probs_dropout_prob": 0.0})
    ids, mask = padded(random_ids(TINY["vocab_size"]), PAD)

    def gradients(model):
        model.train()
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        return {name: param.grad for name, param in model.named_parameters()}

    plain = gradients(load_ours(path, "masked_lm"))
    checkpointed_model = load_ours(path, "masked_lm")
    checkpointed_model.gradient_checkpointing_enable()
    assert checkpointed_model.bert.encoder.gradient_checkpointing
    checkpointed = gradients(checkpointed_model)
    theirs = gradients(reference)
    assert plain.keys() == checkpointed.keys() == theirs.keys()
    for name in plain:
        assert plain[name] is not None and plain[name].abs().max() > 0, name
        assert_close(checkpointed[name], plain[name], atol=1e-6)
        assert_close(plain[name], theirs[name])


def test_from_config_initializes_like_the_reference():
    """Fresh models: normal(0, initializer_range) weights, zero biases, unit norms, zero padding row."""
    model = torchformers.AutoModelForMaskedLM.from_config(torchformers.BertConfig(**TINY, initializer_range=0.5))
    reference = reference_model("bert", "masked_lm", TINY)
    assert type(model).__name__ == type(reference).__name__
    assert set(model.state_dict()) == set(reference.state_dict())
    embeddings = model.bert.embeddings.word_embeddings.weight
    assert torch.equal(embeddings[PAD], torch.zeros(TINY["hidden_size"]))
    assert 0.4 < embeddings.std() < 0.6
    assert torch.equal(model.cls.predictions.bias, torch.zeros(TINY["vocab_size"]))
    assert torch.equal(model.bert.encoder.layer[0].output.LayerNorm.weight, torch.ones(TINY["hidden_size"]))


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_first_token_only_gives_the_first_positions_output_and_gradient(family, attn_implementation):
    """The classification heads compute the last layer for [CLS] alone: the same numbers, forward and back."""
    torch.manual_seed(0)
    if family == "bert":
        config = torchformers.BertConfig(**TINY, attn_implementation=attn_implementation,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = torchformers.BertModel(config)
    else:
        config = torchformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                               attn_implementation=attn_implementation, dropout=0.0,
                                               attention_dropout=0.0)
        model = torchformers.DistilBertModel(config)
    model.train()  # the training branches (no dropout, so both runs are deterministic)
    ids = torch.randint(1, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row: the first position must still ignore the padding keys

    def first_position(**options):
        model.zero_grad()
        hidden = model(ids, attention_mask=mask, **options).last_hidden_state
        first = hidden[:, 0]
        (first * torch.linspace(-1, 1, first.numel()).view_as(first)).sum().backward()
        return first.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    full, full_grads = first_position()
    alone, alone_grads = first_position(first_token_only=True)
    assert model(ids, attention_mask=mask, first_token_only=True).last_hidden_state.shape[1] == 1
    torch.testing.assert_close(alone, full, atol=1e-6, rtol=0)
    assert alone_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(alone_grads[name], grad, atol=1e-6, rtol=1e-5)
    # Hidden states need every position of the last layer: the option then steps aside.
    outputs = model(ids, attention_mask=mask, first_token_only=True, output_hidden_states=True)
    assert outputs.last_hidden_state.shape[1] == ids.shape[1]
