"""Float32 products of a batch's decode step (2 to 16 rows) through our own packed layout and kernel.

Why our own kernel: at eight rows a decode step is bound by reading the weights, and the best
kernel PyTorch ships for it, oneDNN's on a weight packed for the row count, streams them at 16
to 20 GB/s. ``rows_product.cpp`` stores each group of 48 output features input-feature-major, so
a thread reads its share of the weight as one sequential run and keeps eight rows' sums in
registers. Measured on a 2-core AVX-512 CPU over the 121 products of a llama-135m decode step
(540 MB of weights, 8 rows): 18.3-22.2 ms against 26.3-34.8 ms for oneDNN's packed kernel.

The layout is a plain float32 tensor (groups, in_features, 48), zero-padded in the last group.
Results agree with ``F.linear``'s to float32 rounding (each output is one sum over the input
features in order). The kernel needs AVX-512F; elsewhere, or with ``TORCHFORMERS_NATIVE_KERNELS=0``,
:func:`available` is False and callers keep oneDNN's packing (nn.linear.packed_product).
"""

from __future__ import annotations

import os

import torch

from ..native import NativeKernel

GROUP = 48  # output features per packed group (kGroup in rows_product.cpp)


def _register_fakes() -> None:
    torch.library.register_fake("torchformers::pack_rows_weight")(
        lambda weights: weights[0].new_empty(-(-sum(w.shape[0] for w in weights) // GROUP), weights[0].shape[1], GROUP))
    torch.library.register_fake("torchformers::packed_rows_linear")(
        lambda x, packed, out_features, bias: x.new_empty(*x.shape[:-1], out_features))


KERNEL = NativeKernel(
    "batch decode", os.path.join(os.path.dirname(__file__), "rows_product.cpp"),
    flags=("-mavx512f", "-mfma"), needed_cpu_flags=("avx512f",),
    fallback="a batch's decode steps use oneDNN's packed weights", on_load=_register_fakes,
)


def available() -> bool:
    """Whether the kernel runs here; the first call builds it (about 10 s, once per machine: it is cached)."""
    return KERNEL.load()


def pack(*weights: torch.Tensor) -> torch.Tensor:
    """(out, in) float32 CPU weights, any strides, stacked along their outputs in the kernel's layout
    (one copy: no concatenated temporary)."""
    return torch.ops.torchformers.pack_rows_weight([weight.detach() for weight in weights])


def product(x: torch.Tensor, packed: torch.Tensor, out_features: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for float32 ``x`` (..., in) and ``packed = pack(weight)`` (no backward)."""
    return torch.ops.torchformers.packed_rows_linear(x, packed, out_features, bias)
