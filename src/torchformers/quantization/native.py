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

The op is compiled with the system's C++ compiler against torch's headers into the torchformers
cache (keyed by the source, flags, compiler and torch version) the first time a layer with int8
activations is built, and used where the CPU has AVX-512 (F, BW, VL) and VNNI. It runs on
torch's intra-op threads. ``TORCHFORMERS_NATIVE_KERNELS=0`` turns it off. Elsewhere
:func:`reference_product` gives the same numbers with torch operations, more slowly.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import torch

from ..packaged import cache_root

logger = logging.getLogger(__name__)

BLOCK = 32  # input features per activation scale
MAX_FEATURES = 1024 * BLOCK  # the kernel's per-row scratch (kMaxBlocks in int8_dot.cpp)
_SOURCE = os.path.join(os.path.dirname(__file__), "int8_dot.cpp")
# The instruction sets are named rather than -march=native, so a library built on one machine
# runs on any machine with them (the cache may be shared).
_FLAGS = ("-O3", "-std=c++17", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mfma", "-fopenmp",
          "-shared", "-fPIC", "-w")
_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
# None until the first try to load the kernel; then whether the op is there.
_loaded: bool | None = None
_loading = threading.Lock()


def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return all(flag in flags for flag in _CPU_FLAGS)
    except OSError:
        pass
    return False


def _compile_command(compiler: str, output: str) -> list[str]:
    # The paths torch.utils.cpp_extension would give, without importing it (it needs setuptools).
    root = os.path.dirname(torch.__file__)
    torch_lib = os.path.join(root, "lib")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"
    includes = [f"-I{os.path.join(root, 'include')}", f"-I{os.path.join(root, 'include', 'torch', 'csrc', 'api', 'include')}"]
    return [compiler, *_FLAGS, abi, *includes, _SOURCE, f"-L{torch_lib}", "-lc10", "-ltorch_cpu",
            f"-Wl,-rpath,{torch_lib}", "-o", output]


def _build(compiler: str) -> str:
    """The path of the compiled library, compiling it into the cache unless it is there."""
    with open(_SOURCE, "rb") as source:
        code = source.read()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    identity = [code.decode(), " ".join(_compile_command(compiler, "")), version, torch.__version__, sys.version]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    directory = os.path.join(cache_root(), "kernels")
    target = os.path.join(directory, f"int8_dot-{key}.so")
    if os.path.exists(target):
        return target
    os.makedirs(directory, exist_ok=True)
    # Compile to a temporary name in the same directory, then rename: other processes never
    # load a half-written library.
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        subprocess.run(_compile_command(compiler, temporary), check=True, capture_output=True, text=True,
                       timeout=600)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def load_kernel() -> bool:
    """Build and load the op unless done; whether it can run here (the reason it cannot is logged once)."""
    global _loaded
    with _loading:  # the op may be registered once only, whichever thread builds the first layer
        if _loaded is None:
            _loaded = _load()
    return _loaded


def _load() -> bool:
    if os.environ.get("TORCHFORMERS_NATIVE_KERNELS", "1") == "0":
        logger.info("torchformers: native int8 kernels turned off by TORCHFORMERS_NATIVE_KERNELS=0.")
        return False
    if not _cpu_has_vnni():
        logger.info("torchformers: this CPU lacks AVX-512 VNNI; int8 activations run as torch operations.")
        return False
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        logger.warning("torchformers: no C++ compiler found (c++, g++ or $CXX); int8 activations run as torch "
                       "operations, more slowly.")
        return False
    try:
        torch.ops.load_library(_build(compiler))
    except (OSError, subprocess.SubprocessError) as error:
        details = getattr(error, "stderr", "") or error
        logger.warning("torchformers: building the int8 kernel failed (%s); int8 activations run as torch "
                       "operations, more slowly.", details)
        return False
    torch.library.register_fake("torchformers::int8_activation_linear")(_product_shape)
    return True


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
    if _loaded and x.is_cpu:
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
