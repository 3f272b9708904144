"""PreTrainedTokenizerFast and BertTokenizerFast on the real MiniLM tokenizer, against the reference library."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from tokenizer_cases import VARIED_TEXTS, random_texts

from torchformers import BatchEncoding, BertTokenizerFast, PreTrainedTokenizerFast
from torchformers.errors import TokenizerError, UnsupportedArgumentError

PAIRS = [(a, b) for a, b in zip(VARIED_TEXTS, VARIED_TEXTS[1:] + VARIED_TEXTS[:1], strict=False)]


@pytest.fixture(scope="module")
def ours(minilm_dir):
    return BertTokenizerFast.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def theirs(minilm_dir, reference):
    return reference.from_pretrained(minilm_dir)


def test_varied_texts_are_identical(ours, theirs, compare):
    texts = VARIED_TEXTS + random_texts(200)
    problems = [p for text in texts for p in [compare(ours, theirs, text)] if p]
    assert problems == []
    assert compare(ours, theirs, texts, padding=True) is None


def test_pairs_with_truncation_stride_and_overflow_are_identical(ours, theirs, compare):
    rng = random.Random(0)
    words = "the quick brown fox café 東京 😀 , . ! hello world tokenization naïve".split()

    def text():
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 25)))

    compared = 0
    for _ in range(150):
        batch = [text() for _ in range(rng.randint(1, 3))]
        pairs = [text() for _ in batch] if rng.random() < 0.7 else None
        options = dict(
            truncation=rng.choice([True, "longest_first", "only_first", "only_second", False]),
            max_length=rng.choice([None, 9, 12, 16, 30]), stride=rng.choice([0, 1, 2]),
            return_overflowing_tokens=rng.random() < 0.6, padding=rng.choice([False, True, "max_length"]),
            pad_to_multiple_of=rng.choice([None, 3]) if rng.random() < 0.3 else None,
            padding_side=rng.choice([None, "left", "right"]), return_length=rng.random() < 0.3,
        )
        if options["pad_to_multiple_of"] and options["max_length"]:
            options["pad_to_multiple_of"] = None
        try:
            theirs(batch, pairs, **options)
        except BaseException:  # the reference panics on some impossible truncations; ours is tested below
            with pytest.raises(TokenizerError):
                ours(batch, pairs, **options)
            continue
        assert compare(ours, theirs, batch, pairs, **options) is None
        compared += 1
    assert compared > 100


def test_truncation_side_left_is_identical(ours, theirs, compare):
    ours.truncation_side = theirs.truncation_side = "left"
    try:
        for a, b in PAIRS[:8]:
            assert compare(ours, theirs, a, b, truncation=True, max_length=10, stride=2,
                           return_overflowing_tokens=True) is None
    finally:
        ours.truncation_side = theirs.truncation_side = "right"


def test_single_text_shapes_and_tensors(ours, theirs):
    single = ours("Hello world")
    assert single["input_ids"] == theirs("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert list(single.keys()) == ["input_ids", "token_type_ids", "attention_mask"]
    pt = ours(["Hello world", "a"], padding=True, return_tensors="pt")
    assert pt["input_ids"].dtype == torch.int64 and pt["input_ids"].shape == (2, 4)
    assert torch.equal(pt["attention_mask"], theirs(["Hello world", "a"], padding=True, return_tensors="pt")["attention_mask"])
    arrays = ours("Hello world", return_tensors="np")
    assert isinstance(arrays["input_ids"], np.ndarray) and arrays["input_ids"].shape == (1, 4)
    moved = pt.to("cpu")
    assert moved is pt and pt["input_ids"].device.type == "cpu"
    assert ours("", return_tensors="pt")["input_ids"].tolist() == [[101, 102]]
    with pytest.raises(TokenizerError, match="padding=True"):
        ours(["Hello world", "a"], return_tensors="pt")
    with pytest.raises(UnsupportedArgumentError):
        ours("x", return_tensors="tf")


def test_batch_encoding_alignment_methods(ours, theirs):
    text, pair = "Héllo wörld, naïve café!", "東京 tokenization"
    mine, reference = ours(text, pair), theirs(text, pair)
    assert isinstance(mine, BatchEncoding) and mine.is_fast and mine.n_sequences == 2
    assert mine.word_ids() == reference.word_ids() and mine.sequence_ids() == reference.sequence_ids()
    assert mine.tokens() == reference.tokens()
    for index in range(len(mine["input_ids"])):
        assert mine.token_to_chars(index) == reference.token_to_chars(index)
        assert mine.token_to_word(index) == reference.token_to_word(index)
        assert mine.token_to_sequence(index) == reference.token_to_sequence(index)
    for char in range(len(text) + 1):
        assert mine.char_to_token(char) == reference.char_to_token(char)
        assert mine.char_to_word(char) == reference.char_to_word(char)
    for char in range(len(pair)):
        assert mine.char_to_token(0, char, sequence_index=1) == reference.char_to_token(0, char, sequence_index=1)
    for word in range(4):
        assert mine.word_to_tokens(word) == reference.word_to_tokens(word)
        assert mine.word_to_chars(word) == reference.word_to_chars(word)
    assert mine.input_ids == mine["input_ids"] and mine[0].ids == mine["input_ids"]


def test_is_split_into_words(ours, theirs, compare):
    words = [["Hello", "wörld", "東京", "tokenization"], ["a", "b"]]
    assert compare(ours, theirs, words, is_split_into_words=True, padding=True) is None
    assert compare(ours, theirs, words[0], ["x", "y"], is_split_into_words=True) is None


def test_decode_and_vocabulary(ours, theirs):
    ids = ours("Don't stop, it's café time!")["input_ids"]
    for skip in (False, True):
        for clean in (None, True, False):
            assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == \
                theirs.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    batch = ours(["a b", "c"], padding=True, return_tensors="pt")["input_ids"]
    assert ours.batch_decode(batch) == theirs.batch_decode(batch)
    assert ours.decode(batch, skip_special_tokens=True) == ["a b", "c"]
    assert ours.tokenize("Unaffable café") == theirs.tokenize("Unaffable café")
    assert ours.convert_tokens_to_ids(["[CLS]", "hello", "not-a-token"]) == [101, 7592, 100]
    assert ours.convert_ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    assert ours.convert_ids_to_tokens(101) == "[CLS]"
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs) == 30522
    assert ours.vocab_size == theirs.vocab_size
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.all_special_ids == theirs.all_special_ids
    assert (ours.pad_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id, ours.unk_token_id) == \
        (0, 101, 102, 103, 100)
    assert ours.bos_token is None and ours.bos_token_id is None
    assert ours.model_max_length == 512
    assert ours.num_special_tokens_to_add() == 2 and ours.num_special_tokens_to_add(pair=True) == 3
    assert ours.build_inputs_with_special_tokens([5], [6]) == [101, 5, 102, 6, 102]
    assert ours.get_special_tokens_mask([5], [6]) == [1, 0, 1, 0, 1]
    assert ours.create_token_type_ids_from_sequences([5], [6]) == [0, 0, 0, 1, 1]


def test_add_tokens_and_special_tokens(minilm_dir, reference):
    ours, theirs = BertTokenizerFast.from_pretrained(minilm_dir), reference.from_pretrained(minilm_dir)
    counts = [(t.add_tokens(["newword", "hello"]),
               t.add_special_tokens({"bos_token": "<bos>", "additional_special_tokens": ["<x>"]})) for t in (ours, theirs)]
    assert counts[0] == counts[1]
    assert len(ours) == len(theirs) == 30525
    text = "newword <bos> hello<x>there"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == \
        theirs.decode(theirs(text)["input_ids"], skip_special_tokens=True)
    assert ours.bos_token == "<bos>" and ours.bos_token_id == len(ours) - 2
    assert ours.extra_special_tokens == ["<x>"] and ours.all_special_tokens == theirs.all_special_tokens
    assert ours.get_added_vocab() == theirs.get_added_vocab()
    assert ours.tokenize(text, split_special_tokens=True) == theirs.tokenize(text, split_special_tokens=True)


def test_long_text_warns_once_unless_truncated(ours, caplog):
    long_text = "word " * 600
    ours._warned_too_long = False
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        ids = ours(long_text)["input_ids"]
        ours(long_text)
    assert len(ids) == 602
    assert sum("longer than the specified maximum" in r.message for r in caplog.records) == 1
    caplog.clear()
    ours._warned_too_long = False
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        assert len(ours(long_text, truncation=True)["input_ids"]) == 512
    assert not caplog.records


def test_empty_and_whitespace_only(ours, theirs, compare):
    for text in ("", " ", "\n\t  \u3000"):
        assert compare(ours, theirs, text) is None
        assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == ""
    assert ours([], padding=True)["input_ids"] == []


@pytest.mark.parametrize("bad", [123, None, 4.5, [1, 2], ["ok", 3], {"text": "x"}, b"bytes"])
def test_non_string_input_is_a_clear_error(ours, bad):
    with pytest.raises(TokenizerError) as raised:
        ours(bad) if bad is not None else ours(text=None)
    assert isinstance(raised.value, ValueError)


def test_bad_arguments(ours):
    with pytest.raises(UnsupportedArgumentError, match="retrun_tensors"):
        ours("x", retrun_tensors="pt")
    with pytest.raises(TokenizerError, match="padding"):
        ours("x", padding="sideways")
    with pytest.raises(TokenizerError, match="only_second"):
        ours("one two three four five six", truncation="only_second", max_length=5)
    with pytest.raises(TokenizerError, match="stride"):
        ours("one two three four five six", truncation=True, max_length=5, stride=3, return_overflowing_tokens=True)
    with pytest.raises(TokenizerError, match="text_pair"):
        ours(["a", "b"], ["c"])


def test_padding_without_pad_token_is_an_error(minilm_dir):
    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir)
    tokenizer.pad_token = None
    with pytest.raises(TokenizerError, match="padding token"):
        tokenizer(["a", "b c"], padding=True)


def test_pad_method_matches_reference(ours, theirs):
    features = [ours("a b c"), ours("d")]
    for options in ({}, {"padding": "max_length", "max_length": 8}, {"pad_to_multiple_of": 4},
                    {"padding_side": "left"}, {"return_tensors": "pt"}):
        mine = ours.pad([dict(f) for f in features], **options)
        reference = theirs.pad([dict(f) for f in features], **options)
        assert {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in mine.items()} == \
            {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in reference.items()}


def test_text_target_gives_labels(ours, theirs):
    mine = ours("question", text_target="answer here")
    assert mine["labels"] == theirs("question", text_target="answer here")["labels"]
    assert ours(text_target="only target")["input_ids"] == theirs(text_target="only target")["input_ids"]


def test_generic_fast_class_loads_tokenizer_json(minilm_dir, theirs, compare):
    generic = PreTrainedTokenizerFast.from_pretrained(minilm_dir)
    assert generic("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert generic.model_input_names == ["input_ids", "attention_mask"]
    generic_file = PreTrainedTokenizerFast(tokenizer_file=f"{minilm_dir}/tokenizer.json", unk_token="[UNK]")
    assert generic_file.decode(generic_file("Hello world")["input_ids"]) == "[CLS] hello world [SEP]"
