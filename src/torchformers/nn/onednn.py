"""oneDNN's float32 matrix products on the CPU: for layers that train, and for a batch's decode steps.

``F.linear`` and its backward run float32 products on the CPU through MKL, which on AMD
processors takes generic code paths: on BERT-base shapes (1024 x 768 x 3072 and its
transposes) oneDNN's kernels are 20-35% faster on this project's machines, in the forward
product and in both products of the backward. :func:`trainable_linear` computes all three
with oneDNN; the results agree with ``F.linear`` to float32 rounding (they are sums in
another order). Inference goes through the fused kernels of ``fused.py``, which need no
backward.
"""

from __future__ import annotations

import torch

# Set to False to train with F.linear everywhere (to compare, or to rule this route out).
ONEDNN_TRAINING = True
_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if _LINEAR is not None else None
HAS_ONEDNN_LINEAR = _LINEAR is not None
CAN_PACK_WEIGHTS = _REORDER is not None


def _float32_cpu_product(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN is there and ``x @ weight.T`` is a plain CPU float32 product (autocast would change its dtype)."""
    return (
        HAS_ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and not torch.is_autocast_enabled("cpu")
    )


def needs_backward(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors`` (None entries, an absent bias, are skipped)."""
    return torch.is_grad_enabled() and any(tensor is not None and tensor.requires_grad for tensor in tensors)


def onednn_trains(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` needs a backward and oneDNN should compute it (CPU float32, no autocast)."""
    return ONEDNN_TRAINING and needs_backward(x, weight) and _float32_cpu_product(x, weight)


def onednn_infers(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` needs no backward and oneDNN can compute it (CPU float32, no autocast)."""
    return not needs_backward(x, weight) and _float32_cpu_product(x, weight)


def inference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed by oneDNN, where :func:`onednn_infers` holds."""
    return _LINEAR(x, weight, bias, "none", [], "")


def pack_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """An (out, in) float32 CPU weight copied into oneDNN's blocked layout for products with ``rows`` rows.

    The copy is an opaque oneDNN tensor, the same size as the weight, that only
    :func:`packed_linear` reads. On a batch's decode step (8 rows of 576 to 1536 features)
    oneDNN multiplies by it about 1.6x faster than by the plain weight, whose layout it
    would otherwise reorder on the fly.
    """
    return _REORDER(weight.detach(), rows)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a weight packed by :func:`pack_weight` (no backward)."""
    return _LINEAR(x, packed, bias, "none", [], "")


def _product(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``rows @ weight.T`` for a 2-D ``rows`` and an (out, in) ``weight``, both contiguous."""
    return _LINEAR(rows, weight, None, "none", [], "")


class _TrainableLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _LINEAR(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # x's gradient is grad @ weight: a product with the (in, out) transpose as the "weight".
            grad_x = _product(grad_rows, weight.t().contiguous()).view(*grad_output.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            # The weight's gradient is grad.T @ x: grad.T's rows times x's columns.
            x_columns = x.reshape(-1, x.shape[-1]).t().contiguous()
            grad_weight = _product(grad_rows.t().contiguous(), x_columns)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def trainable_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with its forward and backward products computed by oneDNN.

    Call it where :func:`onednn_trains` holds; ``weight`` is (out_features, in_features).
    """
    return _TrainableLinear.apply(x, weight, bias)
