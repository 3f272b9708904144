"""Stopping criteria: per-sequence decisions that a sequence is done.

A criterion is called as ``criterion(input_ids, scores)`` with the tokens so far
(batch, length) and returns a boolean tensor (batch,) that is True for the sequences that
should stop. Names and behaviour are the reference library's.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch

from ..errors import GenerationError


class StoppingCriteria:
    """Base class: ``__call__(input_ids, scores) -> BoolTensor`` of shape (batch,)."""

    def __call__(self, input_ids: torch.LongTensor, scores: tuple[torch.Tensor, ...] | None, **kwargs: Any
                 ) -> torch.BoolTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores).")


class StoppingCriteriaList(list):
    """Criteria combined with "or": a sequence stops as soon as any criterion says so."""

    def __call__(self, input_ids: torch.LongTensor, scores: tuple[torch.Tensor, ...] | None, **kwargs: Any
                 ) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            result = criterion(input_ids, scores, **kwargs)
            if not isinstance(result, torch.Tensor):  # a plain bool applies to every sequence
                result = torch.full_like(done, bool(result))
            done = done | result.to(done.device)
        return done

    @property
    def max_length(self) -> int | None:
        for criterion in self:
            if isinstance(criterion, MaxLengthCriteria):
                return criterion.max_length
        return None


class MaxLengthCriteria(StoppingCriteria):
    """Stop once sequences (prompt included) reach ``max_length`` tokens."""

    def __init__(self, max_length: int, max_position_embeddings: int | None = None) -> None:
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        done = input_ids.shape[-1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Stop every sequence once ``max_time`` seconds have passed since ``initial_timestamp`` (default: now)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None) -> None:
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Stop the sequences whose last token is one of ``eos_token_id`` (an id or a list of ids)."""

    def __init__(self, eos_token_id: int | list[int] | torch.Tensor) -> None:
        if isinstance(eos_token_id, int):
            eos_token_id = [eos_token_id]
        self.eos_token_id = torch.as_tensor(eos_token_id, dtype=torch.long).reshape(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, new_token_length: int = 1, **kwargs: Any
                 ) -> torch.BoolTensor:
        if self.eos_token_id.device != input_ids.device:
            self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -new_token_length:], self.eos_token_id).any(dim=-1)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, characters, strict=True)}


def _decoder_kind(tokenizer: Any) -> str | None:
    """"byte_level", "byte_fallback" or None: how a tokenizer's vocabulary strings map to text."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return None
    if type(decoder).__name__ == "ByteLevel":
        return "byte_level"
    state = getattr(decoder, "__getstate__", lambda: None)()
    try:
        config = json.loads(state) if isinstance(state, (str, bytes)) else None
    except json.JSONDecodeError:
        config = None

    def has_type(node: Any, kind: str) -> bool:
        if isinstance(node, dict):
            return node.get("type") == kind or any(has_type(v, kind) for v in node.values())
        return isinstance(node, list) and any(has_type(v, kind) for v in node)

    if has_type(config, "ByteFallback"):
        return "byte_fallback"
    if has_type(config, "ByteLevel"):
        return "byte_level"
    return None


def token_texts(tokenizer: Any) -> tuple[list[str | bytes | None], str | None]:
    """Each token id's text as it appears inside decoded text (bytes for byte-level vocabularies).

    Tokens whose text depends on context (a leading-space marker) are decoded after a fixed
    prefix and the prefix is cut off, so a token reads as it does mid-sentence.
    """
    kind = _decoder_kind(tokenizer)
    vocab = tokenizer.get_vocab()
    texts: list[str | bytes | None] = [None] * (max(vocab.values()) + 1)
    prefix = "abcdef"
    prefix_tokens = tokenizer.convert_ids_to_tokens(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    byte_decoder = _byte_decoder() if kind == "byte_level" else None
    for token, index in vocab.items():
        text: str | bytes | None = None
        if byte_decoder is not None and all(char in byte_decoder for char in token):
            text = bytes(byte_decoder[char] for char in token)
        elif kind == "byte_fallback" and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                text = bytes([int(token[3:5], 16)])
            except ValueError:
                text = None
        if text is None:
            decoded = tokenizer.convert_tokens_to_string([*prefix_tokens, token])
            cut = decoded.find(prefix)
            decoded = decoded[cut + len(prefix):] if cut >= 0 else decoded
            text = decoded.encode("utf-8") if kind is not None else decoded
        texts[index] = text
    return texts, kind


class StopStringCriteria(StoppingCriteria):
    """Stop a sequence once its text ends in one of ``stop_strings``.

    As in the reference library, a stop string counts when it ends inside the last token
    (the token may run on past it), however the string is split into tokens. Token texts
    come from the tokenizer's vocabulary, so matching works on token ids without decoding
    the whole sequence at each step.
    """

    def __init__(self, tokenizer: Any, stop_strings: str | Iterable[str]) -> None:
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings: tuple[str, ...] = tuple(stop_strings)
        if not self.stop_strings or not all(isinstance(s, str) and s for s in self.stop_strings):
            raise GenerationError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}.")
        self._texts, kind = token_texts(tokenizer)
        self._targets = [s.encode("utf-8") if kind is not None else s for s in self.stop_strings]
        # A token holds at least one character, so a stop string spans at most this many tokens.
        self.maximum_token_len = max(len(s) for s in self._targets)

    def _text_of(self, token: int) -> str | bytes:
        text = self._texts[token] if 0 <= token < len(self._texts) else None
        return text if text is not None else self._targets[0][:0]

    def _row_stops(self, tokens: list[int]) -> bool:
        texts = [self._text_of(t) for t in tokens]
        text = texts[0][:0].join(texts)
        last = len(texts[-1])
        for target in self._targets:
            # An occurrence counts if it ends inside the last token's text.
            start = max(0, len(text) - last - len(target) + 1)
            if last and text.find(target, start) >= 0:
                return True
        return False

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, -self.maximum_token_len:].tolist()
        return torch.tensor([self._row_stops(tail) for tail in tails], dtype=torch.bool, device=input_ids.device)


def validate_stopping_criteria(stopping_criteria: StoppingCriteriaList, max_length: int) -> StoppingCriteriaList:
    """A copy of the list with a MaxLengthCriteria for ``max_length`` (warns if it has a different one)."""
    criteria = StoppingCriteriaList(stopping_criteria)
    if criteria.max_length is None:
        criteria.append(MaxLengthCriteria(max_length))
    elif criteria.max_length != max_length:
        warnings.warn("The stopping criteria's max_length differs from the max_length argument.", UserWarning,
                      stacklevel=2)
    return criteria
