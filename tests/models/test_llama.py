"""Parity of the Llama family (llama, mistral, qwen2, qwen3) with the reference library.

Each test builds a tiny reference model with seeded random weights (every parameter, biases
and norms included, so no option can hide behind a zero or a one), saves it with the
reference's ``save_pretrained`` and checks that torchformers reads the same numbers out.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import torchformers
import torchformers.models.llama as llama_module

VOCAB = 128
PAD = 0
LENGTH = 10
ATOL = 1e-4
TINY = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
    "pad_token_id": PAD,
}
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 10000.0}

# name -> (model_type, config overrides). With head_dim 8, rope wavelengths run from 6 to 6000
# positions, so the scaled types below touch both scaled and unscaled frequencies.
VARIANTS: dict[str, tuple[str, dict]] = {
    "llama": ("llama", {}),
    "llama-gqa": ("llama", {"num_key_value_heads": 2}),
    "llama-mqa": ("llama", {"num_key_value_heads": 1}),
    "llama-head-dim": ("llama", {"head_dim": 16, "num_key_value_heads": 2}),
    "llama-attention-bias": ("llama", {"attention_bias": True}),
    "llama-mlp-bias": ("llama", {"mlp_bias": True}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-untied": ("llama", {"tie_word_embeddings": False}),
    "rope-linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}),
    # max_position_embeddings below LENGTH: the dynamic base grows inside every long forward.
    "rope-dynamic": ("llama", {"max_position_embeddings": 6,
                               "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}}),
    "rope-llama3": ("llama", {"rope_parameters": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 10000.0}}),
    "rope-yarn": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0}}),
    "rope-yarn-attention-factor": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "attention_factor": 0.8,
        "beta_fast": 16.0, "beta_slow": 2.0, "rope_theta": 10000.0}}),
    "rope-yarn-mscale": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0,
        "mscale_all_dim": 0.5, "rope_theta": 10000.0}}),
    "rope-yarn-untruncated": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "truncate": False,
        "rope_theta": 10000.0}}),
    "mistral-sliding": ("mistral", {"sliding_window": 4, "num_key_value_heads": 2}),
    "qwen2-sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1,
                                "num_key_value_heads": 2}),
    "qwen3": ("qwen3", {"head_dim": 16, "num_key_value_heads": 2}),
    "qwen3-attention-bias": ("qwen3", {"head_dim": 16, "num_key_value_heads": 2, "attention_bias": True}),
    # Only Llama requires hidden_size to split evenly into heads.
    "qwen3-uneven-heads": ("qwen3", {"hidden_size": 36, "num_attention_heads": 8, "num_key_value_heads": 2,
                                     "head_dim": 8}),
}
# config.json rewritten in the older form (top-level rope_theta, rope_scaling with "type" or
# "rope_type"), as files from before rope_parameters spell it; read by both libraries.
LEGACY_ROPE_CONFIGS: dict[str, dict] = {
    "legacy-rope-theta": {"rope_theta": 5000.0, "rope_scaling": None},
    "legacy-rope-linear": {"rope_theta": 5000.0, "rope_scaling": {"type": "linear", "factor": 2.0}},
    "legacy-rope-dynamic": {"rope_theta": 5000.0, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
    "legacy-rope-llama3": {"rope_theta": 5000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}},
    "legacy-rope-yarn": {"rope_theta": 5000.0, "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}},
}
VARIANTS.update({name: ("llama", {"max_position_embeddings": 6}) if "dynamic" in name else ("llama", {})
                 for name in LEGACY_ROPE_CONFIGS})
ROPE_VARIANTS = [name for name in VARIANTS if "rope" in name and name != "legacy-rope-theta"]

REFERENCE_CLASSES = {
    "causal": transformers.AutoModelForCausalLM,
    "base": transformers.AutoModel,
    "classification": transformers.AutoModelForSequenceClassification,
}
OUR_CLASSES = {
    "causal": torchformers.AutoModelForCausalLM,
    "base": torchformers.AutoModel,
    "classification": torchformers.AutoModelForSequenceClassification,
}


# -- helpers ---------------------------------------------------------------------------------
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every parameter with seeded noise (norm weights around one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.2
            param.copy_(noise + (1.0 if "norm" in name else 0.0))


def reference_model(variant: str, head: str = "causal", attn_implementation: str = "sdpa", **overrides):
    model_type, variant_overrides = VARIANTS[variant]
    config = transformers.AutoConfig.for_model(model_type, **{**TINY, **variant_overrides, **overrides})
    model = REFERENCE_CLASSES[head].from_config(config, attn_implementation=attn_implementation)
    randomize_(model)
    return model.eval()


def save_reference(directory: Path, variant: str, head: str = "causal", attn_implementation: str = "sdpa",
                   **overrides):
    """Save a seeded reference model; returns the directory and the reference model that reads it."""
    model = reference_model(variant, head, attn_implementation, **overrides)
    model.save_pretrained(directory)
    if variant in LEGACY_ROPE_CONFIGS:
        config_file = directory / "config.json"
        config = json.loads(config_file.read_text())
        del config["rope_parameters"]
        config.update(LEGACY_ROPE_CONFIGS[variant])
        config_file.write_text(json.dumps(config))
        model = REFERENCE_CLASSES[head].from_pretrained(directory, attn_implementation=attn_implementation).eval()
        assert model.config.rope_parameters["rope_theta"] == 5000.0
    return directory, model


def load_ours(directory: Path, head: str = "causal", **kwargs):
    return OUR_CLASSES[head].from_pretrained(directory, **kwargs)


def random_ids(batch: int = 2, length: int = LENGTH, seed: int = 1) -> torch.Tensor:
    """Token ids that avoid the pad id."""
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded(ids: torch.Tensor, pad_lengths: tuple[int, ...] = (3, 0), side: str = "left"):
    """``ids`` with the first (or last) ``pad_lengths[row]`` tokens of each row replaced by padding,
    and the matching attention mask."""
    mask = torch.ones_like(ids)
    for row, count in enumerate(pad_lengths):
        padding = slice(0, count) if side == "left" else slice(ids.shape[1] - count, None)
        mask[row, padding] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def positions_from(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at zero on each row's first real token (what generate uses)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def logits_of(model, **inputs) -> torch.Tensor:
    return model(**inputs).logits


def assert_close(ours: torch.Tensor, reference: torch.Tensor, atol: float = ATOL) -> None:
    assert ours.shape == reference.shape and ours.numel() > 0
    torch.testing.assert_close(ours, reference, atol=atol, rtol=0)


def forward_cases(ids: torch.Tensor) -> list[dict]:
    """Forward inputs: plain, left-padded, explicit position ids, and left-padded with position
    ids counted from each row's first real token."""
    left_ids, mask = padded(ids)
    # Rotary embeddings see only distances between positions: stretch them (row b by b + 1) so
    # that ignoring position_ids would show.
    stretched = torch.arange(ids.shape[1]) * torch.arange(1, ids.shape[0] + 1)[:, None]
    return [
        {"input_ids": ids},
        {"input_ids": left_ids, "attention_mask": mask},
        {"input_ids": ids, "position_ids": stretched},
        {"input_ids": left_ids, "attention_mask": mask, "position_ids": positions_from(mask)},
    ]


