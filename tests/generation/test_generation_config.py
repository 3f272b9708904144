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
