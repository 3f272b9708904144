"""GPT-2's byte-level BPE tokenizer in pure Python, from ``vocab.json`` + ``merges.txt``.

Text is split with GPT-2's pattern (contractions, letter runs, number runs, other runs, each
with an optional leading space; whitespace runs), each piece's UTF-8 bytes are spelled with
the 256 printable characters of the byte-level alphabet, and pairs are merged in the order
``merges.txt`` lists them.
"""

from __future__ import annotations

import json
import os
import unicodedata
from functools import lru_cache
from typing import Any, ClassVar

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from ...errors import TokenizerFileError, describe_path
from ...files import atomic_write_text
from ..base import read_json_file
from .base import PreTrainedTokenizer
from .wordpiece import WHITESPACE


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """Byte -> printable character: printable Latin-1 bytes stand for themselves, the others are shifted
    past U+0100 in byte order (GPT-2's byte-level alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    return {char: byte for byte, char in byte_alphabet().items()}


def _kind(char: str) -> str:
    if char in WHITESPACE:
        return "s"
    category = unicodedata.category(char)
    return category[0] if category[0] in "LN" else "o"


_CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")


def split_gpt2(text: str) -> list[tuple[int, int]]:
    """Spans of GPT-2's pre-tokenization pattern over ``text``."""
    kinds = [_kind(c) for c in text]
    spans = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'":
            for suffix in _CONTRACTIONS:
                if text.startswith(suffix, i + 1):
                    spans.append((i, i + 1 + len(suffix)))
                    i += 1 + len(suffix)
                    break
            else:
                suffix = None
            if suffix is not None:
                continue
        start = i
        body = i + 1 if text[i] == " " and i + 1 < n and kinds[i + 1] != "s" else i
        kind = kinds[body]
        if kind != "s":
            end = body + 1
            while end < n and kinds[end] == kind:
                end += 1
            spans.append((start, end))
            i = end
            continue
        end = i
        while end < n and kinds[end] == "s":
            end += 1
        if end < n and end - i > 1:
            end -= 1  # leave the last space to lead the next word
        spans.append((i, end))
        i = end
    return spans


def load_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        raise TokenizerFileError(f"{describe_path(path)} does not exist; a BPE tokenizer needs its merges.txt.") \
            from None
    except (OSError, UnicodeDecodeError) as error:
        raise TokenizerFileError(f"Cannot read {describe_path(path)} as UTF-8 text ({error}); re-download it.") \
            from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerFileError(
                f"{describe_path(path)} line {number} is not a merge ('left right'): {line!r:.80}; the file is corrupt."
            )
        merges.append((parts[0], parts[1]))
    return merges


