"""pipeline(): tasks and aliases, task inference, model and tokenizer loading, and its errors."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

import torchformers
from torchformers.errors import PipelineError, RemoteCodeError, UnknownTaskError, UnsupportedArgumentError
from torchformers.pipelines import SUPPORTED_TASKS, get_supported_tasks


@pytest.mark.parametrize(("kind", "pipeline_class"), [
    ("sequence_classification", "TextClassificationPipeline"),
    ("token_classification", "TokenClassificationPipeline"),
    ("question_answering", "QuestionAnsweringPipeline"),
    ("masked_lm", "FillMaskPipeline"),
    ("causal_lm", "TextGenerationPipeline"),
])
def test_the_task_is_inferred_from_the_config(checkpoint, kind, pipeline_class):
    pipe = torchformers.pipeline(model=str(checkpoint(kind)), device="cpu")
    assert type(pipe).__name__ == pipeline_class and pipe.task in SUPPORTED_TASKS


def test_a_bare_model_is_for_feature_extraction(minilm_dir):
    pipe = torchformers.pipeline(model=minilm_dir, device=-1)
    assert type(pipe) is torchformers.FeatureExtractionPipeline and str(pipe.device) == "cpu"


def test_aliases_and_lazy_names():
    assert {"sentiment-analysis", "ner", "question-answering", "zero-shot-classification"} <= set(
        get_supported_tasks())
    assert torchformers.pipeline is torchformers.pipelines.pipeline
    assert torchformers.NerPipeline is torchformers.TokenClassificationPipeline


def test_model_and_tokenizer_objects(checkpoint):
    directory = str(checkpoint("sequence_classification"))
    model = torchformers.AutoModelForSequenceClassification.from_pretrained(directory)
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory)
    with_objects = torchformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    by_name = torchformers.pipeline("text-classification", model=model, device="cpu")  # tokenizer from its path
    from_path = torchformers.pipeline("text-classification", model=directory, tokenizer=directory, device="cpu")
    text = "Objects or paths, the same answer."
    assert with_objects(text) == by_name(text) == from_path(text)


def test_unknown_task_lists_the_supported_ones(checkpoint):
    with pytest.raises(UnknownTaskError, match="'summarization'.*text-classification") as caught:
        torchformers.pipeline("summarization", model=str(checkpoint("masked_lm")))
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)


def test_no_model_names_one_to_pass():
    with pytest.raises(PipelineError, match="needs model=.*distilbert/distilbert-base-uncased-finetuned-sst-2"):
        torchformers.pipeline("sentiment-analysis")
    with pytest.raises(PipelineError, match="task or a model"):
        torchformers.pipeline()


def test_a_model_of_the_wrong_kind(checkpoint):
    with pytest.raises(PipelineError, match="text-generation.*AutoModelForCausalLM"):
        torchformers.pipeline("text-generation", model=str(checkpoint("sequence_classification")))
    masked_lm = torchformers.AutoModelForMaskedLM.from_pretrained(str(checkpoint("masked_lm")))
    with pytest.raises(PipelineError, match="needs a model loaded with AutoModelForSequenceClassification.*"
                                            "BertForSequenceClassification.*got BertForMaskedLM"):
        torchformers.pipeline("text-classification", model=masked_lm)


def test_refused_options(checkpoint):
    directory = str(checkpoint("masked_lm"))
    with pytest.raises(RemoteCodeError):
        torchformers.pipeline("fill-mask", model=directory, trust_remote_code=True)
    with pytest.raises(UnsupportedArgumentError, match="image_processor"):
        torchformers.pipeline("fill-mask", model=directory, image_processor="x")
    with pytest.raises(UnsupportedArgumentError, match="nonsense"):
        torchformers.pipeline("fill-mask", model=directory, nonsense=1)


@pytest.mark.parametrize(("task", "kind", "call"), [
    ("ner", "token_classification",
     lambda pipe: pipe("Sarah Connor met John in Sunnyvale, California.", aggregation_strategy="first")),
    ("question-answering", "question_answering",
     lambda pipe: pipe(question="Who met John?", context="Sarah Connor met John in Sunnyvale, California.", top_k=3)),
    ("fill-mask", "masked_lm", lambda pipe: pipe("Paris is the [MASK] of France.")),
])
def test_slow_tokenizers_give_the_fast_answers(checkpoint, task, kind, call):
    directory = str(checkpoint(kind))
    fast = torchformers.pipeline(task, model=directory, device="cpu")
    slow = torchformers.pipeline(task, model=directory, device="cpu", use_fast=False)
    assert fast.tokenizer.is_fast and not slow.tokenizer.is_fast
    assert_same_answers(call(slow), call(fast), atol=1e-6)
