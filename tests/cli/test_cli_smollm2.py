"""The command on the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF): its greedy answer is
the one our model.generate gives on the same file (the GGUF tests check that one token for token
against the reference library)."""

from __future__ import annotations

import os

import pytest

import torchformers
from torchformers.cli.loading import DEFAULT_MODEL
from torchformers.packaged import packaged_model_dir

QUESTION = "What is the capital of France?"
MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2_gguf() -> str:
    directory = packaged_model_dir(DEFAULT_MODEL)
    return os.path.join(directory, "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def expected_answer(smollm2_gguf) -> str:
    """The README's Python recipe: load the GGUF, apply the chat template, generate greedily."""
    directory, gguf_file = os.path.split(smollm2_gguf)
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = torchformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_the_default_model_answers_greedily_in_chat(smollm2_gguf, expected_answer, run_cli):
    assert "Paris" in expected_answer
    result = run_cli(["chat", "--temperature", "0", "--max-new-tokens", MAX_NEW_TOKENS], stdin=QUESTION + "\n")
    assert result.status == 0, result.err
    assert result.out == expected_answer + "\n"
    assert "fetching" not in result.err  # the fixture fetched it; the command found it in the cache


def test_generate_on_the_gguf_file(smollm2_gguf, expected_answer, run_cli):
    result = run_cli(["generate", smollm2_gguf, QUESTION, "--max-new-tokens", MAX_NEW_TOKENS])
    assert (result.status, result.out) == (0, expected_answer + "\n")
