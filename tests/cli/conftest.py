"""A tiny chat model for the command's tests: a seeded Llama saved with save_pretrained, and a
byte-level BPE tokenizer carrying SmolLM2's chat template (ChatML), in one directory."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import torchformers

FIXTURES = Path(__file__).parents[1] / "fixtures"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _train_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["What is the capital of France? Paris is the capital.", "hello there, how are you today?",
              "user assistant system: you are a helpful assistant"] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    template = json.loads((FIXTURES / "smollm2_chat_template.json").read_text())["template"]
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "chat_template": template,
    }))


def build_chat_model(directory: Path) -> Path:
    """Write the tiny chat model into ``directory`` (config.json, model.safetensors,
    generation_config.json, tokenizer.json, tokenizer_config.json)."""
    _train_tokenizer(directory)
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory)
    config = torchformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = torchformers.LlamaForCausalLM.from_config(config)
    # Unit-scale weights make next-token logits peaked, so greedy choices never hinge on float
    # rounding (a subprocess with another thread count picks the same tokens).
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if "norm" in name else noise)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory) -> Path:
    """The tiny chat model's directory, built once per session."""
    return build_chat_model(tmp_path_factory.mktemp("tiny-chat"))


class ScriptedStdin(io.StringIO):
    """stdin holding ``text``; the read that would return line ``interrupt_at`` (0-based) raises
    KeyboardInterrupt instead once, as Ctrl-C at the prompt does."""

    def __init__(self, text: str, interrupt_at: int | None = None) -> None:
        super().__init__(text)
        self.lines_read = 0
        self.interrupt_at = interrupt_at

    def readline(self, *args: Any) -> str:
        if self.lines_read == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.lines_read += 1
        return super().readline(*args)


@dataclass
class CliResult:
    status: int
    out: str
    err: str


@pytest.fixture
def run_cli(monkeypatch, capsys) -> Callable[..., CliResult]:
    """``run_cli(argv, stdin="", interrupt_at=None)``: the command run in-process with stdin replaced."""
    from torchformers.cli import main

    def run(argv: list[str], stdin: str = "", interrupt_at: int | None = None) -> CliResult:
        monkeypatch.setattr(sys, "stdin", ScriptedStdin(stdin, interrupt_at))
        capsys.readouterr()
        status = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliResult(status, captured.out, captured.err)

    return run


class GenerateCalls(list):
    """The keyword arguments of each ``model.generate`` call; ``before`` holds callables that act,
    one per call in order, on the next calls' keywords before generation starts."""

    def __init__(self) -> None:
        super().__init__()
        self.before: list[Callable[[dict[str, Any]], None]] = []


@pytest.fixture
def generate_calls(monkeypatch) -> GenerateCalls:
    """Every ``model.generate`` call the command makes in this test."""
    from torchformers.cli import loading

    calls = GenerateCalls()
    load = loading.load_model_and_tokenizer

    def load_and_watch(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        model, tokenizer = load(*args, **kwargs)
        generate = model.generate

        def watched_generate(**generate_kwargs: Any) -> Any:
            calls.append(generate_kwargs)
            if calls.before:
                calls.before.pop(0)(generate_kwargs)
            return generate(**generate_kwargs)

        model.generate = watched_generate
        return model, tokenizer

    monkeypatch.setattr(loading, "load_model_and_tokenizer", load_and_watch)
    return calls


def greedy_reply(directory: Path, prompt: list[dict[str, str]] | str, max_new_tokens: int) -> str:
    """The greedy answer, decoded without special tokens, computed with the library directly: for a list
    of messages through the chat template, for a string from its plain tokenization."""
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory)
    model = torchformers.AutoModelForCausalLM.from_pretrained(directory)
    if isinstance(prompt, str):
        inputs = tokenizer(prompt, return_tensors="pt")
    else:
        inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    output = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
