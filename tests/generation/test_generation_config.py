"""GenerationConfig: ``generation_config.json`` both ways, defaults and validation."""

from __future__ import annotations

import json

import pytest
import transformers

from torchformers import GenerationConfig, LlamaConfig
from torchformers.errors import ConfigError


def test_defaults_and_overrides():
    config = GenerationConfig(max_new_tokens=5, custom_flag=True)
    assert (config.max_length, config.num_beams, config.do_sample, config.top_k) == (20, 1, False, 50)
    assert config.max_new_tokens == 5 and config.custom_flag is True
    assert config.update(max_length=30, unknown=1) == {"unknown": 1}
    assert config.max_length == 30


def test_save_writes_only_what_differs_and_round_trips(tmp_path):
    config = GenerationConfig(max_new_tokens=5, eos_token_id=[2, 3], custom_flag="x")
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data == {"max_new_tokens": 5, "eos_token_id": [2, 3], "custom_flag": "x",
                    "torchformers_version": data["torchformers_version"]}
    assert GenerationConfig.from_pretrained(tmp_path) == config
    assert GenerationConfig.from_pretrained(tmp_path / "generation_config.json") == config


def test_from_model_config_takes_the_special_tokens(tmp_path):
    model_config = LlamaConfig(pad_token_id=0, bos_token_id=5, eos_token_id=[6, 7])
    config = GenerationConfig.from_model_config(model_config)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 5, [6, 7])
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data["_from_model_config"] is True  # as the reference writes it


def test_nulls_written_by_other_tools_mean_the_default(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": None, "top_p": None, "top_k": None, "do_sample": None, "max_new_tokens": 4})
    )
    config = GenerationConfig.from_pretrained(tmp_path)
    assert (config.temperature, config.top_p, config.top_k, config.do_sample) == (1.0, 1.0, 50, False)
    assert config.max_new_tokens == 4


def test_reference_reads_ours_and_we_read_the_reference(tmp_path):
    ours = GenerationConfig(max_new_tokens=7, do_sample=True, temperature=0.5, top_k=10, eos_token_id=2)
    ours.save_pretrained(tmp_path / "ours")
    reference = transformers.GenerationConfig.from_pretrained(tmp_path / "ours")
    assert (reference.max_new_tokens, reference.do_sample, reference.temperature, reference.top_k,
            reference.eos_token_id) == (7, True, 0.5, 10, 2)

    transformers.GenerationConfig(max_length=9, num_beams=3, repetition_penalty=1.2, pad_token_id=0).save_pretrained(
        tmp_path / "reference"
    )
    back = GenerationConfig.from_pretrained(tmp_path / "reference")
    assert (back.max_length, back.num_beams, back.repetition_penalty, back.pad_token_id) == (9, 3, 1.2, 0)


@pytest.mark.parametrize(
    ("values", "key"),
    [({"max_length": -1}, "max_length"), ({"num_beams": 1.5}, "num_beams"), ({"max_new_tokens": -2}, "max_new_tokens"),
     ({"top_p": 0}, "top_p"), ({"temperature": 0, "do_sample": True}, "temperature"), ({"top_k": "5"}, "top_k")],
)
def test_invalid_values(values, key):
    with pytest.raises(ConfigError, match=key):
        GenerationConfig(**values)


def test_invalid_file_names_the_file(tmp_path):
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"num_beams": -1}))
    with pytest.raises(ConfigError) as caught:
        GenerationConfig.from_pretrained(tmp_path)
    assert str(path) in str(caught.value) and "num_beams" in str(caught.value)


def test_from_pretrained_keywords_override_values(tmp_path):
    GenerationConfig(max_length=9, top_k=7).save_pretrained(tmp_path)
    config = GenerationConfig.from_pretrained(tmp_path, top_k=3, local_files_only=True, my_option="x")
    assert (config.max_length, config.top_k, config.my_option) == (9, 3, "x")
    with pytest.raises(ConfigError) as caught:
        GenerationConfig.from_pretrained(tmp_path, top_k=-3)
    assert str(tmp_path / "generation_config.json") in str(caught.value) and "top_k" in str(caught.value)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"top_p": 1.2}, "top_p"), ({"typical_p": 0}, "typical_p"), ({"min_p": 2}, "min_p"),
        ({"num_beams": 6, "num_beam_groups": 4}, "num_beam_groups"), ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"max_new_tokens": 0}, "max_new_tokens"), ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"num_return_sequences": 3}, "num_return_sequences"),
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"eos_token_id": "2"}, "eos_token_id"), ({"bad_words_ids": [[1], "x"]}, "bad_words_ids"),
        ({"sequence_bias": {(1,): "high"}}, "sequence_bias"), ({"stop_strings": [""]}, "stop_strings"),
        ({"cache_implementation": "fancy"}, "cache_implementation"), ({"max_time": -1}, "max_time"),
        ({"streamer": object()}, "streamer"),
    ],
)
def test_more_invalid_values(values, key):
    with pytest.raises(ConfigError, match=key):
        GenerationConfig(**values)


def test_valid_combinations_and_modes():
    assert GenerationConfig(num_beams=6, num_beam_groups=3).get_generation_mode() == "group_beam_search"
    assert GenerationConfig(num_return_sequences=3, do_sample=True).get_generation_mode() == "sample"
    assert GenerationConfig(num_beams=3, do_sample=True).get_generation_mode() == "beam_sample"
    assert GenerationConfig(prompt_lookup_num_tokens=3).get_generation_mode() == "assisted_generation"
    assert GenerationConfig().get_generation_mode(assistant_model=object()) == "assisted_generation"
    assert GenerationConfig(early_stopping="never", eos_token_id=[1, 2], sequence_bias=[[[3, 4], -1.0]]).validate() is None


def test_explicit_settings_are_remembered_and_saved(tmp_path):
    config = GenerationConfig(max_new_tokens=5)
    assert config.is_set("max_new_tokens") and not config.is_set("max_length")
    config.max_length = 20  # the default value, but now chosen explicitly
    assert config.is_set("max_length")
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_length"] == 20
    assert GenerationConfig.from_pretrained(tmp_path).is_set("max_length")
    merged = GenerationConfig(top_k=7, temperature=0.5).merged_with(GenerationConfig(top_k=3))
    assert (merged.top_k, merged.temperature) == (3, 0.5)


def test_none_in_update_switches_settings_off_as_the_reference_does():
    config = GenerationConfig(top_k=7, max_length=30)
    config.update(top_k=None, temperature=None, max_length=None)
    assert (config.top_k, config.temperature, config.max_length) == (0, 1.0, 20)
    assert not config.is_set("max_length")
    assert transformers.GenerationConfig(top_k=None).top_k is None  # the reference's spelling of "unset"
