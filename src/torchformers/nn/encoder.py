"""Pieces every bidirectional (BERT-style) encoder shares, whatever its families call them.

BERT, RoBERTa, XLM-RoBERTa and DistilBERT differ in parameter names and in their
embeddings and heads; the attention over plain query/key/value projections, the padding
mask, the stack of layers (with ``output_hidden_states``, ``output_attentions`` and
gradient checkpointing) and chunked feed-forwards are the same and live here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attend, build_attention_mask
from .fused import fused_linear


def padding_mask(attention_mask: torch.Tensor | None, embeddings: torch.Tensor) -> torch.Tensor | None:
    """The (batch, 1, query, key) mask that hides padding keys; ``None`` when nothing is padded."""
    batch, length = embeddings.shape[:2]
    return build_attention_mask(
        attention_mask, batch_size=batch, query_length=length, past_length=0, causal=False,
        device=embeddings.device,
    )


def self_attention(
    hidden_states: torch.Tensor,
    query: nn.Linear,
    key: nn.Linear,
    value: nn.Linear,
    num_heads: int,
    mask: torch.Tensor | None,
    *,
    implementation: str,
    dropout: float = 0.0,
    output_attentions: bool = False,
    first_token_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bidirectional multi-head attention of ``hidden_states`` over itself.

    Returns the heads' outputs merged back to (batch, seq, hidden), before any output
    projection, and the attention weights when ``output_attentions`` (else ``None``).
    With ``first_token_only`` only the first position asks (its keys and values are still
    every position's): seq is then 1.
    """
    batch, length, _ = hidden_states.shape
    shape = (batch, length, num_heads, -1)
    queries = hidden_states[:, :1] if first_token_only else hidden_states
    if first_token_only and mask is not None:
        mask = mask[:, :, :1]
    q = fused_linear(queries, query).view(batch, queries.shape[1], num_heads, -1).transpose(1, 2)
    k = fused_linear(hidden_states, key).view(shape).transpose(1, 2)
    v = fused_linear(hidden_states, value).view(shape).transpose(1, 2)
    output, weights = attend(
        q, k, v, mask,
        scaling=q.shape[-1] ** -0.5,
        causal=False,
        dropout=dropout,
        implementation=implementation,
        output_attentions=output_attentions,
    )
    return output.reshape(batch, queries.shape[1], -1), weights


def feed_forward_in_chunks(
    feed_forward: Callable[[torch.Tensor], torch.Tensor], hidden_states: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """``feed_forward(hidden_states)`` computed ``chunk_size`` positions at a time when it is set
    (``config.chunk_size_feed_forward``): the same numbers with a smaller peak memory."""
    if not chunk_size or hidden_states.shape[1] <= chunk_size:
        return feed_forward(hidden_states)
    return torch.cat([feed_forward(chunk) for chunk in hidden_states.split(chunk_size, dim=1)], dim=1)


class EncoderStack(nn.Module):
    """The encoder's layers, kept in ``self.layer`` (the checkpoints' name).

    Each layer maps ``(hidden_states, mask, output_attentions, first_token_only)`` to
    ``(hidden_states, attention weights or None)``. ``forward`` returns the last hidden
    states, and when asked the input of every layer plus the last output (``num_layers + 1``
    tensors) and every layer's attention weights. ``first_token_only`` computes the last
    layer for the first position alone: all that a pooler or a [CLS] classifier reads, and
    in a 12-layer model about 7% of the work (more in shallower ones).
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)
        self.gradient_checkpointing = False
        self.checkpoint_options: dict[str, Any] = {"use_reentrant": False}

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        if output_hidden_states or output_attentions:
            first_token_only = False  # those outputs need every position of the last layer
        checkpointing = self.gradient_checkpointing and self.training
        all_hidden_states: tuple[torch.Tensor, ...] = ()
        all_attentions: tuple[torch.Tensor, ...] = ()
        last = len(self.layer) - 1
        for index, layer in enumerate(self.layer):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            arguments = (hidden_states, mask, output_attentions, first_token_only and index == last)
            if checkpointing:
                hidden_states, weights = checkpoint(layer, *arguments, **self.checkpoint_options)
            else:
                hidden_states, weights = layer(*arguments)
            if output_attentions:
                all_attentions += (weights,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states or None, all_attentions or None

