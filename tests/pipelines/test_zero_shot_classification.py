"""zero-shot-classification answers equal the reference pipeline's on an NLI-style checkpoint."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

from torchformers.errors import PipelineError

TEXTS = ["The team scored twice in the final minutes to win the championship.",
         "Interest rates rose again, and the markets fell sharply."]
LABELS = ["sports", "economy", "politics", "cooking"]


@pytest.fixture(scope="module")
def classifiers(pipelines):
    return pipelines("zero-shot-classification", "nli")


@pytest.mark.parametrize("options", [{}, {"multi_label": True}, {"hypothesis_template": "The topic is {}."}])
def test_same_ranking_as_the_reference(classifiers, options):
    ours, reference = classifiers
    for inputs in (TEXTS[0], TEXTS):
        assert_same_answers(ours(inputs, candidate_labels=LABELS, **options),
                            reference(inputs, candidate_labels=LABELS, **options))


def test_labels_positionally_as_a_string_and_one_label(classifiers):
    ours, reference = classifiers
    assert_same_answers(ours(TEXTS[1], "economy, sports"), reference(TEXTS[1], "economy, sports"))
    assert_same_answers(ours(TEXTS[1], ["economy"]), reference(TEXTS[1], ["economy"]))


def test_batched_like_one_by_one(classifiers):
    ours, _ = classifiers
    assert_same_answers(ours(TEXTS * 2, candidate_labels=LABELS, batch_size=5),
                        [ours(text, candidate_labels=LABELS) for text in TEXTS * 2], atol=1e-5)


def test_entailment_class_comes_from_label2id(classifiers):
    ours, _ = classifiers
    assert ours.entailment_id == 2


def test_missing_or_bad_arguments(classifiers):
    ours, _ = classifiers
    with pytest.raises(PipelineError, match="candidate_labels"):
        ours(TEXTS[0])
    with pytest.raises(PipelineError, match="at least one candidate label"):
        ours(TEXTS[0], candidate_labels=[])
    with pytest.raises(PipelineError, match="hypothesis_template"):
        ours(TEXTS[0], candidate_labels=LABELS, hypothesis_template="No slot here.")
