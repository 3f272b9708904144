"""PretrainedConfig and AutoConfig: reading, writing and validating ``config.json``."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

import torchformers
from torchformers import AutoConfig, LlamaConfig, PretrainedConfig
from torchformers.errors import ConfigError, UnknownModelTypeError, UnsupportedArgumentError
from torchformers.models import auto as auto_module

VERSION_KEYS = {"transformers_version", "torchformers_version"}


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict without version stamps, with dtypes as plain names."""
    out = {k: v for k, v in data.items() if k not in VERSION_KEYS and not k.startswith("_")}
    if out.get("dtype") is not None:
        out["dtype"] = str(out["dtype"]).removeprefix("torch.")
    return out


# -- loading from the places a config can be -------------------------------------------------


def test_from_pretrained_reads_a_directory_and_a_direct_file_path(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)

    from_dir = AutoConfig.from_pretrained(tmp_path)
    from_file = AutoConfig.from_pretrained(tmp_path / "config.json")
    from_class = LlamaConfig.from_pretrained(str(tmp_path))

    assert type(from_dir) is LlamaConfig
    assert from_dir == from_file == from_class
    assert from_dir.hidden_size == 32 and from_dir.num_key_value_heads == 2
    assert from_dir.name_or_path == str(tmp_path)


def test_from_pretrained_reads_a_hub_id_from_the_local_cache(tmp_path, tiny_llama_kwargs, fake_hub_cache):
    source = tmp_path / "source"
    LlamaConfig(**{**tiny_llama_kwargs, "vocab_size": 77}).save_pretrained(source)
    fake_hub_cache("org/tiny", source, commit="c" * 40)

    config = AutoConfig.from_pretrained("org/tiny", cache_dir=fake_hub_cache.cache_dir, local_files_only=True)

    assert type(config) is LlamaConfig
    assert config.vocab_size == 77
    assert config.name_or_path == "org/tiny"


def test_from_pretrained_reads_a_subfolder(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path / "text_encoder")
    assert AutoConfig.from_pretrained(tmp_path, subfolder="text_encoder").hidden_size == 32


# -- dictionaries and JSON ------------------------------------------------------------------


