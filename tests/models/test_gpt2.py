"""Parity of GPT-2 (LM head, classification heads, decoding) with the reference library."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from _parity import (
    SEQUENCE_PROBLEMS,
    assert_close,
    check_hidden_states_and_attentions,
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
from torchformers.errors import ConfigError, UnsupportedArgumentError

VOCAB = 99
PAD = 0
TINY = {
    "vocab_size": VOCAB,
    "n_embd": 32,
    "n_layer": 3,
    "n_head": 4,
    "n_positions": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
VARIANTS = {
    "gpt2": TINY,
    "untied": {**TINY, "tie_word_embeddings": False},
    "scale-by-inverse-layer-idx": {**TINY, "scale_attn_by_inverse_layer_idx": True},
    "reorder-and-upcast": {**TINY, "reorder_and_upcast_attn": True},
    "unscaled": {**TINY, "scale_attn_weights": False},
    "n-inner-relu": {**TINY, "n_inner": 40, "activation_function": "relu", "layer_norm_epsilon": 1e-3},
}
WITH_PAD = {**TINY, "pad_token_id": PAD}


def positions_from(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at zero on each row's first real token (what generate uses)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def forward_cases() -> list[dict]:
    ids = random_ids(VOCAB)
    left_ids, mask = padded(ids, PAD, (3, 0), "left")
    right_ids, right_mask = padded(ids, PAD, (0, 4), "right")
    stretched = torch.arange(ids.shape[1]) * torch.arange(1, ids.shape[0] + 1)[:, None]
    return [
        {"input_ids": ids},
        {"input_ids": left_ids, "attention_mask": mask},
        {"input_ids": left_ids, "attention_mask": mask, "position_ids": positions_from(mask)},
        {"input_ids": right_ids, "attention_mask": right_mask},
        {"input_ids": ids, "position_ids": stretched},
        {"input_ids": ids, "token_type_ids": (torch.arange(10) >= 5).long().expand_as(ids)},
    ]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_lm_head_logits_match_reference(tmp_path, variant, attn_implementation):
    path, reference = save_reference(tmp_path, "gpt2", "causal", VARIANTS[variant], attn_implementation)
    model = load_ours(path, "causal", attn_implementation=attn_implementation)
    assert type(model).__name__ == "GPT2LMHeadModel"
    for inputs in forward_cases():
        assert_close(outputs_of(model, **inputs).logits, outputs_of(reference, **inputs).logits)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_base_model_matches_reference(tmp_path, attn_implementation):
    path, reference = save_reference(tmp_path, "gpt2", "base", TINY, attn_implementation)
    model = load_ours(path, "base", attn_implementation=attn_implementation)
    assert type(model).__name__ == "GPT2Model"
    for inputs in forward_cases():
        assert_close(outputs_of(model, **inputs).last_hidden_state, outputs_of(reference, **inputs).last_hidden_state)


@pytest.mark.parametrize(
    ("variant", "plain_kwargs"),
    [("scale-by-inverse-layer-idx", {"scale_attn_by_inverse_layer_idx": False}),
     ("unscaled", {"scale_attn_weights": True})],
)
def test_attention_scaling_options_change_the_logits(tmp_path, variant, plain_kwargs):
    path, _ = save_reference(tmp_path, "gpt2", "causal", VARIANTS[variant])
    ids = random_ids(VOCAB)
    with_option = outputs_of(load_ours(path, "causal"), input_ids=ids).logits
    without_option = outputs_of(load_ours(path, "causal", **plain_kwargs), input_ids=ids).logits
    assert (with_option - without_option).abs().max() > 1e-2


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_reorder_and_upcast_attn_computes_attention_in_float32(tmp_path, attn_implementation):
    """In bfloat16 the option keeps the scores and softmax in float32: closer to the float32 model
    than plain bfloat16 attention, and as close to the reference's upcast eager attention."""
    path, _ = save_reference(tmp_path, "gpt2", "causal", {**VARIANTS["reorder-and-upcast"], "n_embd": 64})
    ids, mask = padded(random_ids(VOCAB, length=24), PAD, (3, 0), "left")
    inputs = {"input_ids": ids, "attention_mask": mask, "output_attentions": True}
    exact = outputs_of(load_ours(path, "causal", attn_implementation="eager"), **inputs)
    upcast = outputs_of(load_ours(path, "causal", dtype=torch.bfloat16,
                                  attn_implementation=attn_implementation), **inputs)
    plain = outputs_of(load_ours(path, "causal", dtype=torch.bfloat16, attn_implementation=attn_implementation,
                                 reorder_and_upcast_attn=False), **inputs)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation="eager"
    ).eval()
    theirs = outputs_of(reference, **inputs)

    def error(output):
        return max((ours.float() - truth).abs().max() for ours, truth in zip(output.attentions, exact.attentions,
                                                                              strict=True))

    assert upcast.attentions[0].dtype == torch.bfloat16
    assert error(upcast) < error(plain)
    assert error(upcast) <= error(theirs) * 1.5
    assert_close(upcast.logits.float(), theirs.logits.float(), atol=0.1)