class GPT2Tokenizer(PreTrainedTokenizer):
    """GPT-2's byte-level BPE tokenizer in pure Python; ``GPT2TokenizerFast`` is its Rust twin.

    Options as in the reference: ``add_prefix_space`` (False), ``add_bos_token`` / ``add_eos_token``
    (False), ``errors`` (how invalid UTF-8 is decoded, "replace").
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
    default_special_tokens: ClassVar[dict[str, str | None]] = {
        "unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
    }
    init_arguments: ClassVar[tuple[str, ...]] = ("add_prefix_space", "add_bos_token", "add_eos_token", "errors",
                                                 "vocab", "merges")

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        errors: str = "replace",
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        vocab: dict[str, int] | None = None,
        merges: list[tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        if vocab is None:
            if vocab_file is None:
                raise TokenizerFileError("GPT2Tokenizer needs vocab_file (vocab.json) and merges_file (merges.txt).")
            vocab = read_json_file(vocab_file, "BPE vocabulary")
            if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
                raise TokenizerFileError(f"{describe_path(vocab_file)} must map token strings to integer ids.")
        if merges is None:
            if merges_file is None:
                raise TokenizerFileError("GPT2Tokenizer needs merges_file (merges.txt) with its vocab.json.")
            merges = load_merges(merges_file)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        for left, right in merges:
            if left not in vocab or right not in vocab or left + right not in vocab:
                missing = next(t for t in (left, right, left + right) if t not in vocab)
                where = describe_path(merges_file) if merges_file else "merges"
                raise TokenizerFileError(
                    f"{where} has the merge {left!r} {right!r} but the vocabulary lacks {missing!r}; the vocab.json "
                    "and merges.txt do not belong together."
                )
        self.vocab_file, self.merges_file = vocab_file, merges_file
        self._vocab = dict(vocab)
        self._ids_to_tokens = {index: token for token, index in self._vocab.items()}
        self._size = max(self._ids_to_tokens, default=-1) + 1
        self._merges = list(merges)
        self._ranks = {pair: rank for rank, pair in enumerate(self._merges)}
        self._cache: dict[str, list[tuple[str, int, int]]] = {}
        self.errors = errors
        self.add_prefix_space = add_prefix_space
        self._add_bos_token, self._add_eos_token = add_bos_token, add_eos_token
        super().__init__(**kwargs)

    @classmethod
    def _vocabulary_from_model(cls, model: dict[str, Any], path: str) -> dict[str, Any]:
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            return super()._vocabulary_from_model(model, path)
        return {"vocab": model["vocab"], "merges": model.get("merges", [])}

    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._add_bos_token = bool(value)

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._add_eos_token = bool(value)

    # -- vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    def get_base_vocab(self) -> dict[str, int]:
        return self._vocab

    def _base_token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def _base_id_to_token(self, index: int) -> str | None:
        return self._ids_to_tokens.get(index)

    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        return bos_eos_template(self, pair)

    # -- tokenization --------------------------------------------------------------------
    def _bpe(self, word: str) -> list[tuple[str, int, int]]:
        """BPE pieces of a byte-level word with their [start, end) in the word's characters."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word)
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_rank = None, None
            for index in range(len(symbols) - 1):
                rank = ranks.get((symbols[index], symbols[index + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = index, rank
            if best is None:
                break
            pair = (symbols[best], symbols[best + 1])
            merged, index = [], 0
            while index < len(symbols):
                if index < len(symbols) - 1 and (symbols[index], symbols[index + 1]) == pair:
                    merged.append(pair[0] + pair[1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = merged
        pieces, position = [], 0
        for symbol in symbols:
            pieces.append((symbol, position, position + len(symbol)))
            position += len(symbol)
        if len(self._cache) < 100_000:
            self._cache[word] = pieces
        return pieces

    def _tokenize_chunk(self, text: str, start: int, at_start: bool) -> list[tuple[str, int, int, int]]:
        alphabet = byte_alphabet()
        origin_shift = 0
        if self.add_prefix_space and not text.startswith(" "):
            text = " " + text
            origin_shift = 1
        tokens = []
        for number, (begin, end) in enumerate(split_gpt2(text)):
            chars, origin = [], []
            for index in range(begin, end):
                encoded = text[index].encode("utf-8")
                chars += [alphabet[b] for b in encoded]
                position = max(index - origin_shift, 0)
                origin += [position] * len(encoded)
            for piece, piece_begin, piece_end in self._bpe("".join(chars)):
                if piece not in self._vocab and piece not in self._added_ids:
                    continue  # GPT-2's BPE has no unknown token: a byte missing from the vocabulary is dropped
                tokens.append((piece, start + origin[piece_begin], start + origin[piece_end - 1] + 1, number))
        return tokens

    def _decode_tokens(self, tokens: list[str]) -> str:
        table = byte_decoder()
        data = bytearray()
        for token in tokens:
            for char in token:
                byte = table.get(char)
                if byte is None:
                    data += char.encode("utf-8")
                else:
                    data.append(byte)
        return data.decode("utf-8", errors=self.errors)

    @property
    def _cleanup_would_corrupt(self) -> bool:
        return True

    # -- files ---------------------------------------------------------------------------
    def _family_config(self) -> dict[str, Any]:
        return {"add_prefix_space": self.add_prefix_space, "add_bos_token": self.add_bos_token,
                "add_eos_token": self.add_eos_token, "errors": self.errors}

    def _save_vocabulary_files(self, directory: str, prefix: str, legacy_format: bool | None) -> list[str]:
        vocab_path = os.path.join(directory, prefix + "vocab.json")
        merges_path = os.path.join(directory, prefix + "merges.txt")
        atomic_write_text(vocab_path, json.dumps(self._vocab, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
        atomic_write_text(merges_path, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self._merges))
        return [vocab_path, merges_path]

    def build_backend(self) -> Tokenizer:
        backend = Tokenizer(BPE(self._vocab, self._merges, continuing_subword_prefix="", end_of_word_suffix="",
                                fuse_unk=False))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        return self._backend_with_template(backend)

    def converted_init_kwargs(self) -> dict[str, Any]:
        return {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token}


def bos_eos_template(tokenizer: PreTrainedTokenizer, pair: bool) -> list[tuple[Any, int]]:
    """``[bos] A [eos]`` (and ``[bos] B [eos]`` for the pair) as ``add_bos_token``/``add_eos_token`` say."""
    bos = [tokenizer.bos_token_id] if tokenizer.add_bos_token and tokenizer.bos_token is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.add_eos_token and tokenizer.eos_token is not None else []
    template: list[tuple[Any, int]] = []
    for piece, type_id in (("A", 0), ("B", 1)) if pair else (("A", 0),):
        if bos:
            template.append((bos, type_id))
        template.append((piece, type_id))
        if eos:
            template.append((eos, type_id))
    return template