def test_save_pretrained_writes_sorted_json_with_model_type(tmp_path, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    config.save_pretrained(tmp_path / "new" / "dir")  # created if needed

    text = (tmp_path / "new" / "dir" / "config.json").read_text()
    data = json.loads(text)
    assert data["model_type"] == "llama"
    assert data["torchformers_version"] == torchformers.__version__
    assert list(data) == sorted(data)
    assert text.endswith("\n")
    # Common keys at their defaults are left out, as the reference does.
    assert "output_attentions" not in data and "id2label" not in data and "architectures" not in data


def test_to_dict_and_from_dict_round_trip(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs, pad_token_id=0, dtype="bfloat16", problem_type="regression")
    data = config.to_dict()

    assert data["model_type"] == "llama"
    assert data["dtype"] == "bfloat16"  # JSON-ready
    assert json.loads(config.to_json_string(use_diff=False))["hidden_size"] == 32
    again = LlamaConfig.from_dict(data)
    assert again == config
    assert again.dtype is torch.bfloat16 and again.pad_token_id == 0 and again.problem_type == "regression"


def test_to_json_string_diff_and_full(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    diff = json.loads(config.to_json_string())
    full = json.loads(config.to_json_string(use_diff=False))

    assert "return_dict" not in diff and full["return_dict"] is True
    assert full["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    assert diff["hidden_size"] == full["hidden_size"] == 32


def test_json_file_round_trip(tmp_path, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs, eos_token_id=[2, 3])
    config.to_json_file(tmp_path / "c.json")
    assert LlamaConfig.from_json_file(tmp_path / "c.json") == config


def test_unknown_keys_survive_a_load_and_save(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path / "a")
    data = read_json(tmp_path / "a" / "config.json")
    data["my_future_key"] = {"nested": [1, 2.5, None], "flag": True}
    data["quantization_hint"] = "none"
    write_json(tmp_path / "a" / "config.json", data)

    config = AutoConfig.from_pretrained(tmp_path / "a")
    assert config.my_future_key == {"nested": [1, 2.5, None], "flag": True}
    config.save_pretrained(tmp_path / "b")

    saved = read_json(tmp_path / "b" / "config.json")
    assert saved["my_future_key"] == data["my_future_key"]
    assert saved["quantization_hint"] == "none"


# -- keyword overrides -----------------------------------------------------------------------


def test_keyword_overrides_and_return_unused_kwargs(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)

    config, unused = AutoConfig.from_pretrained(
        tmp_path, hidden_act="gelu", rms_norm_eps=1e-5, not_an_attribute=3, return_unused_kwargs=True
    )
    assert config.hidden_act == "gelu" and config.rms_norm_eps == 1e-5
    assert unused == {"not_an_attribute": 3}
    assert not hasattr(config, "not_an_attribute")

    config, unused = LlamaConfig.from_pretrained(tmp_path, use_cache=False, return_unused_kwargs=True)
    assert config.use_cache is False and unused == {}


def test_unknown_keyword_without_return_unused_kwargs_raises(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArgumentError, match="hiden_size"):
        AutoConfig.from_pretrained(tmp_path, hiden_size=64)


def test_overrides_are_validated(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="hidden_act"):
        AutoConfig.from_pretrained(tmp_path, hidden_act="not-an-activation")


def test_dtype_override_accepts_both_spellings(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path, torch_dtype="float16").dtype is torch.float16
    assert AutoConfig.from_pretrained(tmp_path, dtype=torch.bfloat16).dtype is torch.bfloat16


# -- individual values --------------------------------------------------------------------------


def test_model_type_and_architectures(tmp_path, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs, architectures=["LlamaForCausalLM"])
    config.save_pretrained(tmp_path)
    data = read_json(tmp_path / "config.json")
    assert data["model_type"] == "llama"
    assert data["architectures"] == ["LlamaForCausalLM"]
    assert AutoConfig.from_pretrained(tmp_path).architectures == ["LlamaForCausalLM"]
    assert AutoConfig.for_model("qwen2", **tiny_llama_kwargs).model_type == "qwen2"


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"dtype": "bfloat16"}, torch.bfloat16),
        ({"torch_dtype": "float16"}, torch.float16),  # files written before the rename
        ({"torch_dtype": "float16", "dtype": "bfloat16"}, torch.bfloat16),  # the current name wins
        ({"dtype": "torch.float32"}, torch.float32),
        ({}, None),
    ],
)
def test_dtype_in_json_becomes_a_torch_dtype(tmp_path, tiny_llama_kwargs, stored, expected):
    write_json(tmp_path / "config.json", {"model_type": "llama", **tiny_llama_kwargs, **stored})
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.dtype is expected
    assert config.torch_dtype is expected

    config.save_pretrained(tmp_path / "out")
    saved = read_json(tmp_path / "out" / "config.json")
    assert "torch_dtype" not in saved
    assert saved.get("dtype") == (None if expected is None else str(expected).removeprefix("torch."))


