"""Writing small GGUF files for tests with the `gguf` package (a test dependency).

``write_gguf`` writes any metadata and tensors; ``write_model_gguf`` converts a reference
Llama-family model the way llama.cpp's converter does (its tensor names, its q/k row
permutation for ``llama`` files, its metadata keys), so both libraries can load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

K_TYPES = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
# Where each K type keeps its half-float scales (byte offsets in a block), from ggml-common.h.
K_HALF_OFFSETS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def _typed(value: Any) -> tuple[Any, V, V | None]:
    if isinstance(value, tuple):
        return value if len(value) == 3 else (*value, None)
    if isinstance(value, bool):
        return value, V.BOOL, None
    if isinstance(value, int):
        return value, V.UINT32, None
    if isinstance(value, float):
        return value, V.FLOAT32, None
    if isinstance(value, str):
        return value, V.STRING, None
    first = value[0] if len(value) else ""
    kind = V.STRING if isinstance(first, str) else V.FLOAT32 if isinstance(first, float) else V.INT32
    return list(value), V.ARRAY, kind


def write_gguf(path: Path, architecture: str, metadata: dict[str, Any] | None = None,
               tensors: dict[str, Any] | None = None, alignment: int | None = None) -> Path:
    """A GGUF file. Metadata values are plain Python values or ``(value, GGUFValueType[, item type])``;
    tensors are float arrays (stored F32) or ``(uint8 blocks or float array, GGMLQuantizationType)``."""
    writer = gguf.GGUFWriter(str(path), architecture)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, value in (metadata or {}).items():
        writer.add_key_value(key, *_typed(value))
    for name, tensor in (tensors or {}).items():
        array, qtype = tensor if isinstance(tensor, tuple) else (tensor, Q.F32)
        if array.dtype == np.uint8:
            writer.add_tensor(name, array, raw_dtype=qtype)
        elif qtype in (Q.F32, Q.F16):
            writer.add_tensor(name, array.astype(np.float32 if qtype == Q.F32 else np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def random_k_blocks(qtype: Q, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random blocks of a K type, byte by byte, with finite half-float scales."""
    rng = np.random.default_rng(seed)
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
    for offset in K_HALF_OFFSETS[qtype]:
        halves = (rng.standard_normal(count) * 0.05).astype(np.float16)
        blocks[:, offset:offset + 2] = halves.view(np.uint8).reshape(count, 2)
    return blocks


_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_name(key: str) -> str:
    """llama.cpp's name of a Llama-family state-dict key."""
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    module, _, kind = key.rpartition(".")
    if module in top:
        return f"{top[module]}.{kind}"
    _, _, layer, rest = module.split(".", 3)
    return f"blk.{layer}.{_LAYER_NAMES[rest]}.{kind}"


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k permutation for ``llama`` files: each head's rotary halves interleaved."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_model_gguf(path: Path, model: torch.nn.Module, architecture: str, qtype: Q = Q.Q8_0,
                     name: str = "tiny", k_type: Q | None = None, extra: dict[str, Any] | None = None,
                     overrides: dict[str, Any] | None = None) -> Path:
    """``model`` (a reference Llama-family model) as llama.cpp writes it. Matrices are stored as
    ``qtype`` (quantized from the weights); with ``k_type``, the MLP matrices hold random blocks of
    that K type instead (gguf cannot quantize to K types). Norms and biases stay F32. ``overrides``
    replaces tensors by their GGUF name."""
    config = model.config
    arch = architecture
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    metadata: dict[str, Any] = {
        "general.name": name,
        f"{arch}.context_length": config.max_position_embeddings,
        f"{arch}.embedding_length": config.hidden_size,
        f"{arch}.block_count": config.num_hidden_layers,
        f"{arch}.feed_forward_length": config.intermediate_size,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv_heads,
        f"{arch}.attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        f"{arch}.rope.freq_base": float(config.rope_parameters["rope_theta"]),
        f"{arch}.rope.dimension_count": head_dim,
        f"{arch}.attention.key_length": head_dim,
        f"{arch}.attention.value_length": head_dim,
        f"{arch}.vocab_size": config.vocab_size,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.padding_token_id": 0,
        **(extra or {}),
    }
    tensors: dict[str, Any] = {}
    seed = 0
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        array = value.detach().float().numpy()
        if arch == "llama" and (".q_proj." in key or ".k_proj." in key):
            array = _permute(array, heads if ".q_proj." in key else kv_heads)
        name_in_file = gguf_name(key)
        if array.ndim == 1:
            tensors[name_in_file] = array
        elif k_type is not None and ".mlp." in key:
            rows, columns = array.shape
            blocks = random_k_blocks(k_type, rows * columns // 256, seed=seed)
            tensors[name_in_file] = (blocks.reshape(rows, -1), k_type)
            seed += 1
        else:
            tensors[name_in_file] = (array, qtype)
    return write_gguf(path, arch, metadata, {**tensors, **(overrides or {})})
