"""Quantized products with int8 activations: a small C++ kernel, compiled on first use, and the
same arithmetic in torch where the kernel cannot run.

Why our own kernel: llama.cpp quantizes each row it multiplies to int8 in blocks of 32 and
multiplies integer codes with integer dot-product instructions (AVX-512 VNNI: 64 byte products
per instruction). PyTorch ships no kernel that does this with per-group weight scales: its int4
CPU kernel takes bfloat16 rows, ``torch._int_mm`` has no scales, and its dynamically quantized
linear layers take per-channel int8 weights only. ``int8_dot.cpp`` (about 250 lines) fills the
gap as the op ``torchformers::int8_activation_linear``; its header gives the arithmetic.
Measured on a 2-core AVX-512 CPU, weights read from memory: a 30 MB Q8_0 output layer in
1.04-1.18 ms against 1.86-2.08 ms for PyTorch's int4 kernel on two planes, and a 64-row prompt
through a 3072 x 576 int4 layer in 1.2 against 1.7 ms; a decoder's small layers are bound by
memory either way (the same time as PyTorch's kernel).

The op is compiled by ``torchformers.native`` with the system's C++ compiler against torch's
headers into the torchformers cache (keyed by the source, flags, compiler and versions) the first time a layer with int8
activations is built, and used where the CPU has AVX-512 (F, BW, VL) and VNNI. It runs on
torch's intra-op threads. ``TORCHFORMERS_NATIVE_KERNELS=0`` turns it off. Elsewhere
:func:`reference_product` gives the same numbers with torch operations, more slowly.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from ..native import NativeKernel

BLOCK = 32  # input features per activation scale
MAX_FEATURES = 1024 * BLOCK  # the kernel's per-row scratch (kMaxBlocks in int8_dot.cpp)


def _register_fake() -> None:
    torch.library.register_fake("torchformers::int8_activation_linear")(_product_shape)


KERNEL = NativeKernel(
    "int8", os.path.join(os.path.dirname(__file__), "int8_dot.cpp"),
    flags=("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma"),
    needed_cpu_flags=("avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
    fallback="int8 activations run as torch operations, more slowly", on_load=_register_fake,
)


def load_kernel() -> bool:
    """Build and load the op unless done; whether it can run here (the reason it cannot is logged once)."""
    return KERNEL.load()


def kernel_fits(in_features: int, group_size: int) -> bool:
    """Whether the kernel takes a layer of this shape (it may still be unavailable on the machine)."""
    return in_features % BLOCK == 0 and group_size % BLOCK == 0 and in_features <= MAX_FEATURES


def _product_shape(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                   group_size: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


# -- the product -------------------------------------------------------------------------------
def product(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
            group_size: int) -> torch.Tensor:
    """``x`` (..., in) times a quantized weight's transpose, with ``x`` quantized to int8 in blocks
    of 32, in ``x``'s dtype.

    ``weight`` is the kernel layout: int4 (``zero`` given), uint8 (out, in / 2) with two codes
    per byte, the even input feature in the high nibble; int8, uint8 (out, in) holding code + 128.
    ``scale`` and ``zero``: bfloat16 (out, in / group_size). Layers call :func:`load_kernel`
    when they get their codes, so compiled graphs find the op loaded.
    """
    if KERNEL.loaded and x.is_cpu:
        return torch.ops.torchformers.int8_activation_linear(x, weight, scale, zero, group_size)
    if not x.is_cpu and not torch.compiler.is_compiling():
        _warn_once(x.device.type)
    return reference_product(x, weight, scale, zero, group_size)


@functools.cache
def _warn_once(device_type: str) -> None:
    warnings.warn(
        f"int8 activations have a kernel on CPUs only; on {device_type} each product dequantizes its weight "
        "(slow). Load the model with activations='float' for that device.", stacklevel=3,
    )


def offset_codes(codes: torch.Tensor) -> torch.Tensor:
    """int8 weight codes as the kernel reads them: code + 128, as uint8 (its dot products take unsigned weights)."""
    return (codes.to(torch.int16) + 128).to(torch.uint8)


def signed_codes(offset: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`offset_codes`."""
    return (offset.to(torch.int16) - 128).to(torch.int8)


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (float, integer-valued, ..., in) and block scales (..., in / 32) of ``x``, as the kernel
    rounds them: the scale is the block's largest magnitude over 127, the codes ``x * (1 / scale)``
    rounded half to even."""
    blocks = x.to(torch.float32).reshape(*x.shape[:-1], -1, BLOCK)
    scale = blocks.abs().amax(-1) / 127
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    return (blocks * inverse[..., None]).round().reshape(x.shape), scale


def reference_product(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                      group_size: int) -> torch.Tensor:
    """What the kernel computes, with torch operations (float32 sums in another order)."""
    from .linear import dequantize_weight, unpack_nibbles

    codes, activation_scale = quantize_activations(x)
    dequantized_x = (codes.reshape(*x.shape[:-1], -1, BLOCK) * activation_scale[..., None]).reshape(x.shape)
    weight_codes = signed_codes(weight) if zero is None else unpack_nibbles(weight)
    dense = dequantize_weight(weight_codes, scale, zero, torch.float32)
    return (dequantized_x @ dense.t()).to(x.dtype)
