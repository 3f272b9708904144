"""The pure-Python WordPiece tokenizer from MiniLM's vocab.txt alone, against the reference library."""

from __future__ import annotations

import random

import pytest
from tokenizer_cases import VARIED_TEXTS, random_texts

from torchformers import BertTokenizer, BertTokenizerFast
from torchformers.errors import TokenizerError, TokenizerFileError


@pytest.fixture(scope="module")
def slow(minilm_slow_dir):
    return BertTokenizer.from_pretrained(minilm_slow_dir)


@pytest.fixture(scope="module")
def theirs(minilm_slow_dir, reference):
    return reference.from_pretrained(minilm_slow_dir)


def test_varied_texts_are_identical(slow, theirs, compare):
    texts = VARIED_TEXTS + random_texts(200, seed=1)
    assert [p for t in texts for p in [compare(slow, theirs, t)] if p] == []
    assert compare(slow, theirs, texts, padding=True) is None


def test_pairs_truncation_stride_overflow_and_padding(slow, theirs, compare):
    rng = random.Random(2)
    words = "the quick brown fox café 東京 😀 , . ! hello world tokenization naïve".split()

    def text():
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))

    compared = 0
    for _ in range(150):
        batch = [text() for _ in range(rng.randint(1, 3))]
        pairs = [text() for _ in batch] if rng.random() < 0.7 else None
        options = dict(truncation=rng.choice([True, "only_first", "only_second", False]),
                       max_length=rng.choice([None, 9, 12, 30]), stride=rng.choice([0, 1, 2]),
                       return_overflowing_tokens=rng.random() < 0.6, padding=rng.choice([False, True, "max_length"]),
                       padding_side=rng.choice([None, "left"]))
        try:
            theirs(batch, pairs, **options)
        except BaseException:  # impossible truncations: the reference panics, we raise TokenizerError
            with pytest.raises(TokenizerError):
                slow(batch, pairs, **options)
            continue
        assert compare(slow, theirs, batch, pairs, **options) is None
        compared += 1
    assert compared > 100


def test_pretokenized_and_added_tokens(minilm_slow_dir, reference, compare):
    slow, theirs = BertTokenizer.from_pretrained(minilm_slow_dir), reference.from_pretrained(minilm_slow_dir)
    for tokenizer in (slow, theirs):
        tokenizer.add_tokens(["newword"])
        tokenizer.add_special_tokens({"additional_special_tokens": ["<x>"]})
    assert compare(slow, theirs, "a newword<x>[MASK] b [SEP]c") is None
    assert compare(slow, theirs, [["Hello", "newword", "東京"], ["x"]], is_split_into_words=True, padding=True) is None
    assert slow.tokenize("a<x>b", split_special_tokens=True) == theirs.tokenize("a<x>b", split_special_tokens=True)


def test_options_follow_the_config(minilm_slow_dir, minilm_dir, reference):
    text = "Héllo WÖRLD 東京"
    for options in ({"do_lower_case": False}, {"strip_accents": False}, {"tokenize_chinese_chars": False}):
        slow = BertTokenizer.from_pretrained(minilm_slow_dir, **options)
        fast = BertTokenizerFast.from_pretrained(minilm_dir, **options)
        theirs = reference.from_pretrained(minilm_slow_dir, **options)
        assert slow(text)["input_ids"] == fast(text)["input_ids"] == theirs(text)["input_ids"], options


def test_to_fast_gives_the_same_encodings(slow, compare):
    fast = slow.to_fast()
    assert type(fast) is BertTokenizerFast
    for text in VARIED_TEXTS:
        assert compare(fast, slow, text, "pair text") is None


def test_missing_or_corrupt_vocabulary(tmp_path):
    with pytest.raises(TokenizerFileError, match="does not exist"):
        BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(TokenizerFileError, match="vocab.txt") as raised:
        BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    assert isinstance(raised.value, OSError)
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(TokenizerFileError, match="empty"):
        BertTokenizer.from_pretrained(tmp_path / "vocab.txt")


def test_inconsistent_special_token_config(minilm_slow_dir, tmp_path):
    import json
    import shutil

    shutil.copy(minilm_slow_dir / "vocab.txt", tmp_path / "vocab.txt")
    config = json.loads((minilm_slow_dir / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"101": {"content": "[PAD]", "special": True}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="disagree"):
        BertTokenizer.from_pretrained(tmp_path)
    config["added_tokens_decoder"] = {}
    config["pad_token"] = 7
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="pad_token"):
        BertTokenizer.from_pretrained(tmp_path)
