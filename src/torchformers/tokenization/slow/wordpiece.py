"""BERT's WordPiece tokenizer in pure Python, from ``vocab.txt``.

The text is cleaned (control characters dropped, whitespace made plain spaces), CJK ideographs
are set apart, accents stripped and letters lower-cased as the config says, then split on
whitespace and punctuation, and each word is cut greedily into the longest vocabulary pieces
(continuations prefixed with ``##``). Character offsets follow every step back to the input.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, ClassVar

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from ...errors import TokenizerFileError, describe_path
from ...files import atomic_write_text
from .base import PreTrainedTokenizer

# Unicode White_Space: what the `tokenizers` library treats as whitespace (str.isspace() differs).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                       "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char).startswith("C")


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """Read ``vocab.txt`` (one token a line, the line number is its id)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        raise TokenizerFileError(f"{describe_path(path)} does not exist; a WordPiece tokenizer needs its vocab.txt.") \
            from None
    except UnicodeDecodeError:
        raise TokenizerFileError(f"{describe_path(path)} is not UTF-8 text; it is not a vocab.txt, or it is "
                                 "corrupt: re-download it.") from None
    except OSError as error:
        raise TokenizerFileError(f"Cannot read {describe_path(path)}: {error.strerror or error}.") from None
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise TokenizerFileError(f"{describe_path(path)} is empty; a vocab.txt lists one token a line.")
    if "\x00" in lines[0]:
        raise TokenizerFileError(f"{describe_path(path)} holds binary data, not a vocab.txt; re-download it.")
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        vocab[line.rstrip()] = index
    return vocab


class BertTokenizer(PreTrainedTokenizer):
    """BERT's WordPiece tokenizer in pure Python (``vocab.txt``); ``BertTokenizerFast`` is its Rust twin.

    Options as in the reference: ``do_lower_case`` (default True), ``tokenize_chinese_chars``
    (True), ``strip_accents`` (None: follow ``do_lower_case``).
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "vocab.txt"}
    model_input_names: ClassVar[list[str]] = ["input_ids", "token_type_ids", "attention_mask"]
    default_special_tokens: ClassVar[dict[str, str | None]] = {
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }
    init_arguments: ClassVar[tuple[str, ...]] = ("do_lower_case", "tokenize_chinese_chars", "strip_accents",
                                                 "do_basic_tokenize", "never_split", "vocab")
    max_input_chars_per_word = 100

    def __init__(
        self,
        vocab_file: str | None = None,
        do_lower_case: bool = True,
        tokenize_chinese_chars: bool = True,
        strip_accents: bool | None = None,
        vocab: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if vocab is None:
            if vocab_file is None:
                raise TokenizerFileError("BertTokenizer needs vocab_file (a vocab.txt) or vocab (a dict).")
            vocab = load_vocab(vocab_file)
        self.vocab_file = vocab_file
        self._vocab = dict(vocab)
        self._ids_to_tokens = {index: token for token, index in self._vocab.items()}
        self._size = max(self._ids_to_tokens, default=-1) + 1
        self.do_lower_case = do_lower_case
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        super().__init__(**kwargs)

    @classmethod
    def _vocabulary_from_model(cls, model: dict[str, Any], path: str) -> dict[str, Any]:
        if model.get("type", "WordPiece") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            return super()._vocabulary_from_model(model, path)
        return {"vocab": model["vocab"]}

    # -- vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab

    def get_base_vocab(self) -> dict[str, int]:
        return self._vocab

    def _base_token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def _base_id_to_token(self, index: int) -> str | None:
        return self._ids_to_tokens.get(index)

    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        cls, sep = self.cls_token, self.sep_token
        if cls is None or sep is None:
            return super()._template(pair)
        cls_ids, sep_ids = [self._token_to_id(cls)], [self._token_to_id(sep)]
        single = [(cls_ids, 0), ("A", 0), (sep_ids, 0)]
        return single + [("B", 1), (sep_ids, 1)] if pair else single

    # -- tokenization --------------------------------------------------------------------
    def _normalize(self, text: str) -> tuple[list[str], list[int]]:
        """The normalized characters and, for each, the index of the input character it comes from."""
        chars: list[str] = []
        origin: list[int] = []
        strip = self.strip_accents if self.strip_accents is not None else self.do_lower_case
        for index, char in enumerate(text):
            if char == "\x00" or char == "\ufffd" or is_control(char):
                continue
            if char in WHITESPACE:
                char = " "
            pieces = " " + char + " " if self.tokenize_chinese_chars and is_cjk(char) else char
            if strip:
                pieces = "".join(c for c in unicodedata.normalize("NFD", pieces) if unicodedata.category(c) != "Mn")
            if self.do_lower_case:
                pieces = "".join(c.lower() for c in pieces)
            chars.extend(pieces)
            origin.extend([index] * len(pieces))
        return chars, origin

    def _tokenize_chunk(self, text: str, start: int, at_start: bool) -> list[tuple[str, int, int, int]]:
        chars, origin = self._normalize(text)
        words: list[tuple[int, int]] = []  # [begin, end) in chars
        begin = None
        for index, char in enumerate(chars):
            if char in WHITESPACE:
                if begin is not None:
                    words.append((begin, index))
                    begin = None
            elif is_punctuation(char):
                if begin is not None:
                    words.append((begin, index))
                    begin = None
                words.append((index, index + 1))
            elif begin is None:
                begin = index
        if begin is not None:
            words.append((begin, len(chars)))
        tokens = []
        vocab = self._vocab
        unk = self.unk_token
        for number, (word_begin, word_end) in enumerate(words):
            word = "".join(chars[word_begin:word_end])
            pieces = []
            if word_end - word_begin <= self.max_input_chars_per_word:
                position = 0
                while position < len(word):
                    end = len(word)
                    while end > position:
                        piece = word[position:end] if position == 0 else "##" + word[position:end]
                        if piece in vocab:
                            pieces.append((piece, position, end))
                            break
                        end -= 1
                    else:
                        pieces = []
                        break
                    position = end
            if not pieces:
                pieces = [(unk, 0, len(word))]
            for piece, piece_begin, piece_end in pieces:
                tokens.append((piece, start + origin[word_begin + piece_begin],
                               start + origin[word_begin + piece_end - 1] + 1, number))
        return tokens

    def _decode_tokens(self, tokens: list[str]) -> str:
        parts = []
        for index, token in enumerate(tokens):
            if index:
                token = token[2:] if token.startswith("##") else " " + token
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"),
                                  (" 're", "'re")):
                token = token.replace(before, after)
            parts.append(token)
        return "".join(parts)

    # -- files ---------------------------------------------------------------------------
    def _family_config(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                "strip_accents": self.strip_accents}

    def _save_vocabulary_files(self, directory: str, prefix: str, legacy_format: bool | None) -> list[str]:
        path = os.path.join(directory, prefix + "vocab.txt")
        lines = [self._ids_to_tokens.get(index, f"[unused_missing_{index}]") for index in range(self._size)]
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        return [path]

    def build_backend(self) -> Tokenizer:
        backend = Tokenizer(WordPiece(self._vocab, unk_token=str(self.unk_token),
                                      max_input_chars_per_word=self.max_input_chars_per_word))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=self.tokenize_chinese_chars, strip_accents=self.strip_accents,
            lowercase=self.do_lower_case,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        return self._backend_with_template(backend)