def test_conv1d_weights_keep_their_layout(tmp_path):
    path, reference = save_reference(tmp_path, "gpt2", "causal", TINY)
    model = load_ours(path, "causal")
    stored = load_file(path / "model.safetensors")
    hidden = TINY["n_embd"]
    assert stored["transformer.h.0.attn.c_attn.weight"].shape == (hidden, 3 * hidden)
    assert stored["transformer.h.0.mlp.c_proj.weight"].shape == (4 * hidden, hidden)
    ours = model.state_dict()
    for name, tensor in stored.items():
        assert ours[name].shape == tensor.shape and torch.equal(ours[name], tensor), name
    assert set(ours) - set(stored) == {"lm_head.weight"}  # tied to transformer.wte.weight
    assert model.lm_head.weight is model.transformer.wte.weight
    # In memory each is the transpose of an (out, in) matrix; loading it again keeps that layout.
    weight = model.transformer.h[0].attn.c_attn.weight
    assert weight.t().is_contiguous() and not weight.is_contiguous()
    model.load_state_dict(stored, strict=False)
    assert model.transformer.h[0].attn.c_attn.weight.t().is_contiguous()
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, stored["transformer.h.0.attn.c_attn.weight"])


@pytest.mark.parametrize("task", ["causal", "base", "sequence_classification"])
@pytest.mark.parametrize("variant", ["gpt2", "untied"])
def test_torchformers_checkpoint_loads_in_reference(tmp_path, variant, task):
    config = {**VARIANTS[variant], "pad_token_id": PAD}
    check_torchformers_checkpoint_loads_in_reference(tmp_path, "gpt2", config, task, PAD)


def test_config_saved_by_torchformers_reads_the_same_in_reference(tmp_path):
    config = transformers.GPT2Config(**VARIANTS["reorder-and-upcast"], n_inner=50, summary_type="mean")
    config.save_pretrained(tmp_path / "reference")
    ours = torchformers.AutoConfig.from_pretrained(tmp_path / "reference")
    assert type(ours) is torchformers.GPT2Config
    assert (ours.hidden_size, ours.num_hidden_layers, ours.max_position_embeddings) == (32, 3, 64)
    ours.save_pretrained(tmp_path / "ours")
    assert settings_of(transformers.AutoConfig.from_pretrained(tmp_path / "ours")) == settings_of(config)


def test_hidden_states_and_attentions_match_reference(tmp_path):
    check_hidden_states_and_attentions(tmp_path, "gpt2", TINY, "causal", PAD, TINY["n_layer"])


def test_sdpa_model_returns_eager_attentions(tmp_path):
    check_hidden_states_and_attentions(tmp_path, "gpt2", TINY, "base", PAD, TINY["n_layer"],
                                       our_attn_implementation="sdpa")


