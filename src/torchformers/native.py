"""Building and loading torchformers' C++ kernels: each is one source file of torch ops, compiled on
first use with the system's C++ compiler against torch's headers.

A library is cached under ``cache_root()/kernels``, keyed by its source, flags, compiler and the
torch and Python versions, written under a temporary name and renamed (another process never
loads a half-written file), and loaded once per process under a lock. ``TORCHFORMERS_NATIVE_KERNELS=0``
turns every kernel off. Where a kernel cannot run (the CPU lacks its instructions, no compiler,
a failed build), :meth:`NativeKernel.load` says why once and returns False, and its callers keep
their torch route.

The kernels: ``quantization/int8_dot.cpp`` (products with int8 activations) and
``nn/rows_product.cpp`` (float32 products of a batch's decode step).
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
from collections.abc import Callable

import torch

from .packaged import cache_root

logger = logging.getLogger(__name__)

# Instruction sets are named rather than -march=native, so a library built on one machine runs on
# any machine with them (the cache may be shared).
COMMON_FLAGS = ("-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC", "-w")
_loading = threading.Lock()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def compile_command(compiler: str, source: str, flags: tuple[str, ...], output: str) -> list[str]:
    # The paths torch.utils.cpp_extension would give, without importing it (it needs setuptools).
    root = os.path.dirname(torch.__file__)
    torch_lib = os.path.join(root, "lib")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"
    includes = [f"-I{os.path.join(root, 'include')}", f"-I{os.path.join(root, 'include', 'torch', 'csrc', 'api', 'include')}"]
    return [compiler, *COMMON_FLAGS, *flags, abi, *includes, source, f"-L{torch_lib}", "-lc10", "-ltorch_cpu",
            f"-Wl,-rpath,{torch_lib}", "-o", output]


def build(compiler: str, source: str, flags: tuple[str, ...]) -> str:
    """The path of ``source``'s compiled library, compiling it into the cache unless it is there."""
    with open(source, "rb") as handle:
        code = handle.read()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    identity = [code.decode(), " ".join(compile_command(compiler, source, flags, "")), version, torch.__version__,
                sys.version]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    directory = os.path.join(cache_root(), "kernels")
    name = os.path.splitext(os.path.basename(source))[0]
    target = os.path.join(directory, f"{name}-{key}.so")
    if os.path.exists(target):
        return target
    os.makedirs(directory, exist_ok=True)
    logger.info("torchformers: compiling %s into %s (once per machine: about 10 s)", os.path.basename(source), directory)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        subprocess.run(compile_command(compiler, source, flags, temporary), check=True, capture_output=True,
                       text=True, timeout=600)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


class NativeKernel:
    """One C++ source file of torch ops, loaded on the first call of :meth:`load`.

    ``name`` names the kernel and ``fallback`` what runs without it, in the messages that say
    why it cannot run; ``flags`` are its compiler's instruction-set flags and ``needed_cpu_flags``
    the /proc/cpuinfo flags they need; ``on_load`` runs once the ops are registered (to register
    their fake implementations for compiled graphs).
    """

    def __init__(self, name: str, source: str, flags: tuple[str, ...], needed_cpu_flags: tuple[str, ...],
                 fallback: str, on_load: Callable[[], None] | None = None) -> None:
        self.name, self.source, self.flags = name, source, flags
        self.needed_cpu_flags, self.fallback, self.on_load = needed_cpu_flags, fallback, on_load
        self.loaded: bool | None = None  # None until the first load(); then whether the ops are there

    def load(self) -> bool:
        """Build (or find in the cache) and load the ops unless done; whether they can run here."""
        with _loading:  # the ops may be registered once only, whichever thread asks first
            if self.loaded is None:
                self.loaded = self._load()
                if self.loaded and self.on_load is not None:
                    self.on_load()
        return self.loaded

    def cpu_can_run(self) -> bool:
        """Whether this CPU has the instructions the kernel is built for."""
        return all(flag in cpu_flags() for flag in self.needed_cpu_flags)

    def _load(self) -> bool:
        if os.environ.get("TORCHFORMERS_NATIVE_KERNELS", "1") == "0":
            logger.info("torchformers: native kernels turned off by TORCHFORMERS_NATIVE_KERNELS=0; %s.", self.fallback)
            return False
        if not self.cpu_can_run():
            logger.info("torchformers: this CPU lacks %s for the %s kernel; %s.", ", ".join(self.needed_cpu_flags),
                        self.name, self.fallback)
            return False
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
        if compiler is None:
            logger.warning("torchformers: no C++ compiler found (c++, g++ or $CXX) for the %s kernel; %s.",
                           self.name, self.fallback)
            return False
        try:
            torch.ops.load_library(build(compiler, self.source, self.flags))
        except (OSError, subprocess.SubprocessError) as error:
            details = getattr(error, "stderr", "") or error
            logger.warning("torchformers: building the %s kernel failed (%s); %s.", self.name, details, self.fallback)
            return False
        return True
