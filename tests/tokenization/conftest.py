"""Fixtures of the tokenizer tests: varied texts, the reference library's tokenizers, and tiny
byte-level BPE and SentencePiece vocabularies trained here (a few hundred tokens, well under a second)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizer_cases import corpus, encoding_view


@pytest.fixture(scope="session")
def reference():
    """The reference library's AutoTokenizer (a test-only dependency)."""
    from transformers import AutoTokenizer

    return AutoTokenizer


@pytest.fixture(scope="session")
def minilm_slow_dir(minilm_dir, tmp_path_factory) -> Path:
    """MiniLM's vocab.txt and tokenizer_config.json alone: no tokenizer.json, so the slow path is used."""
    directory = tmp_path_factory.mktemp("minilm-slow")
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(Path(minilm_dir, name), directory / name)
    return directory


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> Path:
    """A GPT-2-style byte-level BPE (vocab.json + merges.txt, 400 tokens) trained with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    directory = tmp_path_factory.mktemp("bpe")
    tokenizer.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 64})
    )
    return directory


def _train_sentencepiece(directory: Path, prefix: str, **options) -> None:
    import sentencepiece

    text = directory / "corpus.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(directory / prefix), hard_vocab_limit=False, character_coverage=1.0,
        minloglevel=2, **options,
    )
    text.unlink()
    (directory / f"{prefix}.vocab").unlink()


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    """A Llama-style SentencePiece BPE model (byte fallback, no normalization) in tokenizer.model."""
    directory = tmp_path_factory.mktemp("llama")
    _train_sentencepiece(directory, "tokenizer", vocab_size=520, model_type="bpe", byte_fallback=True,
                         normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
                         unk_id=0, bos_id=1, eos_id=2, pad_id=-1, allow_whitespace_only_pieces=True)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                    "legacy": False})
    )
    return directory


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory) -> Path:
    """A T5-style SentencePiece unigram model (nmt_nfkc normalization) in spiece.model."""
    directory = tmp_path_factory.mktemp("t5")
    _train_sentencepiece(directory, "spiece", vocab_size=250, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                         bos_id=-1)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    return directory


@pytest.fixture(scope="session")
def compare():
    """``compare(ours, theirs, text, text_pair=None, **kwargs)``: the same outputs and decodes, or a
    description of the first difference."""

    def run(ours, theirs, text, text_pair=None, **kwargs):
        options = dict(return_offsets_mapping=True, return_special_tokens_mask=True, **kwargs)
        mine, reference = ours(text, text_pair, **options), theirs(text, text_pair, **options)
        mine_view, reference_view = encoding_view(mine), encoding_view(reference)
        for key in reference_view.keys() | mine_view.keys():
            if mine_view.get(key) != reference_view.get(key):
                return f"{key} differs for {text!r}/{text_pair!r} {kwargs}: {mine_view.get(key)} != {reference_view.get(key)}"
        for skip in (False, True):
            decoded, expected = ours.decode(mine["input_ids"], skip_special_tokens=skip), \
                theirs.decode(reference["input_ids"], skip_special_tokens=skip)
            if decoded != expected:
                return f"decode(skip_special_tokens={skip}) differs for {text!r}: {decoded!r} != {expected!r}"
        return None

    return run
