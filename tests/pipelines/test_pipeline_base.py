"""The shared machinery: inputs of every form, batching that keeps answers and order, progress bars."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import assert_same_answers

import torchformers
from torchformers.errors import PipelineError, UnsupportedArgumentError

# Lengths that differ a lot, so sorted batching reorders them.
TEXTS = [f"sentence {i} " + "and more words " * (i * 7 % 11) for i in range(13)]


@pytest.fixture(scope="module")
def classifier(checkpoint):
    return torchformers.pipeline("text-classification", model=str(checkpoint("sequence_classification")), device="cpu",
                                 top_k=None)


@pytest.mark.parametrize("batch_size", [2, 5, 32])
def test_batches_give_the_one_by_one_answers_in_order(classifier, batch_size):
    one_by_one = [classifier(text)[0] for text in TEXTS]
    assert_same_answers(classifier(TEXTS, batch_size=batch_size), one_by_one, atol=1e-5)


def test_batch_size_given_at_construction(checkpoint):
    pipe = torchformers.pipeline("text-classification", model=str(checkpoint("sequence_classification")),
                                 device="cpu", batch_size=4)
    assert pipe.batch_size == 4
    assert_same_answers(pipe(TEXTS), [pipe(text)[0] for text in TEXTS], atol=1e-5)


def test_generators_and_datasets_stream_answers_in_order(classifier):
    expected = classifier(TEXTS)
    streamed = classifier((text for text in TEXTS), batch_size=4)
    assert isinstance(streamed, types.GeneratorType)
    assert_same_answers(list(streamed), expected, atol=1e-5)

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(TEXTS)

        def __getitem__(self, index):
            return TEXTS[index]

    assert_same_answers(list(classifier(Texts(), batch_size=3)), expected, atol=1e-5)
    assert classifier([]) == []


def test_a_stream_is_consumed_a_batch_at_a_time(classifier):
    taken = []

    def texts():
        for text in TEXTS:
            taken.append(text)
            yield text

    answers = classifier(texts(), batch_size=4)
    next(answers)
    assert len(taken) == 4  # the first answer came before the rest of the stream was read


def test_progress_bar(classifier, capsys):
    classifier(TEXTS, batch_size=4, progress_bar=True)
    shown = capsys.readouterr().err
    assert "text-classification" in shown and "13/13" in shown
    classifier(TEXTS, batch_size=4)
    assert capsys.readouterr().err == ""


def test_padding_needs_a_pad_token(checkpoint):
    pipe = torchformers.pipeline("text-classification", model=str(checkpoint("sequence_classification")),
                                 device="cpu")
    pipe.tokenizer.pad_token = None
    assert pipe(TEXTS[:2])  # one by one: no padding needed
    with pytest.raises(PipelineError, match="pad token"):
        pipe(TEXTS[:3], batch_size=3)


def test_unknown_options_are_errors(classifier):
    with pytest.raises(UnsupportedArgumentError, match="top_kk"):
        classifier(TEXTS[0], top_kk=3)
    with pytest.raises(PipelineError, match="batch_size"):
        classifier(TEXTS, batch_size=0)
