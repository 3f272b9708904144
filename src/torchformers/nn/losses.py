"""The losses heads compute when given ``labels``, as the reference library computes them."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

IGNORE_INDEX = -100


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over labels that are not -100; with ``num_items_in_batch`` the sum
    divided by that count (what gradient accumulation needs to match one large batch)."""
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token loss: position t predicts label t+1; computed in float32."""
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].to(logits.device)
    return cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1), num_items_in_batch)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: Any) -> torch.Tensor:
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) by ``config.problem_type``,
    which is inferred and stored on first use when unset, as the reference does."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.mse_loss(logits, labels)
    if config.problem_type == "single_label_classification":
        return cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels)
