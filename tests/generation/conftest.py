"""Fixtures of the generation tests: the checkpoints of ``_checkpoints`` built once per session,
and a tiny byte-level tokenizer loaded by both libraries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from _checkpoints import FAMILIES, VOCAB, scale_weights_

import torchformers


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Callable[[str], tuple[Path, torch.nn.Module, torch.nn.Module]]:
    """``checkpoint(family)`` -> (directory, reference model, torchformers model), built once per session."""
    built: dict[str, tuple[Path, torch.nn.Module, torch.nn.Module]] = {}

    def get(family: str) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
        if family not in built:
            config_class, model_class, kwargs, seed = FAMILIES[family]
            reference = model_class(config_class(**kwargs)).eval()
            scale_weights_(reference, seed)
            directory = tmp_path_factory.mktemp(family)
            reference.save_pretrained(directory)
            ours = torchformers.AutoModelForCausalLM.from_pretrained(directory)
            built[family] = (directory, reference, ours)
        return built[family]

    return get


@pytest.fixture(scope="session")
def byte_level_tokenizers(tmp_path_factory):
    """(ours, reference): a tiny byte-level BPE (GPT-2 style, 128 tokens) trained with ``tokenizers``,
    loaded by both libraries from the same tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = sorted(set("".join(pre_tokenizers.ByteLevel.alphabet())))[:90]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=alphabet, show_progress=False)
    corpus = ["the cat sat on the mat. stop here, then go on!", "hello world, hello there.", "a b c d e f g"] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    directory = tmp_path_factory.mktemp("byte-level-tokenizer")
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}'
    )
    ours = torchformers.AutoTokenizer.from_pretrained(directory)
    reference = transformers.AutoTokenizer.from_pretrained(directory)
    assert len(ours) == len(reference) <= VOCAB
    return ours, reference
