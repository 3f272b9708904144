"""``torchformers env``: what a bug report needs to say about the installation."""

from __future__ import annotations

import platform
from importlib import metadata


def describe_environment() -> str:
    import torch

    lines = [f"torchformers {metadata.version('torchformers')}", f"python {platform.python_version()}"]
    for package in ("torch", "safetensors", "tokenizers", "huggingface_hub", "numpy"):
        try:
            lines.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package} not installed")
    lines.append(f"cuda available: {torch.cuda.is_available()}")
    return "\n".join(lines)
