"""Stopping criteria against the reference library's classes, stop strings included."""

from __future__ import annotations

import random
import time

import pytest
import torch
import transformers.generation.stopping_criteria as reference

import torchformers
import torchformers.generation.stopping as ours
from torchformers.errors import GenerationError


def test_max_length_and_eos_match_reference():
    ids = torch.tensor([[5, 6, 2], [5, 2, 7], [1, 1, 9]])
    for name, kwargs in (("MaxLengthCriteria", {"max_length": 3}), ("MaxLengthCriteria", {"max_length": 4}),
                         ("EosTokenCriteria", {"eos_token_id": 2}), ("EosTokenCriteria", {"eos_token_id": [7, 9]})):
        mine = getattr(ours, name)(**kwargs)(ids, None)
        theirs = getattr(reference, name)(**kwargs)(ids, None)
        assert torch.equal(mine, theirs), name
    assert ours.StoppingCriteriaList([ours.MaxLengthCriteria(9)]).max_length == 9


def test_max_time():
    ids = torch.zeros(2, 3, dtype=torch.long)
    assert not ours.MaxTimeCriteria(10.0)(ids, None).any()
    assert ours.MaxTimeCriteria(0.5, initial_timestamp=time.time() - 1)(ids, None).all()


def test_list_combines_with_or_and_accepts_plain_bools():
    ids = torch.tensor([[5, 2], [5, 6]])

    class Always(ours.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return True

    criteria = ours.StoppingCriteriaList([ours.EosTokenCriteria(2)])
    assert criteria(ids, None).tolist() == [True, False]
    criteria.append(Always())
    assert criteria(ids, None).tolist() == [True, True]


def random_sequences(vocab: int, count: int = 40, length: int = 8, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(length)] for _ in range(count)]


@pytest.mark.parametrize("stop_strings", [["the", "mat."], ["at"], [" here,", "o"], "hello world"])
def test_stop_strings_match_reference_on_byte_level_bpe(byte_level_tokenizers, stop_strings):
    mine_tokenizer, reference_tokenizer = byte_level_tokenizers
    mine = ours.StopStringCriteria(mine_tokenizer, stop_strings)
    theirs = reference.StopStringCriteria(reference_tokenizer, stop_strings)
    texts = ["the cat sat on the mat.", "stop here, then go on!", "hello world", "a cat", "then"]
    sequences = [reference_tokenizer(text)["input_ids"] for text in texts]
    sequences += random_sequences(len(reference_tokenizer))
    hits = 0
    for sequence in sequences:
        for end in range(1, len(sequence) + 1):
            ids = torch.tensor([sequence[:end]])
            expected = theirs(ids, None)
            assert torch.equal(mine(ids, None), expected), (reference_tokenizer.decode(sequence[:end]), stop_strings)
            hits += int(expected.any())
    assert hits >= 1  # the stop strings do occur, so both "stop" and "go on" answers are checked


def test_stop_strings_match_reference_on_wordpiece(minilm_dir):
    mine = ours.StopStringCriteria(torchformers.AutoTokenizer.from_pretrained(minilm_dir), ["dog", "runs ."])
    reference_tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(minilm_dir)
    theirs = reference.StopStringCriteria(reference_tokenizer, ["dog", "runs ."])
    sequence = reference_tokenizer("the hotdog runs. a dog", add_special_tokens=False)["input_ids"]
    results = []
    for end in range(1, len(sequence) + 1):
        ids = torch.tensor([sequence[:end]])
        expected = theirs(ids, None)
        assert torch.equal(mine(ids, None), expected)
        results.append(bool(expected))
    assert any(results)


def test_stop_string_validation():
    with pytest.raises(GenerationError):
        ours.StopStringCriteria(None, [""])
