"""Attention: mask construction and the one attention function every family calls.

Masks are boolean, ``True`` where a query may attend. Two implementations:
``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``, the default) and
``"eager"`` (explicit softmax, which can also return the attention weights).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import UnsupportedArgumentError

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(name: str | None) -> str:
    """The implementation to use; ``None`` means ``"sdpa"``. Unknown names raise."""
    if name is None:
        return "sdpa"
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise UnsupportedArgumentError(
            f"attn_implementation={name!r} is not supported; use one of {ATTENTION_IMPLEMENTATIONS}."
        )
    return name


def build_attention_mask(
    attention_mask: torch.Tensor | None,
    *,
    batch_size: int,
    query_length: int,
    past_length: int,
    sliding_window: int | None = None,
    causal: bool = True,
    device: torch.device,
) -> torch.Tensor | None:
    """The (batch, 1, query, key) boolean mask, or ``None`` when plain causal attention does.

    ``attention_mask`` is the user's 2-D padding mask over all keys (past and new) with 1 for
    real tokens. A padding query may be left with no key at all, as in the reference
    library: SDPA then returns zeros for it (torch >= 2.5) and the eager softmax spreads
    evenly over the keys, so padded positions match the reference in both implementations.
    This matters for losses over left-padded batches, where the last padding position
    predicts the first real token.
    """
    if attention_mask is not None and attention_mask.ndim != 2:
        raise UnsupportedArgumentError(
            f"attention_mask must be 2-D (batch, key_length) with 1 for real tokens, got shape "
            f"{list(attention_mask.shape)}; prepared 4-D masks are not supported."
        )
    key_length = past_length + query_length
    has_padding = attention_mask is not None and not bool(attention_mask.all())
    window_matters = sliding_window is not None and key_length > sliding_window
    if not has_padding and not window_matters:
        if not causal or query_length == 1 or past_length == 0:
            return None  # the attention call uses is_causal for the prefill
    query_positions = torch.arange(past_length, key_length, device=device)[:, None]
    key_positions = torch.arange(key_length, device=device)[None, :]
    allowed = key_positions <= query_positions if causal else torch.ones(
        query_length, key_length, dtype=torch.bool, device=device
    )
    if sliding_window is not None:
        allowed = allowed & (key_positions > query_positions - sliding_window)
    allowed = allowed[None, None].expand(batch_size, 1, query_length, key_length)
    if has_padding:
        keys_real = attention_mask[:, None, None, -key_length:].to(device=device, dtype=torch.bool)
        allowed = allowed & keys_real
    return allowed


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat key/value heads (batch, kv_heads, seq, dim) so each query head has its own."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq, dim = hidden_states.shape
    expanded = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq, dim)
    return expanded.reshape(batch, kv_heads * n_rep, seq, dim)


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    scaling: float,
    causal: bool = True,
    dropout: float = 0.0,
    implementation: str = "sdpa",
    output_attentions: bool = False,
    upcast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over (batch, heads, seq, head_dim) tensors; returns (batch, seq, heads, head_dim).

    Grouped-query attention (fewer key/value heads) is handled here. ``mask=None`` with
    ``causal=True`` means a causal prefill with no past; with one query it means "attend to
    everything". Weights are returned only by the eager implementation. ``upcast=True``
    computes the scores and softmax in float32 whatever the inputs' dtype (GPT-2's
    ``reorder_and_upcast_attn``).
    """
    n_rep = query.shape[1] // key.shape[1]
    if implementation == "eager" or output_attentions:
        key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
        if upcast:
            scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scaling
        else:
            scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if mask is None and causal and query.shape[2] > 1:
            mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        return torch.matmul(weights, value).transpose(1, 2), weights
    dtype = query.dtype
    if upcast and dtype != torch.float32:
        query, key, value = query.float(), key.float(), value.float()
    output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=mask is None and causal and query.shape[2] > 1,
        scale=scaling,
        enable_gqa=n_rep > 1,
    )
    return output.transpose(1, 2).to(dtype), None