# -- forward parity --------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_lm_logits_match_reference(tmp_path, variant, attn_implementation):
    """Every position, padding included: the reference's outputs there enter left-padded losses."""
    path, reference = save_reference(tmp_path, variant, attn_implementation=attn_implementation)
    model = load_ours(path, attn_implementation=attn_implementation)
    assert type(model).__name__ == type(reference).__name__
    for inputs in forward_cases(random_ids()):
        assert_close(logits_of(model, **inputs), logits_of(reference, **inputs))


@pytest.mark.parametrize("variant", ROPE_VARIANTS + ["mistral-sliding", "qwen2-sliding"])
def test_config_option_changes_logits(tmp_path, variant):
    """The options the parity tests cover are not no-ops: switching them off changes the logits."""
    path, _ = save_reference(tmp_path, variant)
    if "rope" in variant:
        plain_kwargs = {"rope_parameters": DEFAULT_ROPE}
    elif variant == "mistral-sliding":
        plain_kwargs = {"sliding_window": None}
    else:
        plain_kwargs = {"layer_types": ["full_attention"] * TINY["num_hidden_layers"]}
    ids = random_ids()
    with_option = logits_of(load_ours(path), input_ids=ids)
    without_option = logits_of(load_ours(path, **plain_kwargs), input_ids=ids)
    assert (with_option - without_option).abs().max() > 1e-2


