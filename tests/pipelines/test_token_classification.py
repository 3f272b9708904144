"""token-classification (ner) answers equal the reference pipeline's: labels, words, offsets, scores."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

from torchformers.errors import PipelineError

TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Sarah Connor met John at the Cyberdyne Systems headquarters in Sunnyvale, California.",
    "unbelievably, the xylophonist's performance at Carnegie Hall was extraordinary!",
    "Hello",
]


@pytest.fixture(scope="module")
def taggers(pipelines):
    return pipelines("token-classification", "token_classification")


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_same_entities_as_the_reference(taggers, strategy):
    ours, reference = taggers
    found = 0
    for text in TEXTS:
        expected = reference(text, aggregation_strategy=strategy)
        found += len(expected)
        assert_same_answers(ours(text, aggregation_strategy=strategy), expected)
    assert found >= 5, "the random head should tag some tokens with entities"


def test_the_random_head_tags_a_mix_of_labels(taggers):
    ours, _ = taggers
    labels = {entity["entity"] for text in TEXTS for entity in ours(text, ignore_labels=[])}
    assert {"O", "B-PER", "I-LOC"} <= labels


def test_ignore_labels_and_offsets(taggers):
    ours, reference = taggers
    for labels in ([], ["O", "B-PER"]):
        assert_same_answers(ours(TEXTS[1], ignore_labels=labels), reference(TEXTS[1], ignore_labels=labels))
    for entity in ours(TEXTS[1], aggregation_strategy="first", ignore_labels=[]):
        # start/end point into the original text, and cover the word the entity names
        assert TEXTS[1][entity["start"]:entity["end"]].lower().replace(" ", "") == entity["word"].replace(" ", "")


def test_ner_alias_with_a_batch(pipelines):
    ours, reference = pipelines("ner", "token_classification", aggregation_strategy="simple")
    assert_same_answers(ours(TEXTS, batch_size=3), reference(TEXTS))


def test_long_text_in_strided_windows(taggers):
    ours, reference = taggers
    text = " ".join(["Angela visited Paris and then Rome with Marco."] * 8)
    ours.tokenizer.model_max_length = reference.tokenizer.model_max_length = 40
    try:
        expected = reference(text, aggregation_strategy="simple", stride=8)
        assert_same_answers(ours(text, aggregation_strategy="simple", stride=8), expected)
        assert expected[-1]["end"] > 300  # the windows reach the end of the text
    finally:
        ours.tokenizer.model_max_length = reference.tokenizer.model_max_length = 512


def test_pre_split_words(taggers):
    ours, reference = taggers
    words = ["Sarah", "lives", "in", "New", "York"]
    expected = reference(words, is_split_into_words=True, aggregation_strategy="simple")
    assert_same_answers(ours(words, is_split_into_words=True, aggregation_strategy="simple"), expected)


def test_bad_options(taggers):
    ours, _ = taggers
    with pytest.raises(PipelineError, match="aggregation_strategy"):
        ours(TEXTS[0], aggregation_strategy="longest")
    with pytest.raises(PipelineError, match="stride"):
        ours(TEXTS[0], aggregation_strategy="none", stride=4)
