"""SentencePiece tokenizers (Llama-style BPE, T5-style unigram) through the optional `sentencepiece`
package (``pip install torchformers[sentencepiece]``).

The model file is a protobuf; the few fields needed here (pieces, their types and scores, the
normalizer spec) are read with a small wire-format reader, so the `protobuf` package is not
needed. Llama-style tokenizers handle spaces as the reference library's converted tokenizers do
(``▁`` for spaces, a prefix ``▁`` only at the start, no normalization), so the model file's
normalizer is switched off before SentencePiece sees the text.
"""

from __future__ import annotations

import os
import shutil
import struct
from typing import Any, ClassVar

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE, Unigram

from ...errors import TokenizerError, TokenizerFileError, describe_path
from .base import PreTrainedTokenizer
from .bpe import bos_eos_template
from .wordpiece import WHITESPACE

SPIECE_UNDERLINE = "▁"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# -- protobuf wire format -------------------------------------------------------------------
def _varint(data: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def parse_fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of a protobuf message."""
    fields = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 1:
            value, position = data[position:position + 8], position + 8
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position:position + length], position + length
        elif wire == 5:
            value, position = data[position:position + 4], position + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if position > len(data):
            raise ValueError("truncated field")
        fields.append((number, wire, value))
    return fields


class SentencePieceModel:
    """The parts of a SentencePiece ``.model`` file torchformers uses."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            with open(path, "rb") as handle:
                self.data = handle.read()
        except FileNotFoundError:
            raise TokenizerFileError(f"{describe_path(path)} does not exist; a SentencePiece tokenizer needs its "
                                     ".model file.") from None
        except OSError as error:
            raise TokenizerFileError(f"Cannot read {describe_path(path)}: {error.strerror or error}.") from None
        self.path = path
        try:
            fields = parse_fields(self.data)
            self.pieces: list[tuple[str, float, int]] = []
            self.normalizer: list[tuple[int, int, Any]] = []
            self.trainer: list[tuple[int, int, Any]] = []
            for number, wire, value in fields:
                if number == 1 and wire == 2:
                    piece, score, kind = "", 0.0, NORMAL
                    for sub_number, sub_wire, sub_value in parse_fields(value):
                        if sub_number == 1:
                            piece = sub_value.decode("utf-8")
                        elif sub_number == 2 and sub_wire == 5:
                            score = struct.unpack("<f", sub_value)[0]
                        elif sub_number == 3:
                            kind = sub_value
                    self.pieces.append((piece, score, kind))
                elif number == 2 and wire == 2:
                    self.trainer = parse_fields(value)
                elif number == 3 and wire == 2:
                    self.normalizer = parse_fields(value)
        except (ValueError, UnicodeDecodeError, struct.error) as error:
            raise TokenizerFileError(
                f"{describe_path(path)} is not a valid SentencePiece model ({error}); re-download it."
            ) from None
        if not self.pieces:
            raise TokenizerFileError(f"{describe_path(path)} holds no vocabulary; it is not a SentencePiece model.")

    def _trainer_value(self, number: int, default: Any) -> Any:
        values = [value for n, _, value in self.trainer if n == number]
        return values[-1] if values else default

    @property
    def model_type(self) -> int:
        return self._trainer_value(3, 1)  # 1 unigram, 2 bpe

    @property
    def unk_id(self) -> int:
        return self._trainer_value(40, 0)

    @property
    def byte_fallback(self) -> bool:
        return bool(self._trainer_value(35, 0))

    @property
    def precompiled_charsmap(self) -> bytes:
        values = [value for n, _, value in self.normalizer if n == 2]
        return values[-1] if values else b""

    def without_normalization(self) -> bytes:
        """The model with its normalizer off: no rule, no dummy prefix, spaces kept as they are."""
        overrides = (b"\x0a" + _encode_varint(len(b"identity")) + b"identity"  # name
                     + b"\x12\x00"  # precompiled_charsmap = b""
                     + b"\x18\x00"  # add_dummy_prefix = false
                     + b"\x20\x00")  # remove_extra_whitespaces = false
        out = bytearray()
        position = 0
        found = False
        while position < len(self.data):
            start = position
            key, position = _varint(self.data, position)
            number, wire = key >> 3, key & 7
            if wire == 2:
                length, value_start = _varint(self.data, position)
                position = value_start + length
                if number == 3:
                    body = self.data[value_start:position] + overrides
                    out += _encode_varint(key) + _encode_varint(len(body)) + body
                    found = True
                    continue
            elif wire == 0:
                _, position = _varint(self.data, position)
            elif wire == 1:
                position += 8
            elif wire == 5:
                position += 4
            out += self.data[start:position]
        if not found:
            out += _encode_varint((3 << 3) | 2) + _encode_varint(len(overrides)) + overrides
        return bytes(out)


def load_processor(model: bytes, path: str | os.PathLike) -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ImportError(
            "SentencePiece tokenizers need the optional `sentencepiece` package: "
            "pip install 'torchformers[sentencepiece]' (or load the model's tokenizer.json with the fast class)."
        ) from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model)
    except Exception as error:
        raise TokenizerFileError(f"SentencePiece cannot load {describe_path(path)} ({error}); re-download it.") \
            from None
    return processor


