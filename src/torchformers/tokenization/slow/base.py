"""Slow (pure-Python) tokenizers: the shared pipeline around a family's word splitting.

A family implements ``_tokenize_chunk`` (text between added tokens to tokens with character
offsets and word numbers), the vocabulary and ``_decode_tokens``. This module does the rest the
way the `tokenizers` library does, so a slow tokenizer and its fast conversion give the same
ids, offsets, word ids, truncation overflow and padding: splitting on added tokens, the special
token template, truncation with stride, padding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tokenizers import AddedToken, Tokenizer

from ...errors import TokenizerError, describe_path
from ..base import Padding, PreTrainedTokenizerBase, Truncation, as_added_token


@dataclass
class Encoding:
    """One encoded input: the Python counterpart of ``tokenizers.Encoding``."""

    ids: list[int] = field(default_factory=list)
    type_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    word_ids: list[int | None] = field(default_factory=list)
    sequence_ids: list[int | None] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    attention_mask: list[int] = field(default_factory=list)
    overflowing: list[Encoding] = field(default_factory=list)

    _FIELDS: ClassVar[tuple[str, ...]] = ("ids", "type_ids", "tokens", "offsets", "word_ids", "sequence_ids",
                                          "special_tokens_mask", "attention_mask")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def words(self) -> list[int | None]:
        return self.word_ids

    @property
    def n_sequences(self) -> int:
        return max(1, len({s for s in self.sequence_ids if s is not None}))

    def window(self, start: int, stop: int) -> Encoding:
        return Encoding(*(getattr(self, name)[start:stop] for name in self._FIELDS))

    def concat(self, other: Encoding) -> Encoding:
        return Encoding(*(getattr(self, name) + getattr(other, name) for name in self._FIELDS))

    # -- alignment ---------------------------------------------------------------------------
    def token_to_sequence(self, token: int) -> int | None:
        return self.sequence_ids[token] if 0 <= token < len(self.ids) else None

    def token_to_word(self, token: int) -> int | None:
        if not 0 <= token < len(self.ids) or self.sequence_ids[token] is None:
            return None
        return self.word_ids[token]

    def token_to_chars(self, token: int) -> tuple[int, int] | None:
        if not 0 <= token < len(self.ids) or self.sequence_ids[token] is None:
            return None
        return self.offsets[token]

    def char_to_token(self, pos: int, sequence_index: int = 0) -> int | None:
        for index, (start, end) in enumerate(self.offsets):
            if self.sequence_ids[index] == sequence_index and start <= pos < end:
                return index
        return None

    def char_to_word(self, pos: int, sequence_index: int = 0) -> int | None:
        token = self.char_to_token(pos, sequence_index)
        return None if token is None else self.word_ids[token]

    def word_to_tokens(self, word: int, sequence_index: int = 0) -> tuple[int, int] | None:
        found = [i for i, (w, s) in enumerate(zip(self.word_ids, self.sequence_ids, strict=False))
                 if w == word and s == sequence_index]
        return (found[0], found[-1] + 1) if found else None

    def word_to_chars(self, word: int, sequence_index: int = 0) -> tuple[int, int] | None:
        span = self.word_to_tokens(word, sequence_index)
        if span is None:
            return None
        return self.offsets[span[0]][0], self.offsets[span[1] - 1][1]


def truncate(encoding: Encoding, max_length: int, stride: int, direction: str) -> Encoding:
    """Cut to ``max_length`` tokens; the rest becomes overflowing windows that repeat ``stride`` tokens."""
    length = len(encoding)
    if max_length >= length:
        return encoding
    if max_length == 0:
        return Encoding(overflowing=[encoding.window(0, length)])
    step = max_length - stride
    ranges = []
    if direction == "right":
        for start in range(0, length, step):
            stop = min(start + max_length, length)
            ranges.append((start, stop))
            if stop == length:
                break
    else:
        for stop in range(length, 0, -step):
            start = max(0, stop - max_length)
            ranges.append((start, stop))
            if start == 0:
                break
    head = encoding.window(*ranges[0])
    head.overflowing = [encoding.window(*r) for r in ranges[1:]]
    return head


def merge(first: Encoding, second: Encoding) -> Encoding:
    """Append ``second`` to ``first``; overflowing parts combine as the `tokenizers` library combines them."""
    overflowing = []
    for part in first.overflowing:
        overflowing.append(part.concat(second))
        overflowing += [part.concat(other) for other in second.overflowing]
    overflowing += [first.concat(other) for other in second.overflowing]
    merged = first.concat(second)
    merged.overflowing = overflowing
    return merged


def pad(encoding: Encoding, length: int, padding: Padding) -> Encoding:
    encoding.overflowing = [pad(part, length, padding) for part in encoding.overflowing]
    missing = length - len(encoding)
    if missing <= 0:
        return encoding
    filler = Encoding([padding.pad_id] * missing, [padding.pad_type_id] * missing, [padding.pad_token] * missing,
                      [(0, 0)] * missing, [None] * missing, [None] * missing, [1] * missing, [0] * missing)
    result = encoding.concat(filler) if padding.direction == "right" else filler.concat(encoding)
    result.overflowing = encoding.overflowing
    return result


def truncation_lengths(n1: int, n2: int | None, params: Truncation, max_length: int) -> tuple[int, int | None]:
    """The lengths the `tokenizers` library cuts a sequence (or pair) of ``n1`` (and ``n2``) tokens to, so
    they hold ``max_length`` tokens in all; raises TokenizerError where it cannot."""
    total = n1 + (n2 or 0)
    if max_length == 0 or total <= max_length:
        return (0, 0 if n2 is not None else None) if max_length == 0 else (n1, n2)
    to_remove = total - max_length
    if params.strategy == "longest_first":
        if n2 is None:
            t1, t2 = max_length, None
        else:
            short, long_ = sorted((n1, n2))
            long_ = short if short > max_length else max(short, max_length - short)
            if short + long_ > max_length:
                short = max_length // 2
                long_ = short + max_length % 2
            t1, t2 = (long_, short) if n1 > n2 else (short, long_)
    elif params.strategy == "only_second" and n2 is None:
        raise TokenizerError("truncation='only_second' needs a pair of sequences; pass text_pair or another strategy.")
    else:
        target = n1 if params.strategy == "only_first" else n2
        if target <= to_remove:
            raise TokenizerError(
                f"Cannot truncate with {params.strategy!r}: the sequence to truncate has {target} tokens but "
                f"{to_remove} must go to fit max_length={params.max_length}; use truncation='longest_first'."
            )
        t1, t2 = (n1 - to_remove, n2) if params.strategy == "only_first" else (n1, target - to_remove)
    for length, cut in ((n1, t1), (n2, t2)):
        if cut is not None and 0 < cut < length and params.stride >= cut:
            raise TokenizerError(
                f"stride={params.stride} must be smaller than the {cut} tokens a sequence is cut to (max_length="
                f"{params.max_length} less the special tokens, shared by the pair); lower the stride or raise "
                "max_length."
            )
    return t1, t2


def truncate_pair(first: Encoding, second: Encoding | None, params: Truncation, max_length: int
                  ) -> tuple[Encoding, Encoding | None]:
    """The `tokenizers` library's truncation of a sequence or a pair to ``max_length`` tokens in all."""
    t1, t2 = truncation_lengths(len(first), len(second) if second is not None else None, params, max_length)
    first = truncate(first, t1, params.stride, params.direction)
    if second is not None:
        second = truncate(second, t2, params.stride, params.direction)
    return first, second