def test_torch_dtype_attribute_is_an_alias(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    config.torch_dtype = "bfloat16"
    assert config.dtype is torch.bfloat16


def test_invalid_dtype_raises(tiny_llama_kwargs):
    with pytest.raises(ConfigError, match="float33"):
        LlamaConfig(**tiny_llama_kwargs, dtype="float33")


def test_id2label_string_keys_become_ints_and_label2id_is_derived(tmp_path, tiny_llama_kwargs):
    write_json(
        tmp_path / "config.json",
        {"model_type": "llama", **tiny_llama_kwargs, "id2label": {"0": "neg", "1": "neu", "2": "pos"}},
    )
    config = AutoConfig.from_pretrained(tmp_path)

    assert config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert config.label2id == {"neg": 0, "neu": 1, "pos": 2}
    assert config.num_labels == 3

    config.save_pretrained(tmp_path / "out")
    saved = read_json(tmp_path / "out" / "config.json")
    assert saved["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert saved["label2id"] == {"neg": 0, "neu": 1, "pos": 2}


def test_num_labels_builds_default_labels_and_overrides_rebuild_them(tmp_path, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs, num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}
    config.save_pretrained(tmp_path)

    reloaded = AutoConfig.from_pretrained(tmp_path, num_labels=5)
    assert reloaded.num_labels == 5 and reloaded.id2label[4] == "LABEL_4"
    assert LlamaConfig(**tiny_llama_kwargs).num_labels == 2


def test_special_token_ids_are_read_and_written(tmp_path, tiny_llama_kwargs):
    write_json(
        tmp_path / "config.json",
        {"model_type": "llama", **tiny_llama_kwargs, "pad_token_id": 0, "bos_token_id": 5, "eos_token_id": [6, 7]},
    )
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 5, [6, 7])
    config.save_pretrained(tmp_path / "out")
    saved = read_json(tmp_path / "out" / "config.json")
    assert (saved["pad_token_id"], saved["bos_token_id"], saved["eos_token_id"]) == (0, 5, [6, 7])


# -- the reference library reads our files and we read its files --------------------------------


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_reference_config_loads_with_equal_values(tmp_path, tiny_llama_kwargs, model_type):
    reference = transformers.AutoConfig.for_model(
        model_type, **tiny_llama_kwargs, pad_token_id=0, dtype="bfloat16",
        id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1},
    )
    reference.save_pretrained(tmp_path)

    ours = AutoConfig.from_pretrained(tmp_path)

    assert type(ours).__name__ == type(reference).__name__
    expected = comparable(reference.to_dict())
    actual = comparable(ours.to_dict())
    assert {k: actual.get(k, "MISSING") for k in expected} == expected


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_our_config_loads_in_reference_with_equal_values(tmp_path, tiny_llama_kwargs, model_type):
    ours = AutoConfig.for_model(
        model_type, **tiny_llama_kwargs, pad_token_id=0, dtype="float16", id2label={0: "a", 1: "b", 2: "c"},
        architectures=["SomethingForCausalLM"],
    )
    ours.save_pretrained(tmp_path)

    reference = transformers.AutoConfig.from_pretrained(tmp_path)

    assert type(reference).__name__ == type(ours).__name__
    expected = comparable(ours.to_dict())
    actual = comparable(reference.to_dict())
    assert {k: actual.get(k, "MISSING") for k in expected} == expected
    assert reference.num_labels == 3


def test_legacy_rope_keys_from_old_files_load(tmp_path, tiny_llama_kwargs):
    write_json(
        tmp_path / "config.json",
        {"model_type": "llama", **tiny_llama_kwargs, "rope_theta": 500000.0,
         "rope_scaling": {"type": "linear", "factor": 2.0}},
    )
    ours = AutoConfig.from_pretrained(tmp_path)
    reference = transformers.AutoConfig.from_pretrained(tmp_path)
    expected = {k: v for k, v in reference.rope_parameters.items() if k != "type"}  # the old spelling of rope_type
    assert ours.rope_parameters == expected == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}


# -- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"hidden_size": 30}, "hidden_size"),  # not divisible by 4 heads
        ({"hidden_size": -32}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"intermediate_size": "64"}, "intermediate_size"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"hidden_act": "swishy"}, "hidden_act"),
        ({"rope_parameters": {"rope_type": "weird", "rope_theta": 10000.0}}, "weird"),
        ({"rope_scaling": {"rope_type": "linear"}}, "factor"),
        ({"problem_type": "ranking"}, "problem_type"),
        ({"num_labels": 0}, "num_labels"),
        ({"architectures": "LlamaForCausalLM"}, "architectures"),
        ({"id2label": {"first": "a"}}, "id2label"),
    ],
)
def test_invalid_values_raise_config_error(tiny_llama_kwargs, bad, key):
    with pytest.raises(ConfigError, match=key):
        LlamaConfig(**{**tiny_llama_kwargs, **bad})


@pytest.mark.parametrize(
    ("bad", "key"),
    [({"hidden_size": "32"}, "hidden_size"), ({"hidden_size": None}, "hidden_size"),
     ({"rope_parameters": "abc"}, "rope_parameters")],
)
def test_values_of_the_wrong_type_raise_config_error_naming_the_key(tiny_llama_kwargs, bad, key):
    with pytest.raises(ConfigError, match=key):
        LlamaConfig(**{**tiny_llama_kwargs, **bad})


