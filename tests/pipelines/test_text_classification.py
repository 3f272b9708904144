"""text-classification answers equal the reference pipeline's on the same checkpoint."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

from torchformers.errors import PipelineError

TEXTS = [
    "I loved every minute of this film.",
    "The service was slow and the food was cold, which ruined what should have been a pleasant evening out.",
    "Meh.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]
PAIR = {"text": "A man is eating food.", "text_pair": "A man is eating a piece of bread."}


@pytest.fixture(scope="module")
def classifiers(pipelines):
    return pipelines("text-classification", "sequence_classification")


@pytest.mark.parametrize("options", [{}, {"top_k": None}, {"top_k": 2}, {"top_k": 1},
                                     {"function_to_apply": "sigmoid"}, {"function_to_apply": "none", "top_k": None}])
def test_same_answers_as_the_reference(classifiers, options):
    ours, reference = classifiers
    for inputs in (TEXTS[0], TEXTS, PAIR, [PAIR, PAIR]):
        assert_same_answers(ours(inputs, **options), reference(inputs, **options))


def test_the_answer_shapes_follow_the_reference(classifiers):
    ours, _ = classifiers
    assert isinstance(ours(TEXTS[0]), list) and set(ours(TEXTS[0])[0]) == {"label", "score"}
    assert isinstance(ours(PAIR), dict)
    assert [len(answer) for answer in ours(TEXTS, top_k=None)] == [3] * len(TEXTS)


def test_sentiment_analysis_alias_and_init_options(pipelines):
    ours, reference = pipelines("sentiment-analysis", "sequence_classification", top_k=None)
    assert type(ours).__name__ == "TextClassificationPipeline"
    assert_same_answers(ours(TEXTS[1]), reference(TEXTS[1]))


def test_multi_label_config_uses_sigmoid(classifiers):
    ours, _ = classifiers
    config = ours.model.config
    previous, config.problem_type = getattr(config, "problem_type", None), "multi_label_classification"
    try:
        scores = ours(TEXTS[0], top_k=None)
        explicit = ours(TEXTS[0], top_k=None, function_to_apply="sigmoid")
    finally:
        config.problem_type = previous
    assert scores == explicit
    assert sum(entry["score"] for entry in scores) != pytest.approx(1.0)


def test_bad_options_and_inputs(classifiers):
    ours, _ = classifiers
    with pytest.raises(PipelineError, match="function_to_apply"):
        ours(TEXTS[0], function_to_apply="tanh")
    with pytest.raises(PipelineError, match="dict"):
        ours([["a text", "its pair"]])
    with pytest.raises(PipelineError, match="top_k"):
        ours(TEXTS[0], top_k=0)
