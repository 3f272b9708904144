"""``torchformers env``: what a bug report needs to say about the installation."""

from __future__ import annotations

import os
import platform
from importlib import metadata

# Required dependencies first, then the optional ones (extras) that change what works.
_PACKAGES = ("torch", "safetensors", "tokenizers", "huggingface_hub", "numpy", "jinja2", "tqdm",
             "gguf", "sentencepiece")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_devices() -> list[str]:
    """One line per accelerator torch can use, and the CPU threads it runs with."""
    import torch

    lines = [f"cpu: {platform.machine() or 'unknown'}, {os.cpu_count()} cores, torch threads "
             f"{torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()})"]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            lines.append(f"cuda:{index}: {properties.name}, {properties.total_memory / 2**30:.0f} GiB "
                         f"(CUDA {torch.version.cuda})")
    else:
        lines.append("cuda: not available")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        lines.append("mps: available")
    return lines


def describe_environment() -> str:
    from .. import __version__
    from ..packaged import cache_root

    lines = [f"torchformers {__version__}", f"python {platform.python_version()} ({platform.platform()})"]
    lines += [f"{package} {_version(package)}" for package in _PACKAGES]
    lines += describe_devices()
    lines.append(f"cache: {cache_root()}")
    return "\n".join(lines)
