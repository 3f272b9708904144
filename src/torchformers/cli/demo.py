"""``torchformers demo``: the whole path of a real model on a tiny one, with no download.

The first run trains a tiny character-level Llama for a few seconds on a fixed text and
saves it like any checkpoint (config.json, model.safetensors, generation_config.json).
Every run then loads it back with ``AutoModelForCausalLM.from_pretrained`` and decodes
greedily, so the continuation shows that loading, the KV cache and generate work together.
"""

from __future__ import annotations

import os

import torch

TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "A journey of a thousand miles begins with a single step. "
    "The early bird catches the worm. "
)
_VOCAB = sorted(set(TEXT) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'"))
_TRAIN_STEPS = 300
_WINDOW = 64


def default_model_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "torchformers", "demo-char-llama")


def encode(text: str) -> list[int]:
    unknown = sorted(set(text) - set(_VOCAB))
    if unknown:
        raise ValueError(f"The demo model knows only letters, digits and basic punctuation, not {unknown}.")
    return [_VOCAB.index(ch) for ch in text]


def decode(ids: list[int]) -> str:
    return "".join(_VOCAB[i] for i in ids)


def train_demo_model(model_dir: str) -> None:
    """Fit a tiny Llama to ``TEXT`` (seeded, a few seconds on a CPU) and save it."""
    from ..models.llama import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(_VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    corpus = torch.tensor(encode(TEXT * 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(_TRAIN_STEPS):
        # Random windows, so the model learns the text rather than where each word sits.
        starts = torch.randint(0, len(corpus) - _WINDOW, (16,))
        ids = torch.stack([corpus[s : s + _WINDOW] for s in starts.tolist()])
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(model_dir)


def run_demo(prompt: str, max_new_tokens: int = 40, model_dir: str | None = None) -> str:
    """Load the demo model (training it on first use) and return the prompt plus its greedy continuation."""
    from ..models.auto import AutoModelForCausalLM

    model_dir = model_dir or default_model_dir()
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        train_demo_model(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    output = model.generate(torch.tensor([encode(prompt)]), max_new_tokens=max_new_tokens)
    return decode(output[0].tolist())