def test_dynamic_rope_grows_and_resets_like_reference(tmp_path):
    path, reference = save_reference(tmp_path, "rope-dynamic")
    model = load_ours(path)
    ids = random_ids()
    short = ids[:, :4]
    first_short = logits_of(model, input_ids=short)
    # short (trained length), long (base grows), short again (base returns to the trained one)
    for inputs in (short, ids, short):
        assert_close(logits_of(model, input_ids=inputs), logits_of(reference, input_ids=inputs))
    assert torch.equal(logits_of(model, input_ids=short), first_short)


@pytest.mark.parametrize("checkpoint_head", ["base", "causal"])
@pytest.mark.parametrize("variant", ["llama-gqa", "mistral-sliding", "qwen2-sliding", "qwen3-attention-bias"])
def test_base_model_hidden_states_and_attentions_match_reference(tmp_path, variant, checkpoint_head):
    path, _ = save_reference(tmp_path, variant, head=checkpoint_head, attn_implementation="eager")
    reference = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    model = load_ours(path, head="base", attn_implementation="eager")
    assert type(model).__name__ == type(reference).__name__
    ids, mask = padded(random_ids())
    inputs = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():
        ours, theirs = model(**inputs), reference(**inputs)
    assert_close(ours.last_hidden_state, theirs.last_hidden_state)
    layers = TINY["num_hidden_layers"]
    assert len(ours.hidden_states) == len(theirs.hidden_states) == layers + 1
    for our_states, their_states in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        assert_close(our_states, their_states)
    assert len(ours.attentions) == len(theirs.attentions) == layers
    for our_weights, their_weights in zip(ours.attentions, theirs.attentions, strict=True):
        assert_close(our_weights, their_weights)
    # Padding keys get no weight from real queries.
    assert our_weights[0, :, 3:, :3].abs().max() == 0


def test_inputs_embeds_and_logits_to_keep_match_reference(tmp_path):
    path, reference = save_reference(tmp_path, "qwen3-attention-bias")
    model = load_ours(path)
    ids, mask = padded(random_ids())
    embeds = reference.get_input_embeddings()(ids).detach()
    assert torch.equal(model.get_input_embeddings()(ids), embeds)
    from_embeds = logits_of(model, inputs_embeds=embeds, attention_mask=mask)
    assert_close(from_embeds, logits_of(reference, inputs_embeds=embeds, attention_mask=mask))
    last_three = logits_of(model, input_ids=ids, attention_mask=mask, logits_to_keep=3)
    assert_close(last_three, logits_of(reference, input_ids=ids, attention_mask=mask, logits_to_keep=3))
    assert_close(last_three, from_embeds[:, -3:])


