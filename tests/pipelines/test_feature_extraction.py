"""feature-extraction on the real all-MiniLM-L6-v2: the reference pipeline's token embeddings, and
sentence embeddings equal to mean pooling plus normalisation of the reference model's states."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import assert_same_answers

import torchformers

SENTENCES = ["A man is eating food.", "The girl is carrying a baby.", "Hello!",
             "Der schnelle braune Fuchs springt über den faulen Hund."]


@pytest.fixture(scope="module")
def extractors(minilm_dir):
    ours = torchformers.pipeline("feature-extraction", model=minilm_dir, device="cpu")
    reference = transformers.pipeline("feature-extraction", model=minilm_dir, device="cpu")
    return ours, reference


def test_token_embeddings_equal_the_reference(extractors):
    ours, reference = extractors
    for sentence in SENTENCES:
        assert_same_answers(ours(sentence), reference(sentence))
    assert_same_answers(ours(SENTENCES[0], return_tensors=True), reference(SENTENCES[0], return_tensors=True))
    assert_same_answers(ours(SENTENCES), reference(SENTENCES))


def test_batched_token_embeddings_keep_each_texts_own_tokens(extractors):
    ours, _ = extractors
    assert_same_answers(ours(SENTENCES, batch_size=3), [ours(sentence) for sentence in SENTENCES], atol=1e-5)


def test_sentence_embeddings_are_normalised_mean_pooling(extractors, minilm_dir):
    ours, reference = extractors
    model, tokenizer = reference.model, reference.tokenizer
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)

    embedder = torchformers.pipeline("sentence-embedding", model=minilm_dir, device="cpu")
    for options, pipe in (({}, embedder), ({"pooling": "mean", "normalize": True}, ours)):
        got = torch.tensor(pipe(SENTENCES, batch_size=2, **options))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    pooled = ours(SENTENCES[0], pooling="mean", return_tensors=True)
    assert pooled.shape == (384,) and pooled.norm() > 1.5  # not normalised unless asked