class _SentencePieceTokenizer(PreTrainedTokenizer):
    """What the SentencePiece families share: the model file, its vocabulary and its pieces."""

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "tokenizer.model"}

    def _load(self, vocab_file: str | None, *, normalize: bool) -> None:
        if vocab_file is None:
            raise TokenizerFileError(f"{type(self).__name__} needs vocab_file (a SentencePiece .model file).")
        self.vocab_file = vocab_file
        self._model = SentencePieceModel(vocab_file)
        data = self._model.data if normalize else self._model.without_normalization()
        self._sp = load_processor(data, vocab_file)
        self._pieces = [piece for piece, _, _ in self._model.pieces]
        self._vocab = {piece: index for index, piece in enumerate(self._pieces)}

    def _proto_special_tokens(self) -> list[AddedToken]:
        """Control and user-defined pieces, which the reference treats as extra special tokens."""
        return [AddedToken(piece, normalized=False, special=kind == CONTROL)
                for piece, _, kind in self._model.pieces if kind in (CONTROL, USER_DEFINED)]

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def get_base_vocab(self) -> dict[str, int]:
        return self._vocab

    def _base_token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def _base_id_to_token(self, index: int) -> str | None:
        return self._pieces[index] if 0 <= index < len(self._pieces) else None

    def _pieces_with_offsets(self, text: str) -> list[tuple[str, int, int, int]]:
        """SentencePiece's pieces of ``text``: (piece, id, start char, end char)."""
        encode = getattr(self._sp, "encode_as_offset_mapping", None)
        if encode is None:  # older sentencepiece: no alignment
            ids = self._sp.encode(text)
            return [(self._sp.id_to_piece(i), i, 0, 0) for i in ids]
        result = encode(text)
        pieces = []
        for piece, index, (begin, end) in zip(result["pieces"], result["ids"], result["offsets"], strict=False):
            if begin == end and begin < len(text):
                end = begin + 1  # an inserted ▁, a byte or part of an expanded character stands for it whole
            elif _is_byte_piece(piece):
                begin = max(end - 1, 0)
            pieces.append((piece, index, begin, end))
        return pieces

    def _save_vocabulary_files(self, directory: str, prefix: str, legacy_format: bool | None) -> list[str]:
        path = os.path.join(directory, prefix + self.vocab_files_names["vocab_file"])
        if os.path.abspath(path) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, path)
        return [path]


