"""Data collators against the reference library's on the same rows and the same real tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchformers
from torchformers.errors import TokenizerError, UnsupportedArgumentError

transformers = pytest.importorskip("transformers")

TEXTS = ["Hello world!", "A somewhat longer sentence, with punctuation.", "Short", "Ünïcödé and 数字 123",
         "the quick brown fox jumps over the lazy dog again and again"]


@pytest.fixture(scope="module")
def tokenizers(minilm_dir):
    """(torchformers, reference) tokenizers of the real all-MiniLM-L6-v2 checkpoint."""
    return torchformers.AutoTokenizer.from_pretrained(minilm_dir), transformers.AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def encoded(tokenizers):
    ours, reference = tokenizers
    rows = [dict(ours(text, return_special_tokens_mask=True)) for text in TEXTS]
    assert rows == [dict(reference(text, return_special_tokens_mask=True)) for text in TEXTS]
    return rows


def assert_same_batch(ours: dict, reference: dict) -> None:
    assert sorted(ours) == sorted(reference)
    for key, value in reference.items():
        if value is None:
            assert ours[key] is None
            continue
        assert isinstance(ours[key], torch.Tensor) and ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


def both(name: str, tokenizers, **options):
    ours, reference = tokenizers
    return getattr(torchformers, name)(ours, **options), getattr(transformers, name)(reference, **options)


def test_default_data_collator_matches():
    cases = [
        [{"input_ids": [1, 2, 3], "label": 1, "text": "dropped"}, {"input_ids": [4, 5, 6], "label": 0, "text": "x"}],
        [{"x": torch.ones(2, 3), "label": 0.5}, {"x": torch.zeros(2, 3), "label": 1.5}],
        [{"x": np.arange(4), "label_ids": [1, 2]}, {"x": np.arange(4) * 2, "label_ids": [3, 4]}],
        [{"x": [1.0, 2.0], "label_ids": torch.tensor([1, 2]), "skip": None}, {"x": [3.0, 4.0],
                                                                               "label_ids": torch.tensor([3, 4]),
                                                                               "skip": None}],
        [{"input_ids": torch.tensor([1, 2]), "label": torch.tensor(1)}, {"input_ids": torch.tensor([3, 4]),
                                                                          "label": torch.tensor(0)}],
    ]
    for features in cases:
        assert_same_batch(torchformers.default_data_collator(features), transformers.default_data_collator(features))
        assert_same_batch(torchformers.DefaultDataCollator()(features), transformers.DefaultDataCollator()(features))
    with pytest.raises(UnsupportedArgumentError, match="PyTorch tensors only"):
        torchformers.default_data_collator(cases[0], return_tensors="np")


@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 32}])
def test_padding_collator_matches(tokenizers, encoded, options):
    ours, reference = both("DataCollatorWithPadding", tokenizers, **options)
    rows = [{k: v for k, v in row.items() if k != "special_tokens_mask"} | {"label": i % 2}
            for i, row in enumerate(encoded)]
    assert_same_batch(ours(rows), reference(rows))


@pytest.mark.parametrize("side", ["right", "left"])
def test_token_classification_collator_matches(tokenizers, encoded, side):
    for tokenizer in tokenizers:
        tokenizer.padding_side = side
    try:
        ours, reference = both("DataCollatorForTokenClassification", tokenizers, pad_to_multiple_of=4)
        rows = [{"input_ids": row["input_ids"], "labels": list(range(len(row["input_ids"])))} for row in encoded]
        assert_same_batch(ours(rows), reference(rows))
        unlabeled = [{"input_ids": row["input_ids"]} for row in encoded]
        assert_same_batch(ours(unlabeled), reference(unlabeled))
    finally:
        for tokenizer in tokenizers:
            tokenizer.padding_side = "right"


@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 40}])
def test_seq2seq_collator_matches(tokenizers, encoded, options):
    ours, reference = both("DataCollatorForSeq2Seq", tokenizers, **options)
    rows = [{"input_ids": row["input_ids"], "attention_mask": row["attention_mask"],
             "labels": row["input_ids"][::-1][: 3 + i]} for i, row in enumerate(encoded)]
    assert_same_batch(ours(rows), reference(rows))
    unlabeled = [{"input_ids": row["input_ids"]} for row in encoded]
    assert_same_batch(ours(unlabeled), reference(unlabeled))


@pytest.mark.parametrize("options", [
    {"mlm": False},
    {"mlm_probability": 0.5, "seed": 7},
    {"mlm_probability": 0.3, "mask_replace_prob": 0.5, "random_replace_prob": 0.3, "seed": 3},
    {"mlm_probability": 0.4, "mask_replace_prob": 1.0, "random_replace_prob": 0.0, "pad_to_multiple_of": 8},
    {"mlm_probability": 0.2},
])
def test_language_modeling_collator_matches(tokenizers, encoded, options):
    """Masking draws from the same generator in the same order, so the masked batches are identical."""
    for rows in (encoded, [{"input_ids": row["input_ids"]} for row in encoded], [row["input_ids"] for row in encoded]):
        ours, reference = both("DataCollatorForLanguageModeling", tokenizers, **options)
        torch.manual_seed(11)  # the global generator, for the options without a seed
        expected = reference([dict(row) if isinstance(row, dict) else list(row) for row in rows])
        torch.manual_seed(11)
        actual = ours([dict(row) if isinstance(row, dict) else list(row) for row in rows])
        assert_same_batch(actual, expected)
    if options.get("mlm", True):
        labels = actual["labels"]
        assert (labels != -100).any() and (actual["input_ids"][labels != -100] != 101).all()  # [CLS] never masked


def test_language_modeling_collator_rejects_bad_options(tokenizers):
    ours = tokenizers[0]
    with pytest.raises(TokenizerError, match="mask_replace_prob \\+ random_replace_prob"):
        torchformers.DataCollatorForLanguageModeling(ours, mask_replace_prob=0.8, random_replace_prob=0.5)
    with pytest.raises(TokenizerError, match="mlm_probability"):
        torchformers.DataCollatorForLanguageModeling(ours, mlm_probability=1.5)
    with pytest.raises(UnsupportedArgumentError, match="whole_word_mask"):
        torchformers.DataCollatorForLanguageModeling(ours, whole_word_mask=True)
