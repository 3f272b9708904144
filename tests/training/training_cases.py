"""Tiny model configs and synthetic datasets shared by the training tests."""

from __future__ import annotations

import torch

TINY_BERT = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=16, num_labels=2)
TINY_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
MARKER = 3  # the token whose presence the classifier learns to detect


def marker_rows(count: int, seed: int, length: int = 12) -> dict[str, list]:
    """Columns of a classification set: label 1 iff the marker token occurs somewhere in the row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY_BERT["vocab_size"], (count, length), generator=generator)
    labels = torch.randint(0, 2, (count,), generator=generator)
    positions = torch.randint(1, length, (count,), generator=generator)
    ids[labels == 1, positions[labels == 1]] = MARKER
    ids[:, 0] = 2
    return {"input_ids": ids.tolist(), "label": labels.tolist()}


def as_rows(columns: dict[str, list]) -> list[dict]:
    """Columns as a list of row dicts (a plain torch-style dataset)."""
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def lm_rows(count: int, seed: int, length: int = 12, vocab: int = TINY_LLAMA["vocab_size"]) -> list[dict]:
    """Causal-LM rows whose labels ignore a random share of positions."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (length,), generator=generator)
        labels = ids.clone()
        labels[torch.rand(length, generator=generator) < 0.3] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def max_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max((first[name].float() - second[name].float()).abs().max().item() for name in first)
