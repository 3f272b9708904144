"""Byte-level BPE (GPT-2 style): the slow tokenizer, its fast conversion and the reference library agree."""

from __future__ import annotations

import json

import pytest
from tokenizer_cases import VARIED_TEXTS, random_texts

from torchformers import GPT2Tokenizer, GPT2TokenizerFast
from torchformers.errors import TokenizerFileError
from torchformers.tokenization.slow.bpe import split_gpt2

TEXTS = VARIED_TEXTS + random_texts(150, seed=3) + ["<|endoftext|>inside<|endoftext|> text", "it's 'll 've"]


@pytest.fixture(scope="module")
def tokenizers(bpe_dir, reference):
    return GPT2Tokenizer.from_pretrained(bpe_dir), GPT2TokenizerFast.from_pretrained(bpe_dir), \
        reference.from_pretrained(bpe_dir)


def test_slow_fast_and_reference_agree(tokenizers, compare):
    slow, fast, theirs = tokenizers
    assert not slow.is_fast and fast.is_fast
    for ours in (slow, fast):
        assert [p for t in TEXTS for p in [compare(ours, theirs, t)] if p] == []
        assert compare(ours, theirs, TEXTS[:6], TEXTS[6:12], truncation=True, max_length=24, stride=3,
                       return_overflowing_tokens=True) is None
        assert compare(ours, theirs, [["Hello", " wörld", "東京"]], is_split_into_words=True) is None
    assert len(slow) == len(fast) == len(theirs) == 400
    assert slow.get_vocab() == fast.get_vocab() == theirs.get_vocab()


def test_padding_with_eos_as_pad_token(bpe_dir, reference, compare):
    theirs = reference.from_pretrained(bpe_dir)
    theirs.pad_token = theirs.eos_token
    for ours in (GPT2Tokenizer.from_pretrained(bpe_dir), GPT2TokenizerFast.from_pretrained(bpe_dir)):
        ours.pad_token = ours.eos_token
        assert compare(ours, theirs, TEXTS[:8], padding=True, padding_side="left") is None


def test_prefix_space_and_bos(bpe_dir, reference, compare):
    for options in ({"add_prefix_space": True}, {"add_bos_token": True, "add_eos_token": True}):
        slow = GPT2Tokenizer.from_pretrained(bpe_dir, **options)
        theirs = reference.from_pretrained(bpe_dir, **options)
        fast = GPT2TokenizerFast.from_pretrained(bpe_dir, **options)
        for text in VARIED_TEXTS[:8]:
            assert compare(slow, theirs, text) is None, options
            assert compare(fast, theirs, text) is None, options


def test_pretokenization_pattern():
    text = "Hello  world's 42x\t\tend  "
    assert [text[a:b] for a, b in split_gpt2(text)] == ["Hello", " ", " world", "'s", " 42", "x", "\t", "\t", "end", "  "]


def test_decode_keeps_spaces_before_punctuation(tokenizers):
    slow, fast, theirs = tokenizers
    ids = theirs("a , b . c")["input_ids"]
    assert slow.decode(ids, clean_up_tokenization_spaces=True) == fast.decode(ids, clean_up_tokenization_spaces=True) \
        == theirs.decode(ids, clean_up_tokenization_spaces=True) == "a , b . c"


def test_to_fast(tokenizers, compare):
    slow, _, theirs = tokenizers
    fast = slow.to_fast()
    assert type(fast) is GPT2TokenizerFast
    assert [p for t in TEXTS[:40] for p in [compare(fast, theirs, t)] if p] == []


def test_bad_files(bpe_dir, tmp_path):
    vocab, merges = bpe_dir / "vocab.json", bpe_dir / "merges.txt"
    with pytest.raises(TokenizerFileError, match="merges.txt"):
        GPT2Tokenizer(vocab_file=str(vocab), merges_file=str(tmp_path / "merges.txt"))
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        GPT2Tokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(merges))
    (tmp_path / "bad_merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(TokenizerFileError, match="line 2"):
        GPT2Tokenizer(vocab_file=str(vocab), merges_file=str(tmp_path / "bad_merges.txt"))
    small = {k: v for k, v in json.loads(vocab.read_text()).items() if len(k) == 1}
    (tmp_path / "small.json").write_text(json.dumps(small))
    with pytest.raises(TokenizerFileError, match="do not belong together"):
        GPT2Tokenizer(vocab_file=str(tmp_path / "small.json"), merges_file=str(merges))
