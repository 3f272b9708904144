"""PreTrainedModel: saving, loading (dtypes, devices, formats) and the shared model utilities."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file

from torchformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
)
from torchformers.errors import UnsupportedArgumentError, WeightsMismatchError
from torchformers.modeling import parse_size

IDS = torch.tensor([[1, 5, 9, 42, 77, 3]])


def assert_same_state(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    expected_state = expected.state_dict()
    actual_state = actual.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for key, tensor in expected_state.items():
        assert actual_state[key].dtype == tensor.dtype, key
        assert torch.equal(actual_state[key], tensor), key


def read_json(path) -> dict:
    return json.loads(open(path, encoding="utf-8").read())


def weight_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(("model", "pytorch_model")))


# -- saving -------------------------------------------------------------------------------------


def test_save_pretrained_writes_config_generation_config_and_safetensors(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)

    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "model.safetensors"]
    config = read_json(tmp_path / "config.json")
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float32"
    assert read_json(tmp_path / "generation_config.json")["eos_token_id"] == 2
    stored = load_file(tmp_path / "model.safetensors")
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    assert stored.keys() == tiny_llama.state_dict().keys()
    assert torch.equal(stored["model.embed_tokens.weight"], tiny_llama.model.embed_tokens.weight)
    # Saving does not change the model's own config.
    assert tiny_llama.config.architectures is None


@pytest.mark.parametrize("max_shard_size", ["50KB", 50_000, "0.05MB"])
def test_max_shard_size_splits_into_shards_with_an_index(tmp_path, tiny_llama, max_shard_size):
    tiny_llama.save_pretrained(tmp_path, max_shard_size=max_shard_size)

    shards = [n for n in weight_files(tmp_path) if n.endswith(".safetensors")]
    count = len(shards)
    assert count > 1
    assert shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = read_json(tmp_path / "model.safetensors.index.json")
    state = tiny_llama.state_dict()
    assert index["weight_map"].keys() == state.keys()
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for shard in shards:
        tensors = load_file(tmp_path / shard)
        assert all(index["weight_map"][key] == shard for key in tensors)
        # Only a single tensor larger than the limit may exceed it.
        assert len(tensors) == 1 or sum(t.numel() * t.element_size() for t in tensors.values()) <= 50_000

    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)


def test_sharded_save_loads_in_reference_with_same_logits(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="30KB")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reference(IDS).logits, tiny_llama(IDS).logits, atol=1e-5, rtol=0)


def test_unsharded_save_removes_stale_shards(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(weight_files(tmp_path)) > 3
    tiny_llama.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == ["model.safetensors"]

    tiny_llama.save_pretrained(tmp_path, max_shard_size="40KB")
    assert "model.safetensors" not in weight_files(tmp_path)
    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)


def test_resharding_with_fewer_shards_removes_the_extra_ones(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    many = weight_files(tmp_path)
    tiny_llama.save_pretrained(tmp_path, max_shard_size="60KB")
    few = weight_files(tmp_path)
    assert len(few) < len(many)
    index = read_json(tmp_path / "model.safetensors.index.json")
    assert set(few) == set(index["weight_map"].values()) | {"model.safetensors.index.json"}


def test_a_stale_pytorch_bin_of_an_earlier_save_is_removed(tmp_path, tiny_llama):
    torch.save(tiny_llama.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "notes.txt").write_text("keep me")
    tiny_llama.save_pretrained(tmp_path)
    assert weight_files(tmp_path) == ["model.safetensors"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_variants_coexist_and_use_the_reference_names(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    half = LlamaForCausalLM.from_config(tiny_llama.config, dtype=torch.float16)
    half.load_state_dict(tiny_llama.state_dict())
    half.save_pretrained(tmp_path, variant="fp16", max_shard_size="30KB")

    names = weight_files(tmp_path)
    assert "model.safetensors" in names  # another variant's save leaves it alone
    assert "model.safetensors.index.fp16.json" in names  # the reference's index name for a variant
    shards = [n for n in names if n.startswith("model.fp16-")]
    assert len(shards) > 1 and shards[0] == f"model.fp16-00001-of-{len(shards):05d}.safetensors"

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, variant="fp16")
    assert loaded.dtype == torch.float16
    assert_same_state(loaded, half)
    # The shared config.json now records float16, so ask for the full-precision weights explicitly.
    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32), tiny_llama)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, variant="fp16", dtype=torch.float16)
    for key, tensor in half.state_dict().items():
        assert torch.equal(reference.state_dict()[key], tensor), key


def test_reference_sharded_variant_loads(tmp_path, tiny_llama_kwargs):
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny_llama_kwargs))
    reference.save_pretrained(tmp_path, variant="v2", max_shard_size="30KB")
    assert any(n.endswith(".index.v2.json") for n in os.listdir(tmp_path))

    ours = AutoModelForCausalLM.from_pretrained(tmp_path, variant="v2")
    assert_same_state(ours, reference)


def test_save_pretrained_refuses_unsupported_options(tmp_path, tiny_llama):
    with pytest.raises(UnsupportedArgumentError, match="safe_serialization"):
        tiny_llama.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(UnsupportedArgumentError, match="push_to_hub"):
        tiny_llama.save_pretrained(tmp_path, push_to_hub=True)
    with pytest.raises(UnsupportedArgumentError, match="save_everything"):
        tiny_llama.save_pretrained(tmp_path, save_everything=True)
    with pytest.raises(UnsupportedArgumentError, match="max_shard_size"):
        tiny_llama.save_pretrained(tmp_path, max_shard_size="lots")
    assert not os.listdir(tmp_path)


def test_save_pretrained_not_main_process_writes_nothing(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path / "out", is_main_process=False)
    assert not (tmp_path / "out").exists()


def test_save_pretrained_with_an_explicit_state_dict(tmp_path, tiny_llama):
    state = {k: torch.zeros_like(v) for k, v in tiny_llama.state_dict().items()}
    tiny_llama.save_pretrained(tmp_path, state_dict=state)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(not p.any() for p in loaded.parameters())


@pytest.mark.parametrize(
    ("size", "expected"),
    [("5GB", 5 * 10**9), ("5GiB", 5 * 2**30), ("500MB", 500 * 10**6), ("50kb", 50_000), (1234, 1234), ("7B", 7)],
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


# -- loading formats ------------------------------------------------------------------------------


def test_pytorch_model_bin_loads_with_weights_only(tmp_path, tiny_llama):
    tiny_llama.config.save_pretrained(tmp_path)
    torch.save(tiny_llama.state_dict(), tmp_path / "pytorch_model.bin")
    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)

    torch.save(tiny_llama.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)


def test_sharded_pytorch_bin_with_index_loads(tmp_path, tiny_llama):
    tiny_llama.config.save_pretrained(tmp_path)
    state = tiny_llama.state_dict()
    keys = list(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
              "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for name, part in halves.items():
        torch.save({k: state[k] for k in part}, tmp_path / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))

    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)


def test_use_safetensors_chooses_the_format(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    zeros = {k: torch.zeros_like(v) for k, v in tiny_llama.state_dict().items()}
    torch.save(zeros, tmp_path / "pytorch_model.bin")

    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path), tiny_llama)  # safetensors first
    from_bin = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=False)
    assert all(not p.any() for p in from_bin.parameters())


def test_safetensors_weights_are_memory_mapped_without_copies(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_size])

    # Zero-copy views of one mapping sit exactly as far apart in memory as in the file.
    params = dict(model.named_parameters())
    first = "model.embed_tokens.weight"
    for name, param in params.items():
        file_distance = header[name]["data_offsets"][0] - header[first]["data_offsets"][0]
        assert param.data_ptr() - params[first].data_ptr() == file_distance, name

    cast = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert cast.model.embed_tokens.weight.dtype == torch.bfloat16  # a cast must copy
    assert model.model.embed_tokens.weight.requires_grad


# -- dtype and device_map ----------------------------------------------------------------------------


def test_dtype_auto_is_the_default_and_follows_the_config(tmp_path, tiny_llama):
    half = LlamaForCausalLM.from_config(tiny_llama.config, dtype=torch.bfloat16)
    half.save_pretrained(tmp_path)
    assert read_json(tmp_path / "config.json")["dtype"] == "bfloat16"

    assert AutoModelForCausalLM.from_pretrained(tmp_path).dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto").dtype == torch.bfloat16
    full = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert full.dtype == torch.float32 and full.config.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in full.parameters())


def test_dtype_auto_without_config_dtype_uses_the_stored_dtype(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path)
    config = read_json(tmp_path / "config.json")
    del config["dtype"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    half = {k: v.to(torch.float16) for k, v in tiny_llama.state_dict().items()}
    from safetensors.torch import save_file

    save_file(half, tmp_path / "model.safetensors")
    assert AutoModelForCausalLM.from_pretrained(tmp_path).dtype == torch.float16


@pytest.mark.parametrize("dtype", [torch.bfloat16, "bfloat16", "torch.bfloat16", torch.float16, torch.float32])
def test_explicit_dtypes(tiny_llama_dir, tiny_llama, dtype):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=dtype)
    expected = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    assert all(p.dtype == expected for p in model.parameters())
    assert model.config.dtype == expected
    torch.testing.assert_close(model.model.norm.weight.float(), tiny_llama.model.norm.weight.to(expected).float())


def test_legacy_torch_dtype_keyword(tiny_llama_dir):
    assert AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("device_map", ["cpu", {"": "cpu"}, "auto", torch.device("cpu"),
                                        {"model": "cpu", "lm_head": "cpu"}])
def test_device_map_on_cpu(tiny_llama_dir, tiny_llama, device_map):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, device_map=device_map)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, tiny_llama(IDS).logits)


def test_device_map_errors(tiny_llama_dir):
    with pytest.raises(UnsupportedArgumentError, match="unknown device"):
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, device_map="quantum")
    with pytest.raises(UnsupportedArgumentError, match="lm_head"):
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, device_map={"model": "cpu"})


# -- other loading behaviour -----------------------------------------------------------------------------


def test_loaded_model_is_in_eval_mode_and_matches_the_saved_one(tiny_llama_dir, tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert not model.training
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.name_or_path == str(tiny_llama_dir)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, tiny_llama(IDS).logits, atol=0, rtol=0)


def test_config_keyword_overrides_reach_the_model(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, use_cache=False, attn_implementation="eager")
    assert model.config.use_cache is False
    assert model.config._attn_implementation == "eager"


def test_explicit_config_object(tiny_llama_dir):
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, config=config, rms_norm_eps=1e-3)
    assert model.config.rms_norm_eps == 1e-3
    assert config.rms_norm_eps != 1e-3  # the caller's config is not modified


def test_output_loading_info(tiny_llama_dir):
    model, info = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, output_loading_info=True)
    assert isinstance(model, LlamaForCausalLM)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}

    base, info = LlamaModel.from_pretrained(tiny_llama_dir, output_loading_info=True)
    assert info["unexpected_keys"] == ["lm_head.weight"]
    assert info["missing_keys"] == []


def test_new_task_head_is_initialized_with_one_warning(tiny_llama_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        model, info = AutoModelForSequenceClassification.from_pretrained(
            tiny_llama_dir, num_labels=3, output_loading_info=True
        )
    assert isinstance(model, LlamaForSequenceClassification)
    assert info["missing_keys"] == ["score.weight"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "score.weight" in warnings[0].getMessage()
    assert model.score.weight.shape == (3, 32)
    assert 0 < model.score.weight.std() < 0.1  # the normal(0, 0.02) init, not zeros or garbage


def test_ignore_mismatched_sizes_reinitializes_the_head(tmp_path, tiny_llama_dir):
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir, num_labels=3)
    classifier.save_pretrained(tmp_path)

    with pytest.raises(WeightsMismatchError, match="score.weight"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5)

    model, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.score.weight.shape == (5, 32)
    assert info["mismatched_keys"] == [("score.weight", (3, 32), (5, 32))]
    assert info["missing_keys"] == []
    assert model.config.num_labels == 5
    assert torch.equal(model.model.embed_tokens.weight, classifier.model.embed_tokens.weight)


def test_from_pretrained_refuses_positional_arguments(tiny_llama_dir):
    with pytest.raises(UnsupportedArgumentError, match="positional"):
        LlamaForCausalLM.from_pretrained(tiny_llama_dir, "extra")


# -- from_config ---------------------------------------------------------------------------------------


def test_from_config_builds_a_random_model(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    torch.manual_seed(0)
    first = AutoModelForCausalLM.from_config(config)
    torch.manual_seed(0)
    second = LlamaForCausalLM.from_config(config)
    assert isinstance(first, LlamaForCausalLM)
    assert_same_state(first, second)
    assert first.config is not config
    std = first.model.layers[0].mlp.up_proj.weight.std().item()
    assert abs(std - config.initializer_range) < 0.005
    assert torch.equal(first.model.norm.weight, torch.ones(32))


def test_from_config_dtype_and_attention(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    model = LlamaForCausalLM.from_config(config, dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert LlamaForCausalLM.from_config(config, torch_dtype=torch.float16).dtype == torch.float16
    with pytest.raises(UnsupportedArgumentError, match="attn_implementation"):
        LlamaForCausalLM.from_config(config, attn_implementation="flash_attention_9")
    with pytest.raises(UnsupportedArgumentError, match="device"):
        LlamaForCausalLM.from_config(config, device="cpu")


# -- utilities ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
def test_num_parameters_matches_reference(tiny_llama_kwargs, tie):
    ours = LlamaForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs, tie_word_embeddings=tie))
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny_llama_kwargs, tie_word_embeddings=tie))
    assert ours.num_parameters() == reference.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == reference.num_parameters(exclude_embeddings=True)
    for model in (ours, reference):
        model.model.layers.requires_grad_(False)
    assert ours.num_parameters(only_trainable=True) == reference.num_parameters(only_trainable=True)

    vocab, hidden = tiny_llama_kwargs["vocab_size"], tiny_llama_kwargs["hidden_size"]
    unique = sum(p.numel() for p in {id(p): p for p in ours.parameters()}.values())
    assert ours.num_parameters() == unique
    head = 0 if tie else vocab * hidden
    assert ours.num_parameters(only_trainable=True) == vocab * hidden + hidden + head


def test_embeddings_accessors(tiny_llama):
    assert tiny_llama.get_input_embeddings() is tiny_llama.model.embed_tokens
    assert tiny_llama.get_output_embeddings() is tiny_llama.lm_head
    assert tiny_llama.base_model is tiny_llama.model
    assert LlamaModel(tiny_llama.config).get_output_embeddings() is None
    new = torch.nn.Embedding(100, 32)
    tiny_llama.set_input_embeddings(new)
    assert tiny_llama.model.embed_tokens is new


@pytest.mark.parametrize("tie", [False, True])
def test_resize_token_embeddings_grow_and_shrink(tmp_path, tiny_llama_kwargs, tie):
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs, tie_word_embeddings=tie))
    old_input = model.get_input_embeddings().weight.detach().clone()
    old_output = model.get_output_embeddings().weight.detach().clone()

    embedding = model.resize_token_embeddings(120)

    assert embedding is model.get_input_embeddings()
    assert embedding.weight.shape == (120, 32)
    assert model.lm_head.weight.shape == (120, 32) and model.lm_head.out_features == 120
    assert model.config.vocab_size == 120 and model.vocab_size == 120
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    assert torch.equal(embedding.weight[:100], old_input)
    torch.testing.assert_close(embedding.weight[100], old_input.mean(0))
    if not tie:
        assert torch.equal(model.lm_head.weight[:100], old_output)
    assert model(torch.tensor([[1, 119]])).logits.shape == (1, 2, 120)

    model.resize_token_embeddings(50)
    assert model.get_input_embeddings().weight.shape == (50, 32)
    assert model.lm_head.weight.shape == (50, 32) and model.config.vocab_size == 50
    assert torch.equal(model.get_input_embeddings().weight, old_input[:50])

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.vocab_size == 50
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS[:, :3]).logits, model(IDS[:, :3]).logits)


def test_resize_token_embeddings_pad_to_multiple_of(tiny_llama):
    assert tiny_llama.resize_token_embeddings(101, pad_to_multiple_of=64).weight.shape == (128, 32)
    assert tiny_llama.config.vocab_size == 128
    assert tiny_llama.resize_token_embeddings(pad_to_multiple_of=48).weight.shape == (144, 32)
    unchanged = tiny_llama.get_input_embeddings()
    assert tiny_llama.resize_token_embeddings() is unchanged
    with pytest.raises(UnsupportedArgumentError):
        tiny_llama.resize_token_embeddings(0)


def test_resize_without_mean_resizing_uses_the_normal_init(tiny_llama):
    torch.manual_seed(0)
    new_rows = tiny_llama.resize_token_embeddings(1100, mean_resizing=False).weight[100:]
    assert abs(new_rows.std().item() - 0.02) < 0.002


def test_gradient_checkpointing_flags(tiny_llama):
    assert not tiny_llama.is_gradient_checkpointing
    tiny_llama.gradient_checkpointing_enable()
    assert tiny_llama.is_gradient_checkpointing and tiny_llama.model.gradient_checkpointing
    tiny_llama.train()
    tiny_llama(IDS, labels=IDS).loss.backward()
    assert tiny_llama.model.layers[0].mlp.up_proj.weight.grad is not None
    tiny_llama.gradient_checkpointing_disable()
    assert not tiny_llama.is_gradient_checkpointing


@pytest.mark.parametrize("tie", [False, True])
def test_reference_checkpoint_gives_the_same_logits_and_ours_loads_in_reference(tmp_path, tiny_llama_kwargs, tie):
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny_llama_kwargs, tie_word_embeddings=tie))
    reference.save_pretrained(tmp_path / "reference")

    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "reference")
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    with torch.no_grad():
        expected = reference(IDS).logits
        torch.testing.assert_close(ours(IDS).logits, expected, atol=1e-5, rtol=0)

    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(back(IDS).logits, expected, atol=1e-5, rtol=0)


def test_tied_checkpoint_with_a_stored_head_copy_loads(tmp_path, tiny_llama_kwargs):
    model = LlamaForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs, tie_word_embeddings=True))
    model.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in model.state_dict().items()}  # lm_head.weight stored too
    save_file(state, tmp_path / "model.safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_copy_of_a_saved_directory_is_self_contained(tmp_path, tiny_llama_dir, tiny_llama):
    shutil.copytree(tiny_llama_dir, tmp_path / "copy")
    shutil.rmtree(tiny_llama_dir)
    assert_same_state(AutoModelForCausalLM.from_pretrained(tmp_path / "copy"), tiny_llama)


def test_attn_implementation_set_on_the_config_is_kept(tiny_llama_dir, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    config._attn_implementation = "eager"
    assert LlamaForCausalLM.from_config(config).config._attn_implementation == "eager"
    assert LlamaForCausalLM.from_config(config, attn_implementation="sdpa").config._attn_implementation == "sdpa"
    loaded = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, config=config)
    assert loaded.config._attn_implementation == "eager"
    assert loaded.model.layers[0].self_attn.attn_implementation == "eager"
    assert AutoModelForCausalLM.from_pretrained(tiny_llama_dir).config._attn_implementation == "sdpa"
