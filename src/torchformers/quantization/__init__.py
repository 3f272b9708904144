"""Quantized weight formats: weight-only int8/int4 linear layers (``linear.py``, ``quantizer.py``),
int8/int4 input embeddings (``embedding.py``) and GGUF blocks (``gguf.py``).

Names are imported on first use, so reading GGUF blocks does not import the model families.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "WeightOnlyConfig": "config",
    "Int8Linear": "linear",
    "Int4Linear": "linear",
    "QuantizedLinear": "linear",
    "QuantizedEmbedding": "embedding",
    "quantize": "quantizer",
}
__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'torchformers.quantization' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value