def test_invalid_value_in_a_file_names_the_file_and_key(tmp_path, tiny_llama_kwargs):
    write_json(tmp_path / "config.json", {"model_type": "llama", **tiny_llama_kwargs, "hidden_size": 30})
    for load in (AutoConfig.from_pretrained, LlamaConfig.from_pretrained):
        with pytest.raises(ConfigError) as caught:
            load(tmp_path)
        assert str(tmp_path / "config.json") in str(caught.value)
        assert "hidden_size" in str(caught.value)


def test_family_config_refuses_another_family_file(tmp_path, tiny_llama_kwargs):
    AutoConfig.for_model("qwen2", **tiny_llama_kwargs).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'qwen2'"):
        LlamaConfig.from_pretrained(tmp_path)


def test_save_pretrained_refuses_unknown_options_and_files(tmp_path, tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs)
    with pytest.raises(UnsupportedArgumentError, match="push_to_hub"):
        config.save_pretrained(tmp_path, push_to_hub=True)
    with pytest.raises(UnsupportedArgumentError, match="repo_id"):
        config.save_pretrained(tmp_path, repo_id="me/model")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        config.save_pretrained(tmp_path / "file")


# -- registering a user config -------------------------------------------------------------------


class MyConfig(PretrainedConfig):
    model_type = "my-model"
    defaults = {"width": 8, "depth": 2}

    def validate(self) -> None:
        super().validate()
        self.require_positive_ints("width", "depth")


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(auto_module, "_REGISTERED_CONFIGS", {})


def test_auto_config_register_a_user_config(tmp_path, clean_registry):
    AutoConfig.register("my-model", MyConfig)
    MyConfig(width=16).save_pretrained(tmp_path)

    config = AutoConfig.from_pretrained(tmp_path)

    assert type(config) is MyConfig
    assert (config.width, config.depth) == (16, 2)
    assert type(AutoConfig.for_model("my-model", depth=3)) is MyConfig
    with pytest.raises(ConfigError, match="width"):
        AutoConfig.for_model("my-model", width=0)


def test_auto_config_register_refuses_clashes(clean_registry):
    class OtherLlamaConfig(PretrainedConfig):
        model_type = "llama"

    with pytest.raises(ConfigError, match="already registered"):
        AutoConfig.register("llama", OtherLlamaConfig)
    with pytest.raises(ConfigError, match="my-model"):
        AutoConfig.register("other-name", MyConfig)
    AutoConfig.register("my-model", MyConfig)
    with pytest.raises(ConfigError, match="exist_ok"):
        AutoConfig.register("my-model", MyConfig)
    AutoConfig.register("my-model", MyConfig, exist_ok=True)


def test_auto_config_for_model_and_unknown_types():
    config = AutoConfig.for_model("mistral", hidden_size=64, num_attention_heads=4, num_key_value_heads=4)
    assert type(config).__name__ == "MistralConfig" and config.hidden_size == 64
    with pytest.raises(UnknownModelTypeError, match="llama"):
        AutoConfig.for_model("not-a-family")


def test_auto_config_is_not_instantiated():
    with pytest.raises(OSError, match="from_pretrained"):
        AutoConfig()


def test_from_json_file_names_the_file_on_invalid_values(tmp_path, tiny_llama_kwargs):
    write_json(tmp_path / "c.json", {**tiny_llama_kwargs, "num_key_value_heads": 3})
    with pytest.raises(ConfigError) as caught:
        LlamaConfig.from_json_file(tmp_path / "c.json")
    assert str(tmp_path / "c.json") in str(caught.value) and "num_key_value_heads" in str(caught.value)


def test_config_survives_pickle_and_deepcopy(tiny_llama_kwargs):
    config = LlamaConfig(**tiny_llama_kwargs, rope_scaling={"rope_type": "linear", "factor": 2.0})
    for clone in (pickle.loads(pickle.dumps(config)), copy.deepcopy(config)):
        assert clone == config and clone is not config
        assert clone.rope_scaling == clone.rope_parameters == config.rope_parameters


def test_id2label_override_keeps_label2id_in_step(tmp_path, tiny_llama_kwargs):
    LlamaConfig(**tiny_llama_kwargs).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, id2label={"0": "cat", "1": "dog", "2": "eel"})
    assert config.id2label == {0: "cat", 1: "dog", 2: "eel"}
    assert config.label2id == {"cat": 0, "dog": 1, "eel": 2}
    assert config.num_labels == 3
