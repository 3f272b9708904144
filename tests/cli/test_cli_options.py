"""How the decoding flags and the model's generation config become generate() keywords."""

from __future__ import annotations

import argparse

from torchformers import GenerationConfig
from torchformers.cli.options import add_sampling_arguments, generation_options


def _options(flags: list[str], config: GenerationConfig, *, chat: bool) -> dict:
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    return generation_options(parser.parse_args(flags), config, sample_by_default=chat)


def test_generate_follows_the_model_and_chat_samples():
    greedy_model = GenerationConfig()
    assert _options([], greedy_model, chat=False) == {"max_new_tokens": 256, "do_sample": False}
    assert _options([], greedy_model, chat=True) == {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7,
                                                    "top_p": 0.9}


def test_the_models_own_sampling_values_are_kept_unless_a_flag_overrides():
    sampling_model = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.95)
    assert _options([], sampling_model, chat=False)["temperature"] == 0.6
    assert _options(["--top-p", "0.5"], sampling_model, chat=True) == {
        "max_new_tokens": 256, "do_sample": True, "temperature": 0.6, "top_p": 0.5}


def test_temperature_zero_is_always_greedy():
    sampling_model = GenerationConfig(do_sample=True, temperature=0.6)
    for chat in (False, True):
        assert _options(["--temperature", "0", "--top-p", "0.5"], sampling_model, chat=chat) == {
            "max_new_tokens": 256, "do_sample": False}


def test_a_sampling_flag_turns_sampling_on_for_generate():
    assert _options(["--top-p", "0.8", "--max-new-tokens", "5"], GenerationConfig(), chat=False) == {
        "max_new_tokens": 5, "do_sample": True, "temperature": 0.7, "top_p": 0.8}
