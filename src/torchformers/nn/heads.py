"""What task heads do to a base model's per-token outputs, shared by every family.

Reading one row per sequence (the last real token for decoders), splitting span scores
for question answering, and folding multiple-choice inputs into the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError, UnsupportedArgumentError


def pool_last_token(logits: torch.Tensor, input_ids: torch.Tensor | None, pad_token_id: int | None) -> torch.Tensor:
    """Each row of (batch, seq, ...) ``logits`` at its rightmost non-padding token.

    This is how decoder models classify a sequence. Works for left and right padding alike.
    Without ``pad_token_id`` (or with ``inputs_embeds`` instead of ids) the last position is
    read, as in the reference; a batch of several rows then needs ``pad_token_id``.
    """
    batch = logits.shape[0]
    if pad_token_id is None and batch != 1:
        raise UnsupportedArgumentError(
            "A batch of more than one sequence needs config.pad_token_id to find each sequence's last token."
        )
    if pad_token_id is None or input_ids is None:
        last_token = torch.full((batch,), -1, device=logits.device)
    else:
        not_pad = (input_ids != pad_token_id).to(logits.device, torch.int32)
        positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
        last_token = (positions * not_pad).argmax(-1)
    return logits[torch.arange(batch, device=logits.device), last_token]


def check_span_labels(config: Any) -> None:
    """A span head predicts a start and an end per token: it needs ``num_labels == 2``."""
    if config.num_labels != 2:
        raise ConfigError(
            f"{type(config).__name__}: question answering predicts a start and an end per token, so num_labels "
            f"must be 2, got {config.num_labels}."
        )


def span_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, seq, 2) span scores -> start and end scores, each (batch, seq)."""
    start_logits, end_logits = logits.split(1, dim=-1)
    return start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()


def flatten_choices(tensor: torch.Tensor | None, trailing_dims: int = 1) -> torch.Tensor | None:
    """(batch, num_choices, ...) -> (batch * num_choices, ...) for multiple-choice heads."""
    if tensor is None:
        return None
    return tensor.reshape(-1, *tensor.shape[tensor.ndim - trailing_dims:])