def _is_byte_piece(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def _decode_byte_pieces(tokens: list[str]) -> list[str]:
    """``<0xNN>`` pieces in a row become the text their bytes spell (each byte U+FFFD if invalid)."""
    out: list[str] = []
    pending = bytearray()

    def flush() -> None:
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\ufffd" * len(pending))
            pending.clear()

    for token in tokens:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            try:
                pending.append(int(token[3:5], 16))
                continue
            except ValueError:
                pass
        flush()
        out.append(token)
    flush()
    return out


class LlamaTokenizer(_SentencePieceTokenizer):
    """Llama's SentencePiece BPE tokenizer (``tokenizer.model``) in Python over `sentencepiece`;
    ``LlamaTokenizerFast`` is its Rust twin.

    Options as in the reference: ``add_bos_token`` / ``add_eos_token``, ``add_prefix_space`` (True),
    ``legacy`` (False: the prefix ``▁`` is added only at the very start of the text).
    """

    padding_side = "left"
    default_special_tokens: ClassVar[dict[str, str | None]] = {
        "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
    }
    init_arguments: ClassVar[tuple[str, ...]] = ("add_bos_token", "add_eos_token", "add_prefix_space", "legacy",
                                                 "use_default_system_prompt", "spaces_between_special_tokens",
                                                 "sp_model_kwargs")

    def __init__(
        self,
        vocab_file: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        add_prefix_space: bool | None = None,
        legacy: bool = False,
        **kwargs: Any,
    ) -> None:
        self._load(vocab_file, normalize=False)
        self._add_bos_token, self._add_eos_token = bool(add_bos_token), bool(add_eos_token)
        self.add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
        self.legacy = bool(legacy)
        if not kwargs.get("extra_special_tokens") and not kwargs.get("additional_special_tokens"):
            kwargs["extra_special_tokens"] = self._proto_special_tokens()
        super().__init__(**kwargs)

    add_bos_token = property(lambda self: self._add_bos_token,
                             lambda self, value: setattr(self, "_add_bos_token", bool(value)))
    add_eos_token = property(lambda self: self._add_eos_token,
                             lambda self, value: setattr(self, "_add_eos_token", bool(value)))

    @property
    def prepend_scheme(self) -> str:
        if not self.add_prefix_space:
            return "never"
        return "always" if self.legacy else "first"

    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        return bos_eos_template(self, pair)

    def _tokenize_chunk(self, text: str, start: int, at_start: bool) -> list[tuple[str, int, int, int]]:
        text = text.replace(" ", SPIECE_UNDERLINE)
        scheme = self.prepend_scheme
        prefixed = (scheme == "always" or scheme == "first" and at_start) and not text.startswith(SPIECE_UNDERLINE)
        if prefixed:
            text = SPIECE_UNDERLINE + text
        tokens = []
        for piece, _, begin, end in self._pieces_with_offsets(text):
            if prefixed:  # the added ▁ stands for the first character, as in the tokenizers library
                begin, end = max(begin - 1, 0), max(end - 1, 1)
            tokens.append((piece, start + begin, start + end, 0))
        return tokens

    def _decode_tokens(self, tokens: list[str]) -> str:
        text = "".join(_decode_byte_pieces([t.replace(SPIECE_UNDERLINE, " ") for t in tokens]))
        if self.add_prefix_space and text.startswith(" "):
            text = text[1:]
        return text

    @property
    def _cleanup_would_corrupt(self) -> bool:
        return True

    def _family_config(self) -> dict[str, Any]:
        return {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                "add_prefix_space": self.add_prefix_space, "legacy": self.legacy}

    def build_backend(self) -> Tokenizer:
        vocab = dict(self._vocab)
        merges = []
        for piece, piece_id in vocab.items():
            for split in range(1, len(piece)):
                left, right = piece[:split], piece[split:]
                if left in vocab and right in vocab:
                    merges.append((piece_id, split, left, right))
        merges.sort(key=lambda m: (m[0], m[1]))
        backend = Tokenizer(BPE(vocab, [(left, right) for _, _, left, right in merges], fuse_unk=True,
                                byte_fallback=True, dropout=None))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE,
                                                         prepend_scheme=self.prepend_scheme, split=False)
        steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if self.add_prefix_space:
            steps.append(decoders.Strip(content=" ", left=1))
        backend.decoder = decoders.Sequence(steps)
        return self._backend_with_template(backend)

    def converted_init_kwargs(self) -> dict[str, Any]:
        return {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                "extra_special_tokens": self._extra_special_tokens}


