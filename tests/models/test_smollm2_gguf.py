"""SmolLM2-135M-Instruct (Q4_1 GGUF), the real model the `torchformers` command chats with,
loaded by torchformers and by the reference library from the same file.

The reference library takes ~17 s to load it (it dequantizes in NumPy), so each library
loads it once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers

import torchformers
from torchformers.packaged import packaged_model_dir

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ATOL = 1e-4
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
    "Give me three tips for staying focused.",
]
TEXTS = [
    "Hello world!",
    "  leading spaces, trailing\t\n",
    "Héllo wörld, naïve café, Straße, ΣΑΣ, 東京は日本の首都です。 서울 😀🚀 👩‍👩‍👧",
    "def f(x):\n    return x**2  # square",
    "numbers 1234567890 3.14 -42 and don't it's we'll",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>x<file_sep>",
    "",
]


@pytest.fixture(scope="module")
def directory() -> str:
    return packaged_model_dir("SmolLM2-135M-Instruct-Q4_1-GGUF")


@pytest.fixture(scope="module")
def reference(directory):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE).eval()
    return model, transformers.AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)


@pytest.fixture(scope="module")
def ours(directory):
    model = torchformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE)
    return model, torchformers.AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def test_tokenizer_matches_the_reference(ours, reference):
    tokenizer, expected = ours[1], reference[1]
    assert json.loads(tokenizer.backend_tokenizer.to_str()) == json.loads(expected.backend_tokenizer.to_str())
    for attribute in ("bos_token", "eos_token", "unk_token", "pad_token", "pad_token_id", "add_bos_token",
                      "padding_side", "chat_template", "all_special_ids", "model_max_length", "name_or_path"):
        assert getattr(tokenizer, attribute) == getattr(expected, attribute), attribute
    for text in TEXTS:
        ids = tokenizer(text).input_ids
        assert ids == expected(text).input_ids, text
        for skip in (False, True):
            assert tokenizer.decode(ids, skip_special_tokens=skip) == expected.decode(ids, skip_special_tokens=skip)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    expected_batch = expected(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, expected_batch.input_ids)
    assert torch.equal(batch.attention_mask, expected_batch.attention_mask)


def test_chat_template_renders_like_the_reference(ours, reference):
    conversations = [
        chat(PROMPTS[0]),
        [{"role": "system", "content": "You are a pirate."}, *chat("Hello!")],
        [*chat("Hi"), {"role": "assistant", "content": "Hello! How can I help?"}, *chat("Tell me a joke.")],
    ]
    for messages in conversations:
        for tokenize in (False, True):
            assert ours[1].apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize) == \
                reference[1].apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize)


def test_config_and_generation_config_match_the_reference(ours, reference):
    model, expected = ours[0], reference[0]
    assert model.dtype == expected.dtype == torch.float32
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, key) == getattr(expected.config, key), key
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.generation_config, key) == getattr(expected.generation_config, key), key


def test_weights_and_logits_match_the_reference(ours, reference):
    expected_state = reference[0].state_dict()
    state = ours[0].state_dict()
    assert set(state) == set(expected_state)
    for key, tensor in expected_state.items():
        assert torch.equal(state[key], tensor), key
    ids = ours[1].apply_chat_template(chat(PROMPTS[0]), add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
    with torch.no_grad():
        logits, expected = ours[0](ids).logits, reference[0](ids).logits
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_match_the_reference(ours, reference, prompt):
    inputs = ours[1].apply_chat_template(chat(prompt), add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
    with torch.no_grad():
        answer = ours[0].generate(**inputs, max_new_tokens=30, do_sample=False)
        expected = reference[0].generate(**inputs, max_new_tokens=30, do_sample=False)
    assert answer.tolist() == expected.tolist()
    if prompt == PROMPTS[0]:
        prompt_length = inputs["input_ids"].shape[1]
        reply = ours[1].decode(answer[0, prompt_length:], skip_special_tokens=True)
        assert reply == "The capital of France is Paris."


def test_the_model_chats_without_the_gguf_package_or_the_reference(directory, tmp_path):
    # The main job installs torchformers alone: neither `gguf` (an optional extra) nor the
    # reference library may be needed to load the file and answer.
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("gguf", "transformers"):
                    raise ImportError(f"{{name}} is blocked in this test")

        sys.meta_path.insert(0, Block())
        import torch
        import torchformers

        torch.set_num_threads(1)  # as in the suite (tests/conftest.py): steady on a shared machine
        tokenizer = torchformers.AutoTokenizer.from_pretrained({directory!r}, gguf_file={GGUF_FILE!r})
        model = torchformers.AutoModelForCausalLM.from_pretrained({os.path.join(directory, GGUF_FILE)!r})
        inputs = tokenizer.apply_chat_template([{{"role": "user", "content": "What is the capital of France?"}}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        output = model.generate(**inputs, max_new_tokens=12)
        print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