class PreTrainedTokenizer(PreTrainedTokenizerBase):
    """Base class of the pure-Python tokenizers (the reference library's "slow" tokenizers)."""

    def __init__(self, **kwargs: Any) -> None:
        added_tokens = kwargs.pop("added_tokens_decoder", None) or {}
        config_file = kwargs.get("_config_file")
        self._added: dict[int, AddedToken] = {}
        self._added_ids: dict[str, int] = {}
        self._splitter: tuple[re.Pattern[str] | None, re.Pattern[str] | None] | None = None
        super().__init__(**kwargs)
        where = describe_path(config_file) if config_file else "added_tokens_decoder"
        for index, value in sorted(((int(i), v) for i, v in added_tokens.items()), key=lambda item: item[0]):
            token = as_added_token(value, special=False, where=f"added token {index} in {where}")
            base = self._base_id_to_token(index) if index < self.vocab_size else None
            if base is not None and base != token.content:
                raise TokenizerError(
                    f"{where} says token id {index} is {token.content!r}, but the vocabulary file has {base!r} "
                    "there; the tokenizer files disagree (re-save or re-download them)."
                )
            other = self._added_ids.get(token.content, self._base_token_to_id(token.content))
            if other is not None and other != index:
                raise TokenizerError(
                    f"{where} gives {token.content!r} the id {index}, but the vocabulary has it at id {other}; "
                    "the tokenizer files disagree."
                )
            self._register(token, index)
        self._add_special_tokens_to_vocab()

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def _resolve_files(cls, name_or_path: Any, hub: dict[str, Any]) -> dict[str, str | None]:
        files = super()._resolve_files(name_or_path, hub)
        if "tokenizer_config_file" in files and not any(files.get(k) for k in cls.vocab_files_names):
            # Directories saved by the reference library hold only tokenizer.json: read the vocabulary there.
            from ...hub import resolve_file
            from ..base import TOKENIZER_FILE

            files["tokenizer_file"] = resolve_file(name_or_path, TOKENIZER_FILE, required=False, **hub)
        return files

    @classmethod
    def _from_files(cls, files: dict[str, str | None], init_inputs: tuple[Any, ...], init_kwargs: dict[str, Any]
                    ) -> PreTrainedTokenizerBase:
        tokenizer_file = files.pop("tokenizer_file", None)
        if tokenizer_file is not None and not any(files.get(k) for k in cls.vocab_files_names):
            from ..base import read_json_file

            model = read_json_file(tokenizer_file, "tokenizer.json").get("model") or {}
            init_kwargs.update(cls._vocabulary_from_model(model, tokenizer_file))
        return super()._from_files(files, init_inputs, init_kwargs)

    @classmethod
    def _vocabulary_from_model(cls, model: dict[str, Any], path: str) -> dict[str, Any]:
        """Init arguments holding the vocabulary of tokenizer.json's model, for families that can use it."""
        raise TokenizerError(
            f"{cls.__name__} needs {sorted(cls.vocab_files_names.values())}; {describe_path(path)} cannot stand in "
            f"for them. Load the directory with {cls.__name__}Fast or AutoTokenizer instead."
        )

    # -- vocabulary, given by the family -------------------------------------------------
    def _base_token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _base_id_to_token(self, index: int) -> str | None:
        raise NotImplementedError

    def get_base_vocab(self) -> dict[str, int]:
        raise NotImplementedError

    # -- vocabulary with added tokens ----------------------------------------------------
    def _register(self, token: AddedToken, index: int) -> None:
        previous = self._added.get(index)
        if previous is not None:
            self._added_ids.pop(previous.content, None)
        self._added[index] = token
        self._added_ids[token.content] = index
        self._splitter = None

    def __len__(self) -> int:
        return self.vocab_size + sum(1 for index in self._added if index >= self.vocab_size)

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self.get_base_vocab())
        vocab.update(self._added_ids)
        return vocab

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._added.items()))

    def _add_tokens(self, tokens: list[AddedToken]) -> int:
        added = 0
        for token in tokens:
            if token.content in self._added_ids:
                index = self._added_ids[token.content]
                if token.special and not self._added[index].special:
                    self._register(token, index)
                continue
            index = self._base_token_to_id(token.content)
            if index is None:
                index = len(self)
            self._register(token, index)
            added += 1  # counted like the tokenizers library: tokens new to the added vocabulary
        return added

    def _token_to_id(self, token: str) -> int | None:
        index = self._added_ids.get(token)
        return index if index is not None else self._base_token_to_id(token)

    def _id_to_token(self, index: int) -> str | None:
        token = self._added.get(index)
        return token.content if token is not None else self._base_id_to_token(index)

    def _unk_id(self) -> int | None:
        unk = self.unk_token
        return None if unk is None else self._token_to_id(unk)

    # -- the special-token template ------------------------------------------------------
    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        """``("A"|"B", type_id)`` for the sequences and ``([ids], type_id)`` for special tokens."""
        return [("A", 0)] + ([("B", 1)] if pair else [])

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return sum(len(piece) for piece, _ in self._template(pair) if piece not in ("A", "B"))

    def _template_ids(self, ids_0: list[int], ids_1: list[int] | None) -> tuple[list[int], list[int], list[int]]:
        from ..fast import apply_template

        return apply_template(self._template(ids_1 is not None), list(ids_0), list(ids_1 or []))

    # -- encoding ----------------------------------------------------------------------
    def _tokenize_chunk(self, text: str, start: int, at_start: bool) -> list[tuple[str, int, int, int]]:
        """Tokens of a text between added tokens: ``(token, start, end, word)`` with character offsets
        in the original text (``start`` is where this chunk begins) and word numbers counted from 0 within
        the chunk. ``at_start`` is True when the chunk begins the sequence."""
        raise NotImplementedError

    def _added_splitter(self, split_special: bool) -> re.Pattern[str] | None:
        if self._splitter is None:
            def pattern(tokens: list[AddedToken]) -> re.Pattern[str] | None:
                if not tokens:
                    return None
                alternatives = []
                for token in sorted(tokens, key=lambda t: -len(t.content)):
                    body = re.escape(token.content)
                    if token.single_word:
                        body = rf"(?<!\w){body}(?!\w)"
                    left = r"\s*" if token.lstrip else ""
                    right = r"\s*" if token.rstrip else ""
                    alternatives.append(f"{left}(?P<t{len(alternatives)}>{body}){right}")
                return re.compile("|".join(alternatives))

            tokens = [t for t in self._added.values() if t.content]
            self._splitter = (pattern(tokens), pattern([t for t in tokens if not t.special]))
        return self._splitter[1] if split_special else self._splitter[0]

    def _encode_text(self, text: str, split_special: bool, word: int | None) -> Encoding:
        """Split off added tokens, tokenize the rest; one sequence, type and sequence ids left to fill."""
        splitter = self._added_splitter(split_special)
        pieces: list[tuple[str, int, int, int | None]] = []  # token, start, end, word
        words = 0
        position = 0
        matches = splitter.finditer(text) if splitter is not None else ()
        for match in matches:
            if match.end() == match.start():
                continue
            if match.start() > position:
                chunk = self._tokenize_chunk(text[position:match.start()], position, position == 0)
                pieces += [(t, s, e, words + w) for t, s, e, w in chunk]
                words += max((w for *_, w in chunk), default=-1) + 1
            content = next(v for v in match.groupdict().values() if v is not None)
            pieces.append((content, match.start(), match.end(), words))
            words += 1
            position = match.end()
        if position < len(text):
            chunk = self._tokenize_chunk(text[position:], position, position == 0)
            pieces += [(t, s, e, words + w) for t, s, e, w in chunk]
        unk = None
        ids = []
        for token, *_ in pieces:
            index = self._token_to_id(token)
            if index is None:
                unk = self._unk_id() if unk is None else unk
                if unk is None:
                    raise TokenizerError(f"{token!r} is not in the vocabulary and the tokenizer has no unk_token.")
                index = unk
            ids.append(index)
        n = len(pieces)
        return Encoding(ids, [0] * n, [p[0] for p in pieces], [(p[1], p[2]) for p in pieces],
                        [word if word is not None else p[3] for p in pieces], [0] * n, [0] * n, [1] * n)

    def _encode_sequence(self, item: Any, is_pretokenized: bool, split_special: bool, index: int) -> Encoding:
        if is_pretokenized:
            encoding = Encoding()
            for number, word in enumerate(item):
                encoding = encoding.concat(self._encode_text(word, split_special, number))
        else:
            encoding = self._encode_text(item, split_special, None)
        encoding.type_ids = [index] * len(encoding)
        encoding.sequence_ids = [index] * len(encoding)
        return encoding

    def _encode_batch(
        self,
        batch: list[Any],
        *,
        add_special_tokens: bool,
        is_pretokenized: bool,
        truncation: Truncation | None,
        padding: Padding | None,
        split_special_tokens: bool,
    ) -> list[Any]:
        encodings = []
        for item in batch:
            if isinstance(item, tuple):
                first = self._encode_sequence(item[0], is_pretokenized, split_special_tokens, 0)
                second = self._encode_sequence(item[1], is_pretokenized, split_special_tokens, 1)
            else:
                first, second = self._encode_sequence(item, is_pretokenized, split_special_tokens, 0), None
            encodings.append(self._post_process(first, second, add_special_tokens, truncation))
        if padding is not None and encodings:
            length = padding.length if padding.length is not None else max(len(e) for e in encodings)
            multiple = padding.pad_to_multiple_of
            if multiple and length % multiple:
                length += multiple - length % multiple
            encodings = [pad(e, length, padding) for e in encodings]
        return encodings

    def _post_process(self, first: Encoding, second: Encoding | None, add_special_tokens: bool,
                      truncation: Truncation | None) -> Encoding:
        pair = second is not None
        if truncation is not None:
            added = self.num_special_tokens_to_add(pair) if add_special_tokens else 0
            room = truncation.max_length - added
            if room < 0:
                raise TokenizerError(
                    f"max_length={truncation.max_length} leaves no room for the {added} special tokens added."
                )
            if room > 0 and truncation.stride >= room:
                raise TokenizerError(
                    f"stride={truncation.stride} must be smaller than max_length={truncation.max_length} minus the "
                    f"{added} special tokens added; lower the stride."
                )
            first, second = truncate_pair(first, second, truncation, room)
        if not add_special_tokens:
            return merge(first, second) if second is not None else first
        result = Encoding()
        for piece, type_id in self._template(pair):
            if piece in ("A", "B"):
                part = first if piece == "A" else second
                part = Encoding(*(getattr(part, name) for name in Encoding._FIELDS), overflowing=part.overflowing)
                part.type_ids = [type_id] * len(part)
            else:
                n = len(piece)
                part = Encoding(list(piece), [type_id] * n, [self._id_to_token(i) for i in piece], [(0, 0)] * n,
                                [None] * n, [None] * n, [1] * n, [1] * n)
            result = merge(result, part)
        return result

    # -- decoding ----------------------------------------------------------------------
    def _decode_tokens(self, tokens: list[str]) -> str:
        """Join token strings into text (the family's decoder)."""
        return " ".join(tokens)

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        tokens = []
        for index in ids:
            added = self._added.get(index)
            if added is not None and added.special and skip_special_tokens:
                continue
            token = self._id_to_token(index)
            if token is not None:
                tokens.append(token)
        return self._decode_tokens(tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode_tokens(tokens)

    # -- conversion to fast --------------------------------------------------------------
    def build_backend(self) -> Tokenizer:
        """The equivalent `tokenizers.Tokenizer` (what the family's fast class runs on)."""
        raise NotImplementedError

    def _backend_with_template(self, backend: Tokenizer) -> Tokenizer:
        """Add this tokenizer's added tokens and special-token template to a converted backend."""
        from tokenizers import processors

        for index, token in sorted(self._added.items()):
            if token.special:
                backend.add_special_tokens([token])
            else:
                backend.add_tokens([token])
            if backend.token_to_id(token.content) != index:
                raise TokenizerError(f"Converting to fast gave {token.content!r} a different id than {index}.")

        def spec(pair: bool) -> str:
            parts = []
            for piece, type_id in self._template(pair):
                if piece in ("A", "B"):
                    parts.append(f"${piece}:{type_id}")
                else:
                    parts += [f"{self._id_to_token(i)}:{type_id}" for i in piece]
            return " ".join(parts)

        specials = {self._id_to_token(i): i for pair in (False, True) for piece, _ in self._template(pair)
                    if piece not in ("A", "B") for i in piece}
        backend.post_processor = processors.TemplateProcessing(
            single=spec(False), pair=spec(True), special_tokens=list(specials.items())
        )
        return backend

    def to_fast(self) -> Any:
        """The family's fast tokenizer, converted from this one (same ids, offsets and text)."""
        from .. import fast

        fast_class = getattr(fast, type(self).__name__ + "Fast", fast.PreTrainedTokenizerFast)
        config = self._config_to_save()
        for key in ("added_tokens_decoder", "tokenizer_class"):
            config.pop(key, None)
        config.update(self.converted_init_kwargs())
        config["name_or_path"] = self.name_or_path
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        return fast_class(tokenizer_object=self.build_backend(), **config)

    def converted_init_kwargs(self) -> dict[str, Any]:
        """Init arguments the fast class needs beyond the slow one's (special tokens the conversion found)."""
        return {}