@pytest.mark.parametrize("num_items_in_batch", [None, 7])
@pytest.mark.parametrize("variant", ["llama-tied", "qwen2-sliding", "qwen3"])
def test_causal_lm_loss_matches_reference(tmp_path, variant, num_items_in_batch):
    path, reference = save_reference(tmp_path, variant)
    model = load_ours(path)
    ids, mask = padded(random_ids())
    # As data collators make them: so the last padding position predicts the first real token,
    # and the loss depends on the logits at a padding position.
    labels = ids.masked_fill(mask == 0, -100)
    labels[1, 4:6] = -100
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
        theirs = reference(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    assert ours.ndim == 0 and ours > 0
    assert_close(ours, theirs)


# -- decoding ----------------------------------------------------------------------------------
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
@pytest.mark.parametrize("variant", ["llama-gqa", "rope-yarn", "mistral-sliding", "qwen2-sliding", "qwen3"])
def test_cached_decoding_matches_reference_and_full_forward(tmp_path, variant, pad_lengths):
    path, reference = save_reference(tmp_path, variant)
    model = load_ours(path)
    ids, mask = padded(random_ids(length=12), pad_lengths)
    ours = incremental_logits(model, ids, mask, prefill=5)
    theirs = incremental_logits(reference, ids, mask, prefill=5)
    full = logits_of(model, input_ids=ids, attention_mask=mask, position_ids=positions_from(mask))
    assert_close(ours, theirs)
    assert_close(ours, full)


def test_a_passed_cache_is_used_even_with_use_cache_false(tmp_path):
    """The reference reads and extends a cache it is given whatever use_cache says (and then
    does not return it)."""
    path, reference = save_reference(tmp_path, "mistral-sliding")
    model = load_ours(path)
    ids = random_ids()
    full = logits_of(model, input_ids=ids)
    outputs = []
    for network in (model, reference):
        with torch.no_grad():
            cache = network(input_ids=ids[:, :6], use_cache=True).past_key_values
            step = network(input_ids=ids[:, 6:], past_key_values=cache, use_cache=False)
        assert step.past_key_values is None and cache.get_seq_length() == LENGTH
        outputs.append(step.logits)
    assert_close(outputs[0], outputs[1])
    assert_close(outputs[0], full[:, 6:])


@pytest.mark.parametrize(
    "variant", ["llama", "llama-mqa", "rope-dynamic", "mistral-sliding", "qwen2-sliding", "qwen3-attention-bias"]
)
def test_greedy_generate_matches_reference(tmp_path, variant):
    path, reference = save_reference(tmp_path, variant)
    model = load_ours(path)
    ids = random_ids(length=6)
    left_ids, mask = padded(ids, (2, 0))
    for inputs in ({"input_ids": ids}, {"input_ids": left_ids, "attention_mask": mask}):
        ours = model.generate(**inputs, max_new_tokens=10)
        theirs = reference.generate(**inputs, max_new_tokens=10, do_sample=False)
        assert torch.equal(ours, theirs), (ours, theirs)
        assert ours.shape[1] > ids.shape[1] and len(set(ours[:, ids.shape[1]:].flatten().tolist())) > 1


# -- sequence classification -------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("variant", ["llama-gqa", "qwen2-sliding", "qwen3"])
def test_sequence_classification_logits_match_reference(tmp_path, variant, side):
    path, reference = save_reference(tmp_path, variant, head="classification", num_labels=3)
    model = load_ours(path, head="classification")
    assert type(model).__name__ == type(reference).__name__
    ids, mask = padded(random_ids(batch=3), (3, 0, 5), side)
    ours = logits_of(model, input_ids=ids, attention_mask=mask)
    theirs = logits_of(reference, input_ids=ids, attention_mask=mask)
    assert ours.shape == (3, 3)
    assert_close(ours, theirs)
    # Each row is read at its last real token: a different pooling would change the padded rows.
    unpadded = logits_of(model, input_ids=random_ids(batch=3))
    assert (ours - unpadded).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("problem_type", "labels"),
    [
        ("regression", torch.tensor([0.5, -1.5])),
        ("single_label_classification", torch.tensor([2, 0])),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
    ],
)
def test_sequence_classification_loss_matches_reference(tmp_path, problem_type, labels):
    num_labels = 1 if problem_type == "regression" else 3
    path, reference = save_reference(tmp_path, "llama", head="classification", num_labels=num_labels)
    model = load_ours(path, head="classification")
    ids, mask = padded(random_ids())
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        theirs = reference(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert model.config.problem_type == reference.config.problem_type == problem_type
    assert ours > 0
    assert_close(ours, theirs)


def test_causal_lm_checkpoint_into_sequence_classification_adds_score_with_warning(tmp_path, caplog):
    path, _ = save_reference(tmp_path, "llama")
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model = torchformers.LlamaForSequenceClassification.from_pretrained(path, num_labels=3)
    warnings = [r for r in caplog.records if r.name == "torchformers" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "score.weight" in warnings[0].getMessage()
    stored = load_file(path / "model.safetensors")
    ours = model.state_dict()
    assert set(ours) == set(stored) - {"lm_head.weight"} | {"score.weight"}
    for name, tensor in ours.items():
        if name != "score.weight":
            assert torch.equal(tensor, stored[name]), name
    score = model.score.weight
    assert score.shape == (3, TINY["hidden_size"]) and not score.is_meta
    assert torch.isfinite(score).all() and score.std() > 0


# -- saving and loading ------------------------------------------------------------------------
def settings_of(config) -> dict:
    """A reference config's values, without where and by which version it was written (and
    without the legacy ``type`` spelling that the reference keeps beside ``rope_type``)."""
    ignored = {"_name_or_path", "transformers_version", "torchformers_version"}
    settings = {key: value for key, value in config.to_dict().items() if key not in ignored}
    settings["rope_parameters"] = {k: v for k, v in settings["rope_parameters"].items() if k != "type"}
    return settings


def shard_files(directory: Path) -> set[str]:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all((directory / name).is_file() for name in files)
    assert not (directory / "model.safetensors").exists()
    return files


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_saved_by_torchformers_reads_the_same_in_reference(tmp_path, variant):
    path, reference = save_reference(tmp_path / "reference", variant)
    torchformers.AutoConfig.from_pretrained(path).save_pretrained(tmp_path / "ours")
    assert settings_of(transformers.AutoConfig.from_pretrained(tmp_path / "ours")) == settings_of(reference.config)


@pytest.mark.parametrize("variant", ["llama-tied", "llama-untied", "qwen2-sliding", "qwen3-attention-bias"])
def test_torchformers_checkpoint_loads_in_reference(tmp_path, variant):
    path, reference = save_reference(tmp_path / "reference", variant)
    load_ours(path).save_pretrained(tmp_path / "ours")
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert settings_of(reloaded.config) == settings_of(reference.config)
    ids = random_ids()
    assert torch.equal(logits_of(reloaded.eval(), input_ids=ids), logits_of(reference, input_ids=ids))


def test_sharded_checkpoints_round_trip_both_ways(tmp_path):
    path, reference = save_reference(tmp_path / "reference", "qwen3-attention-bias")
    ids = random_ids()
    expected = logits_of(reference, input_ids=ids)

    load_ours(path).save_pretrained(tmp_path / "ours-sharded", max_shard_size="20KB")
    shard_files(tmp_path / "ours-sharded")
    assert torch.equal(logits_of(load_ours(tmp_path / "ours-sharded"), input_ids=ids), expected)
    by_reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours-sharded").eval()
    assert torch.equal(logits_of(by_reference, input_ids=ids), expected)

    reference.save_pretrained(tmp_path / "reference-sharded", max_shard_size="20KB")
    shard_files(tmp_path / "reference-sharded")
    assert torch.equal(logits_of(load_ours(tmp_path / "reference-sharded"), input_ids=ids), expected)


def test_bfloat16_loading_matches_reference(tmp_path):
    path, _ = save_reference(tmp_path, "llama-gqa")
    model = load_ours(path, dtype=torch.bfloat16)
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids, mask = padded(random_ids())
    ours = logits_of(model, input_ids=ids, attention_mask=mask)
    theirs = logits_of(reference, input_ids=ids, attention_mask=mask)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    # Same operations in the same order: bfloat16 results agree exactly, not just within rounding.
    assert_close(ours.float(), theirs.float(), atol=0.0)


@pytest.mark.parametrize("dtype", [None, "auto"])
def test_bfloat16_checkpoint_loads_as_bfloat16(tmp_path, dtype):
    reference_model("qwen3").to(torch.bfloat16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    # Reloaded rather than the saved model: .to(bfloat16) also rounds the reference's rope buffer.
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reference.dtype == torch.bfloat16
    model = load_ours(tmp_path) if dtype is None else load_ours(tmp_path, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.dtype == torch.bfloat16
    ids = random_ids()
    assert_close(logits_of(model, input_ids=ids).float(), logits_of(reference, input_ids=ids).float(), atol=0.0)


# -- training ------------------------------------------------------------------------------------
def gradients_of(model, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    return {name: param.grad for name, param in model.named_parameters()}


@pytest.mark.parametrize("variant", ["llama-tied", "qwen2-sliding", "qwen3-attention-bias"])
def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, variant, monkeypatch):
    path, reference = save_reference(tmp_path, variant)
    ids, mask = padded(random_ids())
    plain = gradients_of(load_ours(path), ids, mask)

    checkpointed_model = load_ours(path)
    checkpointed_model.gradient_checkpointing_enable()
    assert checkpointed_model.is_gradient_checkpointing
    calls = []
    real_checkpoint = llama_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(llama_module, "checkpoint", counting_checkpoint)
    checkpointed = gradients_of(checkpointed_model, ids, mask)
    assert len(calls) == TINY["num_hidden_layers"] and calls[0]["use_reentrant"] is False

    theirs = gradients_of(reference, ids, mask)
    assert plain.keys() == checkpointed.keys() == theirs.keys()
    for name in plain:
        assert plain[name] is not None and plain[name].abs().max() > 0, name
        assert_close(checkpointed[name], plain[name], atol=1e-6)
        assert_close(plain[name], theirs[name])