@pytest.mark.parametrize("num_items_in_batch", [None, 7])
def test_causal_lm_loss_matches_reference(tmp_path, num_items_in_batch):
    path, reference = save_reference(tmp_path, "gpt2", "causal", TINY)
    model = load_ours(path, "causal")
    ids, mask = padded(random_ids(VOCAB), PAD, (3, 0), "left")
    labels = ids.masked_fill(mask == 0, -100)
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    ours = outputs_of(model, input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    theirs = outputs_of(reference, input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    assert ours > 0
    assert_close(ours, theirs)


# -- decoding --------------------------------------------------------------------------------------
def incremental_logits(model, ids: torch.Tensor, mask: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits of a prefill over ``prefill`` tokens, then of one token at a time through the cache."""
    positions = positions_from(mask)
    with torch.no_grad():
        output = model(input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill],
                       position_ids=positions[:, :prefill], use_cache=True)
        steps = [output.logits]
        for t in range(prefill, ids.shape[1]):
            output = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                           position_ids=positions[:, t:t + 1], past_key_values=output.past_key_values,
                           use_cache=True)
            steps.append(output.logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("pad_lengths", [(0, 0), (3, 0)], ids=["plain", "left-padded"])
@pytest.mark.parametrize("variant", ["gpt2", "scale-by-inverse-layer-idx", "reorder-and-upcast"])
def test_cached_decoding_matches_reference_and_full_forward(tmp_path, variant, pad_lengths):
    path, reference = save_reference(tmp_path, "gpt2", "causal", VARIANTS[variant])
    model = load_ours(path, "causal")
    ids, mask = padded(random_ids(VOCAB, length=12), PAD, pad_lengths, "left")
    ours = incremental_logits(model, ids, mask, prefill=5)
    theirs = incremental_logits(reference, ids, mask, prefill=5)
    full = outputs_of(model, input_ids=ids, attention_mask=mask, position_ids=positions_from(mask)).logits
    assert_close(ours, theirs)
    assert_close(ours, full)


def test_cache_positions_continue_from_the_past(tmp_path):
    """Without position ids, a step through the cache is placed after the cached tokens."""
    path, reference = save_reference(tmp_path, "gpt2", "causal", TINY)
    model = load_ours(path, "causal")
    ids = random_ids(VOCAB)
    full = outputs_of(model, input_ids=ids).logits
    past = outputs_of(model, input_ids=ids[:, :6], use_cache=True).past_key_values
    assert past.get_seq_length() == 6
    assert_close(outputs_of(model, input_ids=ids[:, 6:], past_key_values=past).logits, full[:, 6:])
    assert outputs_of(model, input_ids=ids, use_cache=False).past_key_values is None


@pytest.mark.parametrize("variant", ["gpt2", "untied", "scale-by-inverse-layer-idx", "reorder-and-upcast"])
def test_greedy_generate_matches_reference(tmp_path, variant):
    path, reference = save_reference(tmp_path, "gpt2", "causal", VARIANTS[variant])
    model = load_ours(path, "causal")
    ids = random_ids(VOCAB, length=6)
    left_ids, mask = padded(ids, PAD, (2, 0), "left")
    for inputs in ({"input_ids": ids}, {"input_ids": left_ids, "attention_mask": mask}):
        ours = model.generate(**inputs, max_new_tokens=10)
        theirs = reference.generate(**inputs, max_new_tokens=10, do_sample=False, pad_token_id=2)
        assert torch.equal(ours, theirs), (ours, theirs)
        assert ours.shape[1] > ids.shape[1] and len(set(ours[:, ids.shape[1]:].flatten().tolist())) > 1


@pytest.mark.parametrize("options", [{"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2},
                                     {"cache_implementation": "static"}], ids=["beams", "beams-returned", "static"])
def test_beam_search_and_static_cache_match_reference(tmp_path, options):
    """The cache is reordered between beams and can be a preallocated static one."""
    path, reference = save_reference(tmp_path, "gpt2", "causal", TINY)
    model = load_ours(path, "causal")
    ids, mask = padded(random_ids(VOCAB, length=6), PAD, (2, 0), "left")
    ours = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, **options)
    theirs = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                pad_token_id=2, **options)
    assert torch.equal(ours, theirs), (ours, theirs)


# -- other heads -----------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_sequence_classification_logits_match_reference(tmp_path, side):
    path, reference = save_reference(tmp_path, "gpt2", "sequence_classification", {**WITH_PAD, "num_labels": 3})
    model = load_ours(path, "sequence_classification")
    assert type(model).__name__ == "GPT2ForSequenceClassification"
    ids, mask = padded(random_ids(VOCAB, batch=3), PAD, (3, 0, 5), side)
    ours = outputs_of(model, input_ids=ids, attention_mask=mask).logits
    assert ours.shape == (3, 3)
    assert_close(ours, outputs_of(reference, input_ids=ids, attention_mask=mask).logits)
    # Each row is read at its last real token: another pooling would change the padded rows.
    unpadded = outputs_of(model, input_ids=random_ids(VOCAB, batch=3)).logits
    assert (ours - unpadded).abs().max() > 1e-2


@pytest.mark.parametrize(("problem_type", "labels"), SEQUENCE_PROBLEMS)
def test_sequence_classification_losses_match_reference(tmp_path, problem_type, labels):
    check_sequence_classification_loss(tmp_path, "gpt2", WITH_PAD, PAD, problem_type, labels)


@pytest.mark.parametrize("task", ["token_classification", "question_answering"])
def test_token_classification_and_question_answering_match_reference(tmp_path, task):
    config = {**WITH_PAD, "num_labels": 3} if task == "token_classification" else WITH_PAD
    path, reference = save_reference(tmp_path, "gpt2", task, config)
    model = load_ours(path, task)
    assert type(model).__name__ == type(reference).__name__
    for inputs in forward_cases():
        ours, theirs = outputs_of(model, **inputs), outputs_of(reference, **inputs)
        for name in ("logits", "start_logits", "end_logits"):
            if getattr(theirs, name, None) is not None:
                assert_close(getattr(ours, name), getattr(theirs, name))
    check_loss_parity(tmp_path / "loss", "gpt2", WITH_PAD, task, PAD)


def test_causal_lm_checkpoint_into_sequence_classification_adds_score_with_warning(tmp_path, caplog):
    path, _ = save_reference(tmp_path, "gpt2", "causal", WITH_PAD)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.GPT2ForSequenceClassification.from_pretrained(path, num_labels=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "score.weight" in warnings[0]
    assert model.score.weight.shape == (3, TINY["n_embd"]) and model.score.weight.std() > 0


# -- loading, training and errors ------------------------------------------------------------------
def test_original_openai_layout_loads(tmp_path):
    """The original gpt2 checkpoints have no ``transformer.`` prefix and carry causal-mask buffers."""
    path, reference = save_reference(tmp_path, "gpt2", "causal", TINY)
    stored = load_file(path / "model.safetensors")
    legacy = {name.removeprefix("transformer."): tensor for name, tensor in stored.items()}
    for layer in range(TINY["n_layer"]):
        legacy[f"h.{layer}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
        legacy[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(legacy, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (path / "config.json").write_text(json.dumps(config))
    model, info = load_ours(path, "causal", output_loading_info=True)
    assert len(info["unexpected_keys"]) == 2 * TINY["n_layer"] and not info["missing_keys"]
    ids = random_ids(VOCAB)
    assert_close(outputs_of(model, input_ids=ids).logits, outputs_of(reference, input_ids=ids).logits)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    config = {**TINY, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    path, reference = save_reference(tmp_path, "gpt2", "causal", config)
    ids, mask = padded(random_ids(VOCAB), PAD, (3, 0), "left")

    def gradients(model):
        model.train()
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        return {name: param.grad for name, param in model.named_parameters()}

    plain = gradients(load_ours(path, "causal"))
    checkpointed_model = load_ours(path, "causal")
    checkpointed_model.gradient_checkpointing_enable()
    assert checkpointed_model.is_gradient_checkpointing
    checkpointed = gradients(checkpointed_model)
    theirs = gradients(reference)
    assert plain.keys() == checkpointed.keys() == theirs.keys()
    for name in plain:
        assert plain[name] is not None and plain[name].abs().max() > 0, name
        assert_close(checkpointed[name], plain[name], atol=1e-6)
        assert_close(plain[name], theirs[name])


def test_from_config_initializes_like_the_reference():
    """Conv1D weights normal(0, 0.02), residual projections scaled down by sqrt(2 * n_layer)."""
    config = {**TINY, "n_embd": 64, "n_layer": 8, "initializer_range": 0.5}
    model = torchformers.GPT2LMHeadModel.from_config(torchformers.GPT2Config(**config))
    assert set(model.state_dict()) == set(reference_model("gpt2", "causal", config).state_dict())
    block = model.transformer.h[0]
    assert 0.45 < block.attn.c_attn.weight.std() < 0.55
    assert 0.45 / 4 < block.attn.c_proj.weight.std() < 0.55 / 4
    assert 0.45 / 4 < block.mlp.c_proj.weight.std() < 0.55 / 4
    assert torch.equal(block.attn.c_attn.bias, torch.zeros(3 * 64))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_unsupported_options_raise():
    with pytest.raises(ConfigError, match="add_cross_attention"):
        torchformers.GPT2Model(torchformers.GPT2Config(**TINY, add_cross_attention=True))
    with pytest.raises(ConfigError, match="n_head"):
        torchformers.GPT2Config(**{**TINY, "n_head": 5})
    model = torchformers.GPT2Model(torchformers.GPT2Config(**TINY)).eval()
    with pytest.raises(UnsupportedArgumentError, match="cross-attention"):
        model(random_ids(VOCAB), encoder_hidden_states=torch.zeros(2, 3, TINY["n_embd"]))
    with pytest.raises(UnsupportedArgumentError, match="pad_token_id"):
        torchformers.GPT2ForSequenceClassification(torchformers.GPT2Config(**TINY)).eval()(random_ids(VOCAB))