class T5Tokenizer(_SentencePieceTokenizer):
    """T5's SentencePiece unigram tokenizer (``spiece.model``) in Python over `sentencepiece`;
    ``T5TokenizerFast`` is its Rust twin. ``extra_ids`` sentinel tokens (``<extra_id_0>``...) are
    added after the vocabulary, as in the reference."""

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "spiece.model"}
    default_special_tokens: ClassVar[dict[str, str | None]] = {
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
    }
    init_arguments: ClassVar[tuple[str, ...]] = ("extra_ids", "legacy", "add_prefix_space", "sp_model_kwargs")

    def __init__(self, vocab_file: str | None = None, extra_ids: int = 100, **kwargs: Any) -> None:
        self._load(vocab_file, normalize=True)
        self.extra_ids = int(extra_ids)
        extra = kwargs.pop("extra_special_tokens", None) or kwargs.pop("additional_special_tokens", None)
        extra = list(extra) if extra else list(self._proto_special_tokens())
        sentinels = [f"<extra_id_{i}>" for i in range(self.extra_ids)]
        if not any("<extra_id_" in str(token) for token in extra):
            extra += sentinels
            # T5 numbers its sentinels backwards: <extra_id_0> is the last id.
            added = dict(kwargs.get("added_tokens_decoder") or {})
            taken = {str(v.get("content") if isinstance(v, dict) else v) for v in added.values()}
            for i, sentinel in enumerate(sentinels):
                if sentinel not in taken and sentinel not in self._vocab:
                    added[str(len(self._pieces) + self.extra_ids - 1 - i)] = {"content": sentinel, "special": True,
                                                                              "normalized": False}
            kwargs["added_tokens_decoder"] = added
        elif self.extra_ids and sum("<extra_id_" in str(t) for t in extra) != self.extra_ids:
            raise TokenizerError(
                f"extra_ids={self.extra_ids} but additional_special_tokens lists "
                f"{sum('<extra_id_' in str(t) for t in extra)} <extra_id_N> tokens; they must agree."
            )
        kwargs["extra_special_tokens"] = extra
        super().__init__(**kwargs)

    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        eos = [self.eos_token_id] if self.eos_token is not None else []
        single = [("A", 0)] + ([(eos, 0)] if eos else [])
        return single + [("B", 0)] + ([(eos, 0)] if eos else []) if pair else single

    def _tokenize_chunk(self, text: str, start: int, at_start: bool) -> list[tuple[str, int, int, int]]:
        tokens = []
        number = -1
        for piece, _, piece_begin, piece_end in self._pieces_with_offsets(text):
            if piece.startswith(SPIECE_UNDERLINE) or number < 0:
                number += 1  # text is split on whitespace before each word gets its ▁
            if piece.startswith(SPIECE_UNDERLINE):
                # The spaces are gone before the ▁ is added back: it stands for the word's first character.
                while piece_begin < len(text) and self._normalizes_to(text[piece_begin]) in ("", SPIECE_UNDERLINE):
                    piece_begin += 1
                if piece_begin >= piece_end:
                    piece_end = min(piece_begin + 1, len(text))
            while piece_end - 1 > piece_begin and self._normalizes_to(text[piece_end - 1]) == "":
                piece_end -= 1  # characters the normalizer drops belong to no token
            tokens.append((piece, start + piece_begin, start + piece_end, number))
        return tokens

    def _normalizes_to(self, char: str) -> str:
        cache = self.__dict__.setdefault("_normalized_chars", {})
        if char not in cache:
            cache[char] = SPIECE_UNDERLINE if char in WHITESPACE else self._sp.normalize(char).lstrip(SPIECE_UNDERLINE) \
                or ("" if not self._sp.normalize("a" + char + "a").count(SPIECE_UNDERLINE) > 1 else SPIECE_UNDERLINE)
        return cache[char]

    def _decode_tokens(self, tokens: list[str]) -> str:
        parts = []
        for index, token in enumerate(tokens):
            token = token.replace(SPIECE_UNDERLINE, " ")
            if index == 0 and token.startswith(" "):
                token = token[1:]
            parts.append(token)
        return "".join(parts)

    def _family_config(self) -> dict[str, Any]:
        return {"extra_ids": self.extra_ids}

    def build_backend(self) -> Tokenizer:
        backend = Tokenizer(Unigram([(piece, score) for piece, score, _ in self._model.pieces],
                                    unk_id=self._model.unk_id, byte_fallback=self._model.byte_fallback))
        if self._model.precompiled_charsmap:
            backend.normalizer = normalizers.Precompiled(self._model.precompiled_charsmap)
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True),
        ])
        backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True)
        return self._backend_with_template(backend)

    def converted_init_kwargs(self) -> dict[str, Any]:
        return {"extra_special_tokens": self._extra_special_tokens}
