"""Fixtures of the pipeline tests: tiny seeded checkpoints saved by the reference library with the
real MiniLM tokenizer files beside them, so both libraries' pipelines load the same directory.

Weights are seeded noise large enough that predictions differ clearly between labels and
tokens, so identical labels and spans are meaningful, not float luck.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
CHAT_TEMPLATE = json.loads((Path(__file__).parents[1] / "fixtures" / "smollm2_chat_template.json").read_text())[
    "template"]

# A BERT small enough to build in milliseconds, over MiniLM's 30522-token vocabulary.
TINY_BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=512)
TINY_LLAMA = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=101, eos_token_id=102,
                  pad_token_id=0, tie_word_embeddings=False)
LABELS = {
    "sequence_classification": ["negative", "neutral", "positive"],
    "token_classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
    "nli": ["contradiction", "neutral", "entailment"],
}
# Seeds picked so the random heads disagree across tokens (a random token head often gives one label
# to every token): the token head tags a mix of B-PER, I-LOC and O.
SEEDS = {"token_classification": 2}
REFERENCE_CLASSES = {
    "sequence_classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
    "masked_lm": "BertForMaskedLM",
    "nli": "BertForSequenceClassification",
    "causal_lm": "LlamaForCausalLM",
}


def seeded_noise_(model: torch.nn.Module, seed: int, scale: float) -> None:
    """Every parameter set to seeded noise (norm weights around one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * scale
            is_norm = "norm" in name.lower()
            param.copy_(noise + (1.0 if is_norm and name.endswith("weight") else 0.0))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, minilm_dir) -> Callable[[str], Path]:
    """``checkpoint(kind)``: a directory with a seeded reference model of that kind and the MiniLM
    tokenizer files (and, for the causal LM, a chat template), built once per session."""
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind in built:
            return built[kind]
        if kind == "causal_lm":
            config = transformers.LlamaConfig(**TINY_LLAMA)
            scale = 1.0  # peaked next-token logits: greedy choices do not hinge on rounding
        else:
            labels = LABELS.get(kind, [])
            config = transformers.BertConfig(
                **TINY_BERT, **({"id2label": dict(enumerate(labels)),
                                 "label2id": {label: i for i, label in enumerate(labels)}} if labels else {}))
            scale = 0.3
        model = getattr(transformers, REFERENCE_CLASSES[kind])(config).eval()
        seeded_noise_(model, seed=SEEDS.get(kind, 0), scale=scale)
        directory = tmp_path_factory.mktemp(kind)
        model.save_pretrained(directory)
        for name in TOKENIZER_FILES:
            shutil.copy(Path(minilm_dir, name), directory / name)
        if kind == "causal_lm":
            settings = json.loads((directory / "tokenizer_config.json").read_text())
            settings["chat_template"] = CHAT_TEMPLATE
            (directory / "tokenizer_config.json").write_text(json.dumps(settings))
        built[kind] = directory
        return directory

    return get


@pytest.fixture(scope="session")
def pipelines(checkpoint) -> Callable[..., tuple]:
    """``pipelines(task, kind, **options)`` -> (ours, reference): both libraries' pipelines on one directory."""
    import torchformers

    def make(task: str, kind: str, **options):
        directory = str(checkpoint(kind))
        ours = torchformers.pipeline(task, model=directory, device="cpu", **options)
        reference = transformers.pipeline(task, model=directory, device="cpu", **options)
        return ours, reference

    return make


def assert_same_answers(ours, reference, atol: float = 1e-4, path: str = "answer") -> None:
    """Equal structure, labels, words and offsets; float scores within ``atol``."""
    if isinstance(reference, dict):
        assert isinstance(ours, dict) and list(ours) == list(reference), f"{path}: keys {list(ours)} != {list(reference)}"
        for key in reference:
            assert_same_answers(ours[key], reference[key], atol, f"{path}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(reference), f"{path}: {ours!r} != {reference!r}"
        for index, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
            assert_same_answers(mine, theirs, atol, f"{path}[{index}]")
    elif isinstance(reference, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and ours.shape == reference.shape, path
        torch.testing.assert_close(ours.float(), reference.float(), atol=atol, rtol=0, msg=path)
    elif isinstance(reference, np.integer):
        assert type(ours) is int and ours == int(reference), f"{path}: {ours!r} != {reference!r}"
    elif isinstance(reference, (float, np.floating)):
        assert isinstance(ours, float), f"{path}: {type(ours).__name__} is not a float"
        assert abs(ours - float(reference)) <= atol, f"{path}: {ours} != {float(reference)}"
    else:
        assert type(ours) is type(reference) and ours == reference, f"{path}: {ours!r} != {reference!r}"
