"""Tokenizers from GGUF metadata.

A GGUF file carries no ``tokenizer.json``: llama.cpp stores the vocabulary
(``tokenizer.ggml.tokens``), the merges, the token kinds and the special token ids as
metadata. Two kinds are rebuilt here as fast tokenizers, the way the reference library
converts them:

- ``gpt2``: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM...). The split pattern follows
  ``tokenizer.ggml.pre`` for the families that have their own.
- ``llama``: SentencePiece-style BPE with byte fallback (Llama 2, Mistral...). Files rarely
  list merges; they are recovered from the vocabulary and its scores.

Tokens marked *control* become special tokens and *user-defined* ones plain added tokens,
so both stay whole in text. The chat template and ``add_bos_token``/``add_eos_token`` come
along; the bos/eos/unk/pad ids reach the model's generation config through its config.
"""

from __future__ import annotations

import os
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from ..errors import TokenizerFileError, describe_path
from ..weights.gguf import GGUFFile, open_gguf
from .fast import PreTrainedTokenizerFast
from .slow.bpe import byte_alphabet

SPIECE_UNDERLINE = "\u2581"
# llama.cpp's token kinds (tokenizer.ggml.token_type).
CONTROL, USER_DEFINED = 3, 4

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_LETTERS_UPPER_FIRST = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LETTERS_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_TAIL = r"|\s*[\r\n]+|\s+(?!\S)|\s+"
# Pre-tokenizer split patterns, by the family name llama.cpp writes in tokenizer.ggml.pre. A
# family not listed (gpt2, smollm, ...) keeps GPT-2's own pattern inside the byte-level step.
_CL100K = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*" + _TAIL
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*" + _TAIL
_QWEN35 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*" + _TAIL
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_LETTERS_UPPER_FIRST}*{_LETTERS_LOWER}+"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_LETTERS_UPPER_FIRST}+{_LETTERS_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*" + _TAIL
)
_O200K = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_LETTERS_UPPER_FIRST}*{_LETTERS_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_LETTERS_UPPER_FIRST}+{_LETTERS_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*" + _TAIL
)
SPLIT_PATTERNS: dict[str, str] = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), _CL100K),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2),
    "qwen35": _QWEN35,
    "tekken": _TEKKEN,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _O200K),
}
_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def tokenizer_from_gguf(path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerFast:
    """The fast tokenizer a GGUF file describes; ``kwargs`` override its settings (``padding_side``...)."""
    gguf = open_gguf(path)
    kind = gguf.require("tokenizer.ggml.model")
    builders = {"gpt2": _byte_level_backend, "llama": _sentencepiece_backend}
    if kind not in builders:
        raise TokenizerFileError(
            f"{describe_path(gguf.path)} describes a {kind!r} tokenizer (tokenizer.ggml.model); torchformers builds "
            f"GGUF tokenizers of the kinds {sorted(builders)}."
        )
    tokens = gguf.require("tokenizer.ggml.tokens")
    backend = builders[kind](gguf, tokens)
    _add_marked_tokens(backend, gguf, tokens, byte_level=kind == "gpt2")
    pattern = SPLIT_PATTERNS.get(gguf.metadata.get("tokenizer.ggml.pre"))
    if pattern is not None:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    settings: dict[str, Any] = {name: _token(gguf, tokens, key) for name, key in _SPECIAL_TOKEN_KEYS.items()}
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
    settings["add_bos_token"] = gguf.metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")
    settings["add_eos_token"] = gguf.metadata.get("tokenizer.ggml.add_eos_token", False)
    if "tokenizer.chat_template" in gguf.metadata:
        settings["chat_template"] = gguf.metadata["tokenizer.chat_template"]
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{"name_or_path": gguf.path, **settings, **kwargs})


def _token(gguf: GGUFFile, tokens: list[str], key: str) -> str | None:
    index = gguf.metadata.get(key)
    if index is None:
        return None
    if not 0 <= index < len(tokens):
        raise TokenizerFileError(
            f"{describe_path(gguf.path)}: {key} is {index}, outside the vocabulary of {len(tokens)} tokens; the file "
            "is corrupt."
        )
    return tokens[index]


def _merges(gguf: GGUFFile, tokens: list[str]) -> list[tuple[str, str]]:
    listed = gguf.metadata.get("tokenizer.ggml.merges")
    if listed is None:
        return merges_from_scores(tokens, gguf.metadata.get("tokenizer.ggml.scores"))
    merges = []
    for index, merge in enumerate(listed):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise TokenizerFileError(
                f"{describe_path(gguf.path)}: merge {index} of tokenizer.ggml.merges is {merge!r}, not two tokens "
                "separated by a space; the file is corrupt."
            )
        merges.append((pair[0], pair[1]))
    return merges


def merges_from_scores(tokens: list[str], scores: list[float] | None) -> list[tuple[str, str]]:
    """The BPE merges a vocabulary implies: every way to cut a token into two tokens, best first.

    Higher-scored results merge first (ties: longer left piece, then longer right piece, then
    vocabulary order); without scores, earlier tokens merge first. This is the reference
    library's order, so tokenization matches it.
    """
    ids = {token: index for index, token in enumerate(tokens)}
    priority = dict(zip(tokens, scores, strict=False)) if scores is not None else ids
    candidates = []
    for token, score in priority.items():
        cuts = [(token[:cut], token[cut:]) for cut in range(1, len(token))]
        cuts = sorted((pair for pair in cuts if pair[0] in ids and pair[1] in ids),
                      key=lambda pair: (ids[pair[0]], ids[pair[1]]))
        candidates += [(left, right, score) for left, right in cuts]
    candidates.sort(key=lambda c: (c[2], len(c[0]), len(c[1])), reverse=scores is not None)
    return [(left, right) for left, right, _ in candidates]


def _byte_level_backend(gguf: GGUFFile, tokens: list[str]) -> Tokenizer:
    alphabet = byte_alphabet()
    spelled = set(alphabet.values())
    # Tokens are stored in the byte alphabet; a token that is not (some added tokens) is spelled into it.
    vocab = {
        token if set(token) <= spelled else "".join(alphabet[byte] for byte in token.encode("utf-8")): index
        for index, token in enumerate(tokens)
    }
    backend = Tokenizer(BPE(vocab, _merges(gguf, tokens), dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_backend(gguf: GGUFFile, tokens: list[str]) -> Tokenizer:
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(BPE(vocab, _merges(gguf, tokens), fuse_unk=True, byte_fallback=True, dropout=None))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="first",
                                                     split=False)
    backend.decoder = decoders.Sequence([
        decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1),
    ])
    return backend


def _add_marked_tokens(backend: Tokenizer, gguf: GGUFFile, tokens: list[str], byte_level: bool) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens."""
    kinds = gguf.metadata.get("tokenizer.ggml.token_type") or []
    spelled = set(byte_alphabet().values()) if byte_level else None
    # A byte-level control token outside the byte alphabet is a converter's mislabel; adding it
    # would grow the vocabulary past the model's embedding, so it is left out (as the reference does).
    control = [
        AddedToken(token, normalized=False, special=True) for token, kind in zip(tokens, kinds, strict=False)
        if kind == CONTROL and (spelled is None or set(token) <= spelled)
    ]
    if control:
        backend.add_special_tokens(control)
    vocab = backend.get_vocab()
    user_defined = [
        AddedToken(token, normalized=False, special=False) for token, kind in zip(tokens, kinds, strict=False)
        if kind == USER_DEFINED and token in vocab
    ]
    if user_defined:
        backend.add_tokens(user_defined)
