"""text-generation answers equal the reference pipeline's (greedy and beam search), for prompts and chats."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

from torchformers.errors import PipelineError, UnsupportedArgumentError

PROMPTS = ["The weather today is", "Once upon a time, in a land far away, there lived a", "Hi"]
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
GREEDY = {"do_sample": False, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def generators(pipelines):
    return pipelines("text-generation", "causal_lm")


@pytest.mark.parametrize("options", [{}, {"return_full_text": False}, {"return_tensors": True},
                                     {"num_beams": 3, "num_return_sequences": 2},
                                     {"skip_special_tokens": False, "max_new_tokens": 3}])
def test_same_text_as_the_reference(generators, options):
    ours, reference = generators
    options = {**GREEDY, **options}
    for inputs in (PROMPTS[0], PROMPTS):
        assert_same_answers(ours(inputs, **options), reference(inputs, **options))


def test_chats_go_through_the_chat_template(generators):
    ours, reference = generators
    assert_same_answers(ours(CHAT, **GREEDY), reference(CHAT, **GREEDY))
    assert_same_answers(ours([CHAT, CHAT[1:]], **GREEDY), reference([CHAT, CHAT[1:]], **GREEDY))
    answer = ours(CHAT, **GREEDY)[0]["generated_text"]
    assert answer[:2] == CHAT and answer[2]["role"] == "assistant"
    unfinished = [*CHAT, {"role": "assistant", "content": "Blue and"}]
    assert_same_answers(ours(unfinished, **GREEDY), reference(unfinished, **GREEDY))


def test_stop_sequence_and_long_prompts(generators):
    ours, reference = generators
    options = {**GREEDY, "max_new_tokens": 10, "return_full_text": False}
    full = ours(PROMPTS[0], **options)[0]["generated_text"]
    stopped = ours(PROMPTS[0], stop_sequence="brink", **options)
    assert_same_answers(stopped, reference(PROMPTS[0], stop_sequence="brink", **options))
    assert len(stopped[0]["generated_text"]) < len(full) and stopped[0]["generated_text"].endswith("brink")

    ours.tokenizer.model_max_length = reference.tokenizer.model_max_length = 12
    try:  # "hole": the prompt's start is cut so prompt + new tokens fit the model's length
        hole = {**GREEDY, "max_new_tokens": 4, "handle_long_generation": "hole", "return_tensors": True}
        answer = ours(PROMPTS[1], **hole)
        assert_same_answers(answer, reference(PROMPTS[1], **hole))
        assert len(answer[0]["generated_token_ids"]) == 12
    finally:
        ours.tokenizer.model_max_length = reference.tokenizer.model_max_length = 512


def test_batched_like_one_by_one(generators):
    ours, _ = generators
    # Padding is on the left and masked, so each prompt continues as it would alone.
    for options in ({"return_full_text": False}, {"return_tensors": True, "max_new_tokens": 4}):
        batched = ours(PROMPTS, batch_size=3, **{**GREEDY, **options})
        assert batched == [ours(prompt, **{**GREEDY, **options}) for prompt in PROMPTS]


def test_the_pipelines_generation_defaults(generators):
    ours, _ = generators
    settings = ours._generate_kwargs({})
    assert settings["do_sample"] is True and settings["temperature"] == 0.7 and settings["max_new_tokens"] == 256
    assert "temperature" not in ours._generate_kwargs({"do_sample": False})
    assert "max_new_tokens" not in ours._generate_kwargs({"max_length": 30})


def test_bad_options(generators):
    ours, _ = generators
    with pytest.raises(UnsupportedArgumentError, match="max_new_token"):
        ours(PROMPTS[0], max_new_token=3)
    with pytest.raises(PipelineError, match="return_full_text"):
        ours(PROMPTS[0], return_full_text=True, return_tensors=True)
    with pytest.raises(PipelineError, match="handle_long_generation"):
        ours(PROMPTS[0], handle_long_generation="cut")
