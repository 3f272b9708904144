"""Linear layers with the bias, activation or residual add fused in, for CPU inference (encoders).

On the CPU, ``F.linear`` runs float32 through MKL and then adds the bias, applies the
activation and adds the residual in separate passes over the output. When no gradient is
needed, :func:`fused_linear` calls oneDNN's linear instead, which writes the output once
with all of them applied. On BERT-base shapes its float32 kernels are 10-20% faster than
MKL's (on AMD CPUs MKL takes generic code paths), and bfloat16 saves the extra passes.
Training takes oneDNN's products too, through the autograd function of ``onednn.py``
(without the fused post-ops, which would need their own backward). Other devices, other
dtypes and layers that are not a plain ``nn.Linear`` (wrapped, hooked) take the ordinary
path, with the same results up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedArgumentError
from .mlp import get_activation
from .onednn import HAS_ONEDNN_LINEAR, onednn_trains, trainable_linear

# Set to False to always use the ordinary path (to compare, or to rule the fused one out).
ONEDNN_LINEAR = True
# activation name in configs -> (oneDNN post-op, its algorithm)
_ONEDNN_ACTIVATIONS = {
    "gelu": ("gelu", "none"),  # exact (erf) GELU
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "relu": ("relu", ""),
}


def _plain_linear(layer: nn.Module) -> bool:
    """A bare ``nn.Linear`` whose forward may be replaced by a kernel call (no hooks to run)."""
    return type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks)


def _onednn_applies(x: torch.Tensor, layer: nn.Module) -> bool:
    return (
        ONEDNN_LINEAR
        and HAS_ONEDNN_LINEAR
        and _plain_linear(layer)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and layer.weight.dtype == x.dtype
        and not (torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad))
    )


def fused_linear(
    x: torch.Tensor, layer: nn.Module, activation: str | None = None, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """``activation(layer(x))``, or ``layer(x) + residual``: one of the two, not both.

    ``activation`` is a config's activation name (``hidden_act``); ``residual`` has the
    output's shape.
    """
    if activation is not None and residual is not None:
        raise UnsupportedArgumentError("fused_linear applies an activation or adds a residual, not both.")
    fused_activation = ("none", "") if activation is None else _ONEDNN_ACTIVATIONS.get(activation)
    if fused_activation is not None and _onednn_applies(x, layer):
        if residual is None:
            attr, algorithm = fused_activation
            return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [], algorithm)
        if residual.shape == (*x.shape[:-1], layer.out_features):
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual.to(x.dtype), layer.weight, layer.bias, "add")
    if _plain_linear(layer) and onednn_trains(x, layer.weight):
        output = trainable_linear(x, layer.weight, layer.bias)
    else:
        output = layer(x)
    if activation is not None:
        return get_activation(activation)(output)
    return output if residual is None else output + residual
