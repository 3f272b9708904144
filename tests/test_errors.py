"""Bad input raises a torchformers error that names the file and the key involved."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from torchformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    errors,
)
from torchformers.errors import (
    CheckpointError,
    ConfigError,
    FileResolutionError,
    RemoteCodeError,
    TorchformersError,
    UnknownModelTypeError,
    UnsupportedArgumentError,
    WeightsMismatchError,
)
from torchformers.models.auto import CONFIG_NAMES


def edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def raised(error_class, call, *args, **kwargs) -> str:
    """Run ``call`` and return the message of the ``error_class`` it must raise."""
    with pytest.raises(error_class) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def test_error_classes_derive_from_the_builtin_the_reference_raises():
    assert issubclass(FileResolutionError, OSError) and issubclass(CheckpointError, OSError)
    assert issubclass(ConfigError, ValueError) and issubclass(WeightsMismatchError, ValueError)
    assert issubclass(UnknownModelTypeError, ConfigError)
    assert issubclass(UnsupportedArgumentError, TypeError)
    assert issubclass(RemoteCodeError, ValueError)
    for error_class in (FileResolutionError, CheckpointError, ConfigError, WeightsMismatchError,
                        UnsupportedArgumentError, RemoteCodeError):
        assert issubclass(error_class, TorchformersError)
    assert errors.describe_path("relative/file.json") == os.path.abspath("relative/file.json")


# -- weight files ------------------------------------------------------------------------------------


def test_truncated_safetensors(tiny_llama_dir):
    path = tiny_llama_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(path) in message and "truncated" in message
    assert "tensor 'model." in message  # the first tensor that does not fit


def test_corrupt_safetensors_header(tiny_llama_dir):
    path = tiny_llama_dir / "model.safetensors"
    data = path.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    path.write_bytes(data[:8] + b"\x00garbage{" + b"!" * (header_size - 9) + data[8 + header_size:])
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(path) in message and "corrupt header" in message


def test_garbage_instead_of_safetensors(tiny_llama_dir):
    path = tiny_llama_dir / "model.safetensors"
    path.write_bytes(b"<html>Rate limit exceeded</html>" * 10)
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(path) in message and "not a safetensors file" in message


def test_missing_shard_listed_in_the_index(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = "model-00002-of-" + sorted(set(index["weight_map"].values()))[-1][-17:]
    os.remove(tmp_path / shard)
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tmp_path)
    assert str(tmp_path / "model.safetensors.index.json") in message
    assert repr(shard) in message
    example_key = next(k for k, v in index["weight_map"].items() if v == shard)
    assert repr(example_key) in message


def test_shard_index_that_is_not_json(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tmp_path)
    assert str(tmp_path / "model.safetensors.index.json") in message and "weight_map" in message


def test_shard_index_pointing_outside_the_model(tmp_path, tiny_llama):
    tiny_llama.save_pretrained(tmp_path, max_shard_size="20KB")
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "../elsewhere/model.safetensors"
    index_path.write_text(json.dumps(index))
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tmp_path)
    assert str(index_path) in message and "'model.norm.weight'" in message


@pytest.mark.parametrize(
    ("key", "value", "tensor", "stored", "expected"),
    [
        ("intermediate_size", 48, "model.layers.0.mlp.down_proj.weight", "[32, 64]", "[32, 48]"),
        ("hidden_size", 64, "lm_head.weight", "[100, 32]", "[100, 64]"),
    ],
)
def test_tensor_shape_that_does_not_fit_the_config(tiny_llama_dir, key, value, tensor, stored, expected):
    edit_config(tiny_llama_dir, **{key: value, "head_dim": None})
    message = raised(WeightsMismatchError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "model.safetensors") in message
    assert f"tensor {tensor!r} has shape {stored}" in message and expected in message
    assert "ignore_mismatched_sizes" in message


def test_shape_error_names_the_tensor(tiny_llama_dir):
    edit_config(tiny_llama_dir, vocab_size=120)
    message = raised(WeightsMismatchError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert "tensor 'lm_head.weight' has shape [100, 32]" in message and "[120, 32]" in message


def test_weight_missing_from_the_checkpoint(tiny_llama_dir, tiny_llama):
    state = {k: v for k, v in tiny_llama.state_dict().items() if k != "model.layers.1.post_attention_layernorm.weight"}
    save_file(state, tiny_llama_dir / "model.safetensors")
    message = raised(WeightsMismatchError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "model.safetensors") in message
    assert "'model.layers.1.post_attention_layernorm.weight'" in message
    assert "never fills missing weights randomly" in message


def test_base_model_checkpoint_lacks_the_lm_head(tiny_llama_dir):
    # lm_head is no new task head for a causal LM: its absence means a wrong checkpoint,
    # while a sequence classifier may add its score head to the same checkpoint.
    model = AutoModel.from_pretrained(tiny_llama_dir)
    model.save_pretrained(tiny_llama_dir)
    edit_config(tiny_llama_dir, architectures=["LlamaForCausalLM"])
    message = raised(WeightsMismatchError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert "'lm_head.weight'" in message
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(tiny_llama_dir).score, torch.nn.Linear)


def test_pickle_with_a_non_tensor_object_is_refused(tiny_llama_dir, tiny_llama):
    os.remove(tiny_llama_dir / "model.safetensors")
    state = dict(tiny_llama.state_dict())
    state["payload"] = ExplodingPayload()
    torch.save(state, tiny_llama_dir / "pytorch_model.bin")
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "pytorch_model.bin") in message
    assert "test_errors._mark_unpickled" in message and "weights_only" in message
    assert not ExplodingPayload.unpickled


class ExplodingPayload:
    unpickled = False

    def __reduce__(self):
        return (_mark_unpickled, ())


def _mark_unpickled():
    ExplodingPayload.unpickled = True
    return None


def test_truncated_pytorch_bin(tiny_llama_dir, tiny_llama):
    os.remove(tiny_llama_dir / "model.safetensors")
    path = tiny_llama_dir / "pytorch_model.bin"
    torch.save(tiny_llama.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = raised(CheckpointError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(path) in message and "re-download" in message


def test_no_weights_at_all(tiny_llama_dir):
    os.remove(tiny_llama_dir / "model.safetensors")
    message = raised(FileResolutionError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir) in message and "model.safetensors" in message and "pytorch_model.bin" in message


def test_use_safetensors_true_without_safetensors(tiny_llama_dir, tiny_llama):
    os.remove(tiny_llama_dir / "model.safetensors")
    torch.save(tiny_llama.state_dict(), tiny_llama_dir / "pytorch_model.bin")
    message = raised(FileResolutionError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir, use_safetensors=True)
    assert "model.safetensors" in message and "pytorch_model.bin" not in message


# -- config files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [AutoConfig.from_pretrained, LlamaConfig.from_pretrained,
                                  AutoModelForCausalLM.from_pretrained, LlamaForCausalLM.from_pretrained])
def test_malformed_config_json(tiny_llama_dir, load):
    (tiny_llama_dir / "config.json").write_text('{"model_type": "llama", "hidden_size": 32,,}')
    message = raised(ConfigError, load, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message
    assert "line 1, column" in message


def test_config_json_that_is_not_an_object(tiny_llama_dir):
    (tiny_llama_dir / "config.json").write_text("[1, 2]")
    message = raised(ConfigError, AutoConfig.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message and "JSON object" in message


def test_config_json_that_is_not_utf8(tiny_llama_dir):
    (tiny_llama_dir / "config.json").write_bytes(b'{"model_type": "\xff\xfe"}')
    message = raised(ConfigError, AutoConfig.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message


@pytest.mark.parametrize("load", [AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained, AutoModel.from_pretrained])
def test_unknown_model_type_lists_supported_types(tiny_llama_dir, load):
    edit_config(tiny_llama_dir, model_type="blorp")
    message = raised(UnknownModelTypeError, load, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message
    assert "'blorp'" in message
    assert str(sorted(CONFIG_NAMES)) in message and "'llama', 'mistral', 'qwen2', 'qwen3'" in message


@pytest.mark.parametrize("load", [AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained])
def test_missing_model_type(tiny_llama_dir, load):
    edit_config(tiny_llama_dir, model_type=None)
    message = raised(ConfigError, load, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message and "'model_type'" in message


def test_family_class_loads_a_file_without_model_type(tiny_llama_dir):
    edit_config(tiny_llama_dir, model_type=None)
    assert isinstance(LlamaForCausalLM.from_pretrained(tiny_llama_dir), LlamaForCausalLM)


def test_invalid_config_value_in_a_model_directory(tiny_llama_dir):
    edit_config(tiny_llama_dir, num_attention_heads=5)
    message = raised(ConfigError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "config.json") in message and "num_attention_heads" in message


def test_malformed_generation_config(tiny_llama_dir):
    (tiny_llama_dir / "generation_config.json").write_text("{")
    message = raised(ConfigError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir / "generation_config.json") in message


def test_missing_config_json(tiny_llama_dir):
    os.remove(tiny_llama_dir / "config.json")
    message = raised(FileResolutionError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir)
    assert str(tiny_llama_dir) in message and "'config.json'" in message


# -- keyword arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("load", [AutoModelForCausalLM.from_pretrained, LlamaForCausalLM.from_pretrained])
def test_unsupported_keyword(tiny_llama_dir, load):
    message = raised(UnsupportedArgumentError, load, tiny_llama_dir, foo_bar=1)
    assert "foo_bar" in message


@pytest.mark.parametrize(
    ("option", "value"),
    [("quantization_config", {"quant_method": "bitsandbytes", "load_in_4bit": True}), ("load_in_8bit", True),
     ("from_tf", True), ("key_mapping", {"a": "b"}), ("tp_plan", "auto")],
)
def test_options_torchformers_does_not_offer(tiny_llama_dir, option, value):
    message = raised(UnsupportedArgumentError, AutoModelForCausalLM.from_pretrained, tiny_llama_dir, **{option: value})
    assert option in message


def test_unsupported_keyword_with_an_explicit_config(tiny_llama_dir):
    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    message = raised(UnsupportedArgumentError, LlamaForCausalLM.from_pretrained, tiny_llama_dir,
                     config=config, foo_bar=1)
    assert "foo_bar" in message


@pytest.mark.parametrize(
    "load",
    [AutoConfig.from_pretrained, LlamaConfig.from_pretrained, AutoModel.from_pretrained,
     AutoModelForCausalLM.from_pretrained, AutoModelForSequenceClassification.from_pretrained,
     LlamaForCausalLM.from_pretrained],
)
def test_trust_remote_code_is_refused(tiny_llama_dir, load):
    message = raised(RemoteCodeError, load, tiny_llama_dir, trust_remote_code=True)
    assert "trust_remote_code" in message and "register" in message


def test_trust_remote_code_false_is_accepted(tiny_llama_dir, tiny_llama_kwargs):
    assert AutoConfig.from_pretrained(tiny_llama_dir, trust_remote_code=False).hidden_size == 32
    assert isinstance(AutoModelForCausalLM.from_pretrained(tiny_llama_dir, trust_remote_code=False), LlamaForCausalLM)
    with pytest.raises(RemoteCodeError):
        AutoModelForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs), trust_remote_code=True)


# -- saving is atomic ------------------------------------------------------------------------------------------


def test_failed_save_leaves_the_old_files_intact(tmp_path, tiny_llama, tiny_llama_dir, monkeypatch):
    before = {name: (tiny_llama_dir / name).read_bytes() for name in os.listdir(tiny_llama_dir)}

    def fail_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_midway)
    with torch.no_grad():
        tiny_llama.model.norm.weight.fill_(3.0)
    with pytest.raises(OSError, match="disk full"):
        tiny_llama.save_pretrained(tiny_llama_dir)

    after = {name: (tiny_llama_dir / name).read_bytes() for name in os.listdir(tiny_llama_dir)}
    assert after == before  # no temporary file left behind, nothing overwritten
    monkeypatch.undo()
    assert AutoModelForCausalLM.from_pretrained(tiny_llama_dir).model.norm.weight.detach().eq(1.0).all()


def test_failed_sharded_save_keeps_the_previous_single_file(tmp_path, tiny_llama, tiny_llama_dir, monkeypatch):
    calls = []
    real_save = safetensors.torch.save_file

    def fail_on_second_shard(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        tiny_llama.save_pretrained(tiny_llama_dir, max_shard_size="20KB")
    monkeypatch.undo()

    assert not [n for n in os.listdir(tiny_llama_dir) if n.endswith(".tmp")]
    # The old complete checkpoint is still there and still loads.
    assert "model.safetensors" in os.listdir(tiny_llama_dir)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LlamaForCausalLM)
