"""The tokenizer API shared by the fast and slow implementations, and BatchEncoding.

A tokenizer turns texts into :class:`Encoding`-like objects (ids, type ids, offsets, word and
sequence ids, overflowing parts) through ``_encode_batch``; everything users see on top of
that (argument handling, padding and truncation strategies, the output dictionary, tensors,
decoding, special tokens, loading and saving) lives here, once, for both.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import UserDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from tokenizers import AddedToken

from ..errors import (
    RemoteCodeError,
    TokenizerError,
    TokenizerFileError,
    UnsupportedArgumentError,
    describe_path,
)
from ..files import atomic_write_text
from ..hub import resolve_file

logger = logging.getLogger("torchformers")

VERY_LARGE_INTEGER = int(1e30)  # the reference's "no limit" model_max_length
LARGE_INTEGER = int(1e20)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length")

REMOTE_CODE_MESSAGE = (
    "trust_remote_code=True is refused: torchformers never runs Python code shipped inside a model "
    "repository. Use a tokenizer whose tokenizer_class torchformers supports (or one with a tokenizer.json, "
    "which PreTrainedTokenizerFast loads)."
)

# Keys of tokenizer_config.json that describe files or loading, not the tokenizer itself.
_LOADING_KEYS = ("tokenizer_class", "auto_map", "name_or_path", "is_local", "local_files_only", "files_loaded",
                 "tokenizer_file", "vocab_file", "merges_file", "special_tokens_map_file", "added_tokens_file")
_HUB_KEYS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


@dataclass(frozen=True)
class Truncation:
    """How to truncate: the settings of one encode call."""

    max_length: int
    stride: int = 0
    strategy: str = "longest_first"
    direction: str = "right"


@dataclass(frozen=True)
class Padding:
    """How to pad: ``length`` None pads to the longest in the batch."""

    length: int | None
    direction: str
    pad_id: int
    pad_type_id: int
    pad_token: str
    pad_to_multiple_of: int | None = None


class CharSpan(NamedTuple):
    """Character span ``[start, end)`` in the original text."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Token span ``[start, end)`` in the encoded sequence."""

    start: int
    end: int


def to_py(value: Any) -> Any:
    """Tensors and arrays (and lists of them) as plain Python lists and ints."""
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_py(v) for v in value]
    return value


def _tensor_type_name(tensor_type: Any) -> str | None:
    if tensor_type is None:
        return None
    name = getattr(tensor_type, "value", tensor_type)
    if name not in ("pt", "np"):
        raise UnsupportedArgumentError(
            f"return_tensors={tensor_type!r} is not supported; use 'pt' (torch), 'np' (numpy) or None (lists)."
        )
    return name


class BatchEncoding(UserDict):
    """The output of a tokenizer call: a dict of model inputs plus the encodings behind them.

    As in the reference library, ``batch["input_ids"]`` and ``batch.input_ids`` read values,
    ``batch[0]`` is the first encoding, and the alignment methods (``word_ids``,
    ``char_to_token``, ``token_to_chars``...) take an optional batch index first. Both the fast
    and the slow tokenizers of torchformers fill them.
    """

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        encoding: Any = None,
        tensor_type: str | None = None,
        prepend_batch_axis: bool = False,
        n_sequences: int | None = None,
    ) -> None:
        super().__init__(data)
        if encoding is not None and not isinstance(encoding, (list, tuple)):
            encoding = [encoding]
        self._encodings = list(encoding) if encoding is not None else None
        if n_sequences is None and self._encodings:
            n_sequences = self._encodings[0].n_sequences
        self._n_sequences = n_sequences
        self.convert_to_tensors(tensor_type=tensor_type, prepend_batch_axis=prepend_batch_axis)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return self.data[item]
        if self._encodings is not None and isinstance(item, int):
            return self._encodings[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.data.items()}
        raise KeyError(f"BatchEncoding keys are names (str), encoding indices (int) or slices, not {item!r}.")

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__") or item in ("data", "_encodings", "_n_sequences"):
            raise AttributeError(item)
        try:
            return self.data[item]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key or attribute {item!r}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "encodings": self._encodings, "n_sequences": self._n_sequences}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state.get("data", {})
        self._encodings = state.get("encodings")
        self._n_sequences = state.get("n_sequences")

    @property
    def n_sequences(self) -> int | None:
        """How many sequences (1, or 2 for pairs) each encoding was built from."""
        return self._n_sequences

    @property
    def is_fast(self) -> bool:
        """True when alignment information is available (always, for torchformers tokenizers)."""
        return self._encodings is not None

    @property
    def encodings(self) -> list[Any] | None:
        return self._encodings

    def _encoding(self, batch_index: int, method: str) -> Any:
        if not self._encodings:
            raise TokenizerError(f"{method}() needs the encodings of a tokenizer call; this BatchEncoding has none.")
        return self._encodings[batch_index]

    @staticmethod
    def _split(batch_or_index: int, index: int | None) -> tuple[int, int]:
        if index is None:
            return 0, batch_or_index
        return batch_or_index, index

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index, "tokens").tokens

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the sequence (0 or 1) it comes from; None for special tokens."""
        return self._encoding(batch_index, "sequence_ids").sequence_ids

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it comes from; None for special and padding tokens."""
        return self._encoding(batch_index, "word_ids").word_ids

    def words(self, batch_index: int = 0) -> list[int | None]:
        return self.word_ids(batch_index)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        batch_index, token_index = self._split(batch_or_token_index, token_index)
        encoding = self._encoding(batch_index, "token_to_sequence")
        if token_index < 0:
            token_index += len(encoding.ids)
        return encoding.token_to_sequence(token_index)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        batch_index, token_index = self._split(batch_or_token_index, token_index)
        encoding = self._encoding(batch_index, "token_to_word")
        if token_index < 0:
            token_index += len(encoding.ids)
        return encoding.token_to_word(token_index)

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        batch_index, word_index = self._split(batch_or_word_index, word_index)
        if word_index < 0:
            word_index += self._n_sequences or 0
        span = self._encoding(batch_index, "word_to_tokens").word_to_tokens(word_index, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The span of original characters a token comes from; None for special tokens."""
        batch_index, token_index = self._split(batch_or_token_index, token_index)
        span = self._encoding(batch_index, "token_to_chars").token_to_chars(token_index)
        return CharSpan(*span) if span is not None else None

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        """The index of the token that covers a character of the original text (None if none does)."""
        batch_index, char_index = self._split(batch_or_char_index, char_index)
        return self._encoding(batch_index, "char_to_token").char_to_token(char_index, sequence_index)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        batch_index, word_index = self._split(batch_or_word_index, word_index)
        span = self._encoding(batch_index, "word_to_chars").word_to_chars(word_index, sequence_index)
        return CharSpan(*span) if span is not None else None

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        batch_index, char_index = self._split(batch_or_char_index, char_index)
        return self._encoding(batch_index, "char_to_word").char_to_word(char_index, sequence_index)

    def convert_to_tensors(self, tensor_type: str | None = None, prepend_batch_axis: bool = False) -> BatchEncoding:
        """Turn every value into a torch tensor (``"pt"``) or numpy array (``"np"``), in place."""
        name = _tensor_type_name(tensor_type)
        if name is None:
            return self
        if name == "pt":
            import torch

            def as_tensor(value: Any) -> Any:
                if torch.is_tensor(value):
                    return value
                if _is_empty(value):
                    return torch.tensor(value, dtype=torch.int64)
                return torch.tensor(value)
        else:
            import numpy as np

            def as_tensor(value: Any) -> Any:
                if isinstance(value, np.ndarray):
                    return value
                if _is_empty(value):
                    return np.asarray(value, dtype=np.int64)
                return np.asarray(value)

        for key, value in list(self.data.items()):
            if prepend_batch_axis:
                value = [value]
            if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
                if len({len(row) for row in value}) > 1:
                    raise TokenizerError(
                        f"Cannot make a tensor of {key!r}: its rows have different lengths "
                        f"({sorted({len(row) for row in value})}). Pass padding=True (and truncation=True) so "
                        "the batch has one length."
                    )
            try:
                self.data[key] = as_tensor(value)
            except (TypeError, ValueError) as error:
                raise TokenizerError(f"Cannot make a tensor of {key!r}: {error}") from None
        return self

    def to(self, device: Any, *, non_blocking: bool = False) -> BatchEncoding:
        """Move every tensor to ``device`` (a string, torch.device or index); returns self."""
        self.data = {
            key: value.to(device=device, non_blocking=non_blocking) if hasattr(value, "to") else value
            for key, value in self.data.items()
        }
        return self


def _is_empty(value: Any) -> bool:
    while isinstance(value, (list, tuple)):
        if not value:
            return True
        value = value[0]
    return False


def _check_text(value: Any, name: str) -> None:
    """Raise TokenizerError unless value is a str, a list of str, or a list of lists/pairs of str."""

    def ok(item: Any, depth: int) -> bool:
        if isinstance(item, str):
            return True
        if isinstance(item, (list, tuple)) and depth < 3:
            return all(ok(sub, depth + 1) for sub in item)
        return False

    if not ok(value, 0):
        found = value if not isinstance(value, (list, tuple)) else next(
            (v for v in _flatten(value) if not isinstance(v, str)), value
        )
        raise TokenizerError(
            f"{name} must be a str, a list of str (a batch, or one pre-split text with is_split_into_words=True) "
            f"or a list of lists of str; got {type(found).__name__} {found!r:.80}."
        )


def _flatten(value: Any) -> Iterable[Any]:
    for item in value:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item


def as_added_token(value: Any, *, special: bool, where: str = "") -> AddedToken:
    """A str, AddedToken or its saved dict form as an AddedToken."""
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        fields = {k: v for k, v in value.items() if k in ("content", "single_word", "lstrip", "rstrip",
                                                          "normalized", "special")}
        fields.setdefault("special", special)
        return AddedToken(**fields)
    raise TokenizerError(
        f"{where or 'A special token'} must be a string or an AddedToken dict with a 'content' string, "
        f"got {type(value).__name__} {value!r:.80}."
    )


def added_token_state(token: AddedToken) -> dict[str, Any]:
    return {"content": token.content, "single_word": token.single_word, "lstrip": token.lstrip,
            "rstrip": token.rstrip, "normalized": token.normalized, "special": token.special}


def read_json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON; an unreadable or malformed file raises TokenizerFileError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise TokenizerFileError(
            f"{describe_path(path)} ({what}) is not valid JSON (line {error.lineno}, column {error.colno}: "
            f"{error.msg}); fix or re-download the file."
        ) from None
    except UnicodeDecodeError:
        raise TokenizerFileError(f"{describe_path(path)} ({what}) is not UTF-8 text; re-download it.") from None
    except OSError as error:
        raise TokenizerFileError(f"Cannot read {describe_path(path)} ({what}): {error.strerror or error}.") from None


class PreTrainedTokenizerBase:
    """What every tokenizer offers: encoding, decoding, special tokens, chat templates, loading and saving.

    Subclasses implement ``_encode_batch`` (texts to encodings), the vocabulary lookups, ``_decode``
    and how their files are written. Arguments follow the reference library's ``__call__``; an
    argument torchformers does not know raises UnsupportedArgumentError instead of being ignored.
    """

    vocab_files_names: ClassVar[dict[str, str]] = {}
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]
    padding_side: str = "right"
    truncation_side: str = "right"
    # Defaults for the family's special tokens (a value of None means the family has none).
    default_special_tokens: ClassVar[dict[str, str | None]] = {}
    # Arguments a family's __init__ takes besides the shared ones (accepted by from_pretrained).
    init_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kwargs: Any) -> None:
        self.init_inputs: tuple[Any, ...] = ()
        self.init_kwargs: dict[str, Any] = {k: copy.deepcopy(v) for k, v in kwargs.items() if k not in _LOADING_KEYS}
        self.name_or_path = str(kwargs.pop("name_or_path", ""))
        for key in _LOADING_KEYS:
            kwargs.pop(key, None)
        self._special_tokens: dict[str, AddedToken | str | None] = dict.fromkeys(SPECIAL_TOKENS_ATTRIBUTES)
        for key, default in self.default_special_tokens.items():
            self._special_tokens[key] = default
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            if key in kwargs:
                value = kwargs.pop(key)
                self._special_tokens[key] = None if value is None else self._checked_token(value, key)
        extra = kwargs.pop("extra_special_tokens", None)
        additional = kwargs.pop("additional_special_tokens", None)
        extra = extra if extra else additional
        self._extra_special_tokens: list[AddedToken | str] = []
        if isinstance(extra, dict):  # named model-specific tokens ({"image_token": "<image>"})
            for name, value in extra.items():
                self.__dict__[name] = str(self._checked_token(value, name))
            extra = list(extra.values())
        if extra:
            if not isinstance(extra, (list, tuple)):
                raise TokenizerError(f"extra_special_tokens must be a list of tokens, got {extra!r:.80}.")
            self._extra_special_tokens = [self._checked_token(t, "extra_special_tokens") for t in extra]

        model_max_length = kwargs.pop("model_max_length", kwargs.pop("max_len", None))
        self.model_max_length = int(model_max_length) if model_max_length is not None else VERY_LARGE_INTEGER
        self.padding_side = kwargs.pop("padding_side", type(self).padding_side)
        self.truncation_side = kwargs.pop("truncation_side", type(self).truncation_side)
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) not in ("right", "left"):
                raise TokenizerError(f"{name} must be 'right' or 'left', got {getattr(self, name)!r}.")
        self.model_input_names = list(kwargs.pop("model_input_names", type(self).model_input_names))
        self.clean_up_tokenization_spaces = bool(kwargs.pop("clean_up_tokenization_spaces", False))
        self._force_bpe_cleanup = bool(
            kwargs.pop("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        )
        self.split_special_tokens = bool(kwargs.pop("split_special_tokens", False))
        chat_template = kwargs.pop("chat_template", None)
        if isinstance(chat_template, (list, tuple)):
            chat_template = {item["name"]: item["template"] for item in chat_template}
        self.chat_template: str | dict[str, str] | None = chat_template
        self.verbose = bool(kwargs.pop("verbose", False))
        self._warned_too_long = False
        # Whatever else the config holds (do_basic_tokenize, backend, ...) is kept for saving, unused.
        for name, value in kwargs.items():
            if name.endswith("_token") and isinstance(value, str) and name not in self.__dict__:
                self.__dict__[name] = value

    @staticmethod
    def _checked_token(value: Any, key: str) -> AddedToken | str:
        if isinstance(value, (str, AddedToken)):
            return value
        return as_added_token(value, special=True, where=f"The special token {key}")

    # -- special tokens --------------------------------------------------------------------
    def _get_special(self, key: str) -> str | None:
        value = self._special_tokens.get(key)
        return None if value is None else str(value)

    def _set_special(self, key: str, value: Any) -> None:
        if value is not None and not isinstance(value, (str, AddedToken)):
            raise TokenizerError(f"{key} must be a string or AddedToken, got {type(value).__name__}.")
        self._special_tokens[key] = value

    def _get_special_id(self, key: str) -> int | None:
        token = self._get_special(key)
        return None if token is None else self.convert_tokens_to_ids(token)

    def _set_special_id(self, key: str, value: int | None) -> None:
        self._special_tokens[key] = None if value is None else self.convert_ids_to_tokens(int(value))

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, as strings (``{"pad_token": "[PAD]", ...}``)."""
        return {key: str(value) for key, value in self._special_tokens.items() if value is not None}

    @property
    def extra_special_tokens(self) -> list[str]:
        return [str(token) for token in self._extra_special_tokens]

    @extra_special_tokens.setter
    def extra_special_tokens(self, tokens: Sequence[str | AddedToken] | None) -> None:
        self._extra_special_tokens = list(tokens or [])

    additional_special_tokens = extra_special_tokens

    @property
    def extra_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.extra_special_tokens)

    additional_special_tokens_ids = extra_special_tokens_ids

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token (named ones first, then the extra ones), without duplicates."""
        tokens = [str(v) for v in self._special_tokens.values() if v is not None] + self.extra_special_tokens
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def pad_token_type_id(self) -> int:
        return 0

    def add_special_tokens(
        self, special_tokens_dict: dict[str, Any], replace_extra_special_tokens: bool = True
    ) -> int:
        """Set named special tokens (``{"pad_token": "[PAD]"}``) or extra ones, adding those the vocabulary
        lacks; returns how many tokens were added to the vocabulary."""
        if not special_tokens_dict:
            return 0
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict:
            special_tokens_dict.setdefault("extra_special_tokens",
                                           special_tokens_dict.pop("additional_special_tokens"))
        to_add: list[AddedToken] = []
        for key, value in special_tokens_dict.items():
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)):
                    raise TokenizerError(f"extra_special_tokens must be a list of tokens, got {value!r:.80}.")
                tokens = [as_added_token(t, special=True, where="An extra special token") for t in value]
                tokens = [AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip,
                                     normalized=False, special=True) if isinstance(v, str) else t
                          for t, v in zip(tokens, value, strict=False)]
                if replace_extra_special_tokens:
                    self._extra_special_tokens = list(tokens)
                else:
                    known = set(self.extra_special_tokens)
                    self._extra_special_tokens += [t for t in tokens if t.content not in known]
                to_add += tokens
            elif key in SPECIAL_TOKENS_ATTRIBUTES:
                token = as_added_token(value, special=True, where=f"The special token {key}")
                if isinstance(value, str):
                    token = AddedToken(value, normalized=False, special=True)
                self._special_tokens[key] = token
                to_add.append(token)
            else:
                raise TokenizerError(
                    f"{key!r} is not a special token name; use one of {list(SPECIAL_TOKENS_ATTRIBUTES)} or "
                    "'extra_special_tokens'."
                )
        return self.add_tokens(to_add, special_tokens=True)

    def add_tokens(self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False) -> int:
        """Add tokens the vocabulary lacks (they are never split); returns how many were added."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        tokens = []
        for token in new_tokens:
            if isinstance(token, str):
                token = AddedToken(token, special=special_tokens, normalized=not special_tokens)
            elif not isinstance(token, AddedToken):
                raise TokenizerError(f"add_tokens takes strings or AddedToken objects, got {type(token).__name__}.")
            elif special_tokens and not token.special:
                token = AddedToken(token.content, single_word=token.single_word, lstrip=token.lstrip,
                                   rstrip=token.rstrip, normalized=token.normalized, special=True)
            tokens.append(token)
        return self._add_tokens(tokens)

    def _add_special_tokens_to_vocab(self) -> None:
        """Make sure every special token is in the vocabulary and marked special (the reference adds
        missing ones at load)."""
        added = self.get_added_vocab()
        vocab = None
        to_add = []
        for value in list(self._special_tokens.values()) + list(self._extra_special_tokens):
            if value is None:
                continue
            content = str(value)
            if content in added:
                continue
            if vocab is None:
                vocab = self.get_vocab()
            token = value if isinstance(value, AddedToken) else AddedToken(content, special=True, normalized=False)
            if not token.special:
                token = AddedToken(content, single_word=token.single_word, lstrip=token.lstrip,
                                   rstrip=token.rstrip, normalized=token.normalized, special=True)
            to_add.append(token)
        if to_add:
            self._add_tokens(to_add)

    # -- vocabulary (implemented by subclasses) ------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def get_vocab(self) -> dict[str, int]:
        """Every token (added ones included) and its id."""
        raise NotImplementedError

    def get_added_vocab(self) -> dict[str, int]:
        return {token.content: index for index, token in self.added_tokens_decoder.items()}

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return dict(sorted(self.get_added_vocab().items(), key=lambda item: item[1]))

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        raise NotImplementedError

    def _add_tokens(self, tokens: list[AddedToken]) -> int:
        raise NotImplementedError

    def _token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _id_to_token(self, index: int) -> str | None:
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Token(s) to id(s); an unknown token gives the unknown token's id (or None without one)."""
        if isinstance(tokens, str):
            return self._lookup(tokens)
        return [self._lookup(token) for token in tokens]

    def _lookup(self, token: str) -> int | None:
        index = self._token_to_id(token)
        if index is None:
            unk = self._get_special("unk_token")
            return self._token_to_id(unk) if unk is not None else None
        return index

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) to token string(s)."""
        if isinstance(ids, int) or hasattr(ids, "__index__"):
            return self._id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in skip]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        raise NotImplementedError

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    @property
    def is_fast(self) -> bool:
        return False

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for special tokens, 0 for sequence tokens. Without ``already_has_special_tokens`` the mask is the
        one ``build_inputs_with_special_tokens`` would give."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise TokenizerError("With already_has_special_tokens=True pass a single sequence of ids.")
            special = set(self.all_special_ids)
            return [1 if int(i) in special else 0 for i in token_ids_0]
        return self._template_ids(token_ids_0, token_ids_1)[1]

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """The ids with the special tokens this tokenizer adds around one sequence or a pair."""
        return self._template_ids(token_ids_0, token_ids_1)[0]

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        return self._template_ids(token_ids_0, token_ids_1)[2]

    def _template_ids(self, ids_0: list[int], ids_1: list[int] | None) -> tuple[list[int], list[int], list[int]]:
        """(ids, special mask, type ids) of the special-token template applied to two id lists."""
        raise NotImplementedError

    # -- encoding ----------------------------------------------------------------------
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
        """Encode inputs (a text, a pre-split text, or a pair of either) into encodings."""
        raise NotImplementedError

    def _strategies(
        self,
        padding: Any,
        truncation: Any,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        verbose: bool,
    ) -> tuple[str | None, str | None, int | None]:
        """(padding strategy, truncation strategy, max_length) with the reference's defaults."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # a max_length alone asks for truncation
        padding = getattr(padding, "value", padding)
        truncation = getattr(truncation, "value", truncation)
        if padding is True:
            if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
                logger.warning("max_length is ignored when padding=True and there is no truncation strategy; "
                               "to pad to max_length use padding='max_length'.")
            pad_strategy: str | None = "longest"
        elif padding in (False, None, "do_not_pad"):
            pad_strategy = None
        elif padding in PADDING_STRATEGIES:
            pad_strategy = padding
        else:
            raise TokenizerError(f"padding={padding!r} is not one of True, False, 'longest', 'max_length', 'do_not_pad'.")
        if truncation is True:
            trunc_strategy: str | None = "longest_first"
        elif truncation in (False, None, "do_not_truncate"):
            trunc_strategy = None
        elif truncation in TRUNCATION_STRATEGIES:
            trunc_strategy = truncation
        else:
            raise TokenizerError(
                f"truncation={truncation!r} is not one of True, False, 'longest_first', 'only_first', "
                "'only_second', 'do_not_truncate'."
            )
        if max_length is None:
            unlimited = self.model_max_length > LARGE_INTEGER
            if pad_strategy == "max_length":
                if unlimited:
                    pad_strategy = None
                else:
                    max_length = self.model_max_length
            if trunc_strategy is not None:
                if unlimited:
                    trunc_strategy = None
                else:
                    max_length = self.model_max_length
        if pad_strategy is not None and (self.pad_token is None or self.pad_token_id is None or self.pad_token_id < 0):
            raise TokenizerError(
                "Asking to pad but the tokenizer has no padding token. Set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, or tokenizer.add_special_tokens({'pad_token': '[PAD]'})."
            )
        if (trunc_strategy is not None and pad_strategy is not None and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of != 0):
            raise TokenizerError(
                f"Truncation and padding are both on but the truncation length ({max_length}) is not a multiple "
                f"of pad_to_multiple_of ({pad_to_multiple_of})."
            )
        return pad_strategy, trunc_strategy, max_length

    def __call__(
        self,
        text: Any = None,
        text_pair: Any = None,
        text_target: Any = None,
        text_pair_target: Any = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens: bool | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenize one text, a batch of texts, or (batches of) text pairs into model inputs.

        Arguments are the reference library's: ``padding`` (True/'longest', 'max_length', False),
        ``truncation`` (True/'longest_first', 'only_first', 'only_second', False), ``max_length``,
        ``stride`` with ``return_overflowing_tokens`` (adds ``overflow_to_sample_mapping``),
        ``return_tensors`` ('pt', 'np' or None) and the ``return_*`` switches.
        ``text_target`` encodes labels (``labels`` in the output when ``text`` is given too).
        """
        options = dict(
            add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, max_length=max_length,
            stride=stride, is_split_into_words=is_split_into_words, pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side, return_tensors=return_tensors, return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask, return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask, return_offsets_mapping=return_offsets_mapping,
            return_length=return_length, verbose=verbose, split_special_tokens=split_special_tokens,
        )
        if tokenizer_kwargs:
            unknown = set(tokenizer_kwargs) - set(options)
            if unknown:
                raise UnsupportedArgumentError(f"tokenizer_kwargs has unsupported arguments {sorted(unknown)}.")
            options.update(tokenizer_kwargs)
        max_target_length = kwargs.pop("max_target_length", None)
        if kwargs:
            raise UnsupportedArgumentError(
                f"{type(self).__name__}.__call__() got unsupported arguments {sorted(kwargs)}; check their spelling."
            )
        if text is None and text_target is None:
            raise TokenizerError("Pass the text to tokenize (text=...) or the target text (text_target=...).")
        encodings = None
        if text is not None:
            encodings = self._encode_plus(text, text_pair, **options)
        if text_target is None:
            return encodings
        target_options = dict(options)
        if max_target_length is not None:
            target_options["max_length"] = max_target_length
        targets = self._encode_plus(text_target, text_pair_target, **target_options)
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def _encode_plus(
        self,
        text: Any,
        text_pair: Any = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens: bool | None = None,
    ) -> BatchEncoding:
        tensor_type = _tensor_type_name(return_tensors)
        _check_text(text, "text")
        if text_pair is not None:
            _check_text(text_pair, "text_pair")
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise TokenizerError("With a batch of texts, text_pair must be a list of the same length.")
            if text_pair is not None and len(text) != len(text_pair):
                raise TokenizerError(
                    f"The batch of texts has {len(text)} items but text_pair has {len(text_pair)}."
                )
            batch = list(zip(text, text_pair, strict=False)) if text_pair is not None else list(text)
        else:
            # An empty text_pair encodes the text alone, as in the reference library.
            batch = [(text, text_pair)] if text_pair else [text]
        if not is_split_into_words:
            for item in batch:
                if isinstance(item, (list, tuple)) and (len(item) != 2 or not all(isinstance(s, str) for s in item)):
                    raise TokenizerError(
                        "Each item of a batch must be a str or a (text, text_pair) pair of str; to pass pre-split "
                        "words use is_split_into_words=True."
                    )
        pad_strategy, trunc_strategy, max_length = self._strategies(
            padding, truncation, max_length, pad_to_multiple_of, verbose
        )
        trunc = None
        if trunc_strategy is not None:
            trunc = Truncation(max_length, int(stride), trunc_strategy, self.truncation_side)
        pad = None
        if pad_strategy is not None:
            side = padding_side if padding_side is not None else self.padding_side
            if side not in ("left", "right"):
                raise TokenizerError(f"padding_side must be 'right' or 'left', got {side!r}.")
            pad = Padding(max_length if pad_strategy == "max_length" else None, side, self.pad_token_id,
                          self.pad_token_type_id, self.pad_token, pad_to_multiple_of)
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        encodings = self._encode_batch(
            batch, add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words,
            truncation=trunc, padding=pad, split_special_tokens=split_special_tokens,
        )
        output = self._encodings_to_dict(
            encodings, return_token_type_ids, return_attention_mask, return_overflowing_tokens,
            return_special_tokens_mask, return_offsets_mapping, return_length,
        )
        rows = output.pop("_rows")
        if trunc is None and verbose:
            self._warn_if_too_long(output["input_ids"])
        result = BatchEncoding(output, rows, tensor_type=tensor_type)
        if not batched and tensor_type is None and not return_overflowing_tokens:
            result = BatchEncoding({k: (v[0] if v and isinstance(v[0], list) else v) for k, v in result.items()},
                                   result.encodings)
        return result

    def _encodings_to_dict(
        self,
        encodings: list[Any],
        return_token_type_ids: bool | None,
        return_attention_mask: bool | None,
        return_overflowing_tokens: bool,
        return_special_tokens_mask: bool,
        return_offsets_mapping: bool,
        return_length: bool,
    ) -> dict[str, Any]:
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_overflowing_tokens:
            rows, mapping = [], []
            for index, encoding in enumerate(encodings):
                parts = [encoding, *encoding.overflowing]
                rows += parts
                mapping += [index] * len(parts)
        else:
            rows = encodings
        output: dict[str, Any] = {"input_ids": [e.ids for e in rows]}
        if return_token_type_ids:
            output["token_type_ids"] = [e.type_ids for e in rows]
        if return_attention_mask:
            output["attention_mask"] = [e.attention_mask for e in rows]
        if return_special_tokens_mask:
            output["special_tokens_mask"] = [e.special_tokens_mask for e in rows]
        if return_offsets_mapping:
            output["offset_mapping"] = [e.offsets for e in rows]
        if return_length:
            output["length"] = [len(e.ids) for e in rows]
        if return_overflowing_tokens:
            output["overflow_to_sample_mapping"] = mapping
        output["_rows"] = rows
        return output

    def _warn_if_too_long(self, rows: list[list[int]]) -> None:
        if self._warned_too_long or not self.model_max_length:
            return
        longest = max((len(ids) for ids in rows), default=0)
        if longest > self.model_max_length:
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length for this model "
                f"({longest} > {self.model_max_length}). Running this sequence through the model will result in "
                "indexing errors"
            )
            self._warned_too_long = True

    def encode(
        self,
        text: Any,
        text_pair: Any = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """The ``input_ids`` of one text (or pair): a list of ints, or a tensor with ``return_tensors``."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, stride=stride, padding_side=padding_side,
                    return_tensors=return_tensors, **kwargs)["input_ids"]

    def encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        """The older name of ``__call__`` for one text or pair."""
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence[Any], **kwargs: Any) -> BatchEncoding:
        """The older name of ``__call__`` for a batch (texts, or (text, pair) tuples)."""
        if not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TokenizerError("batch_encode_plus takes a list of texts or of (text, text_pair) tuples.")
        return self(list(batch_text_or_text_pairs), **kwargs)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """The token strings of a text (without special tokens unless asked)."""
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def pad(
        self,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad already-encoded inputs (a dict of lists, a list of dicts, or a BatchEncoding) to one length."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {key: [example[key] for example in encoded_inputs] for key in encoded_inputs[0]}
        if not isinstance(encoded_inputs, (dict, UserDict)):
            raise TokenizerError("pad() takes a dict of lists, a list of dicts, or a BatchEncoding.")
        if "input_ids" not in encoded_inputs:
            raise TokenizerError(
                f"pad() needs 'input_ids' in the inputs; got keys {sorted(encoded_inputs)}."
            )
        data = {key: to_py(value) for key, value in encoded_inputs.items()}
        tensor_type = _tensor_type_name(return_tensors)
        if tensor_type is None and not isinstance(encoded_inputs, BatchEncoding):
            # Keep the input's tensor type, as the reference does.
            first = encoded_inputs["input_ids"]
            if hasattr(first, "numpy") or (isinstance(first, list) and first and hasattr(first[0], "numpy")):
                tensor_type = "pt"
            elif type(first).__module__ == "numpy" or (isinstance(first, list) and first
                                                       and type(first[0]).__module__ == "numpy"):
                tensor_type = "np"
        ids = data["input_ids"]
        single = not ids or not isinstance(ids[0], list)
        if single:
            data = {key: [value] for key, value in data.items()}
        pad_strategy, _, max_length = self._strategies(padding, False, max_length, pad_to_multiple_of, verbose)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        side = padding_side or self.padding_side
        lengths = [len(row) for row in data["input_ids"]]
        target = None
        if pad_strategy == "longest":
            target = max(lengths, default=0)
        elif pad_strategy == "max_length":
            target = max_length
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target += pad_to_multiple_of - target % pad_to_multiple_of
        fill = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id, "attention_mask": 0,
                "special_tokens_mask": 1}
        if return_attention_mask and "attention_mask" not in data:
            data["attention_mask"] = [[1] * n for n in lengths]
        for key in list(data):
            if key not in fill and key != "offset_mapping":
                continue
            value = fill.get(key, (0, 0))
            rows = []
            for row, n in zip(data[key], lengths, strict=False):
                missing = 0 if target is None else max(0, target - n)
                row = list(row)
                rows.append(row + [value] * missing if side == "right" else [value] * missing + row)
            data[key] = rows
        if not return_attention_mask:
            data.pop("attention_mask", None)
        if single:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, tensor_type=tensor_type, prepend_batch_axis=False)

    # -- decoding ----------------------------------------------------------------------
    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        raise NotImplementedError

    @property
    def _cleanup_would_corrupt(self) -> bool:
        """True for byte-pair tokenizers, whose decoded spaces before punctuation are real (the reference
        skips the cleanup for them)."""
        return False

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str | list[str]:
        """Ids back to text; a batch (list of lists, 2-d tensor) gives a list of texts."""
        if kwargs:
            raise UnsupportedArgumentError(f"decode() got unsupported arguments {sorted(kwargs)}.")
        token_ids = to_py(token_ids)
        if isinstance(token_ids, dict) or isinstance(token_ids, UserDict):
            token_ids = to_py(token_ids["input_ids"])
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], list):
            return [self._decode_one(row, skip_special_tokens, clean_up_tokenization_spaces) for row in token_ids]
        return self._decode_one(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def _decode_one(self, ids: list[int], skip_special_tokens: bool, clean_up: bool | None) -> str:
        text = self._decode([int(i) for i in ids], skip_special_tokens)
        clean_up = self.clean_up_tokenization_spaces if clean_up is None else clean_up
        if clean_up and (not self._cleanup_would_corrupt or self._force_bpe_cleanup):
            text = self.clean_up_tokenization(text)
        return text

    def batch_decode(
        self,
        sequences: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Decode each sequence of a batch."""
        result = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)
        return [result] if isinstance(result, str) else result

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Remove the spaces word-piece decoding leaves before punctuation and in English contractions."""
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode(self.convert_tokens_to_ids(tokens), False)

    # -- chat templates ----------------------------------------------------------------
    def get_chat_template(self, chat_template: str | None = None, tools: list[dict] | None = None) -> str:
        """The template text to use: a template, the name of one of the tokenizer's, or its default."""
        from .chat import select_template

        return select_template(self, chat_template, tools)[1]

    def apply_chat_template(
        self,
        conversation: Any,
        tools: list[dict] | None = None,
        documents: list[dict[str, str]] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_dict: bool = True,
        return_assistant_tokens_mask: bool = False,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Render a conversation (or a batch of them) with the chat template, and tokenize it unless
        ``tokenize=False``. Extra keyword arguments are passed to the template, as in the reference."""
        from .chat import apply_chat_template

        return apply_chat_template(
            self, conversation, tools=tools, documents=documents, chat_template=chat_template,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            tokenize=tokenize, padding=padding, truncation=truncation, max_length=max_length,
            return_tensors=return_tensors, return_dict=return_dict,
            return_assistant_tokens_mask=return_assistant_tokens_mask, tokenizer_kwargs=tokenizer_kwargs,
            **kwargs,
        )

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *init_inputs: Any,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        subfolder: str = "",
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> PreTrainedTokenizerBase:
        """Load the tokenizer of a model directory, a hub id (or its cache), or a single vocabulary file.

        Reads ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json``,
        ``chat_template.jinja`` and the family's vocabulary files; keyword arguments override the
        config (special tokens, ``model_max_length``, ``padding_side``, family options).
        """
        if trust_remote_code:
            raise RemoteCodeError(REMOTE_CODE_MESSAGE)
        for key in ("use_fast", "_from_auto", "_commit_hash", "proxies"):
            kwargs.pop(key, None)
        cls._check_init_kwargs(kwargs)
        hub = dict(cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only,
                   token=token, revision=revision, subfolder=subfolder)
        files = cls._resolve_files(pretrained_model_name_or_path, hub)
        init_kwargs = cls._init_kwargs_from_files(files, kwargs)
        init_kwargs["name_or_path"] = str(pretrained_model_name_or_path)
        init_kwargs["_user_keys"] = tuple(kwargs)
        return cls._from_files(files, init_inputs, init_kwargs)

    @classmethod
    def _check_init_kwargs(cls, kwargs: dict[str, Any]) -> None:
        known = set(SPECIAL_TOKENS_ATTRIBUTES) | set(cls.init_arguments) | set(cls.vocab_files_names) | {
            "extra_special_tokens", "additional_special_tokens", "model_max_length", "padding_side",
            "truncation_side", "model_input_names", "clean_up_tokenization_spaces", "split_special_tokens",
            "chat_template", "verbose", "added_tokens_decoder", "tokenizer_file", "tokenizer_object",
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", "name_or_path",
        }
        unknown = [k for k in kwargs if k not in known and not k.endswith("_token")]
        if unknown:
            raise UnsupportedArgumentError(
                f"{cls.__name__}.from_pretrained() got unsupported arguments {sorted(unknown)}; "
                f"{cls.__name__} takes special tokens, {sorted(cls.init_arguments) or 'no family options'} and "
                "the shared options (model_max_length, padding_side, truncation_side, ...)."
            )

    @classmethod
    def _resolve_files(cls, name_or_path: str | os.PathLike, hub: dict[str, Any]) -> dict[str, str | None]:
        """Local paths of the tokenizer files (None for those the model does not have)."""
        path = os.fspath(name_or_path)
        if os.path.isfile(path):
            file_id = "tokenizer_file" if path.endswith(TOKENIZER_FILE) else "vocab_file"
            return {file_id: path}
        wanted = {"tokenizer_config_file": TOKENIZER_CONFIG_FILE, "special_tokens_map_file": SPECIAL_TOKENS_MAP_FILE,
                  "added_tokens_file": ADDED_TOKENS_FILE, "chat_template_file": CHAT_TEMPLATE_FILE,
                  **cls.vocab_files_names}
        files: dict[str, str | None] = {}
        for file_id, filename in wanted.items():
            files[file_id] = resolve_file(path, filename, required=False, **hub)
        if os.path.isdir(path):
            template_dir = os.path.join(path, hub.get("subfolder") or "", "additional_chat_templates")
            if os.path.isdir(template_dir):
                for name in sorted(os.listdir(template_dir)):
                    if name.endswith(".jinja"):
                        files[f"chat_template_{name[:-6]}"] = os.path.join(template_dir, name)
        return files

    @classmethod
    def _init_kwargs_from_files(cls, files: dict[str, str | None], kwargs: dict[str, Any]) -> dict[str, Any]:
        init_kwargs: dict[str, Any] = {}
        config_file = files.pop("tokenizer_config_file", None)
        if config_file is not None:
            config = read_json_file(config_file, "tokenizer config")
            if not isinstance(config, dict):
                raise TokenizerFileError(f"{describe_path(config_file)} must hold a JSON object.")
            init_kwargs.update(config)
            init_kwargs.pop("init_inputs", None)
            init_kwargs["_config_file"] = config_file
        special_map_file = files.pop("special_tokens_map_file", None)
        if special_map_file is not None:
            special_map = read_json_file(special_map_file, "special tokens map")
            if not isinstance(special_map, dict):
                raise TokenizerFileError(f"{describe_path(special_map_file)} must hold a JSON object.")
            for key, value in special_map.items():
                if key in SPECIAL_TOKENS_ATTRIBUTES:
                    token = as_added_token(value, special=True,
                                           where=f"{key} in {describe_path(special_map_file)}")
                    current = init_kwargs.get(key)
                    if current is not None and str(as_added_token(current, special=True, where=key)) != token.content:
                        logger.warning(
                            f"{key} is {str(as_added_token(current, special=True, where=key))!r} in "
                            f"tokenizer_config.json but {token.content!r} in {describe_path(special_map_file)}; "
                            "using the special tokens map, as the reference library does."
                        )
                    init_kwargs[key] = value
                elif key in ("additional_special_tokens", "extra_special_tokens") and not (
                    init_kwargs.get("additional_special_tokens") or init_kwargs.get("extra_special_tokens")
                ):
                    init_kwargs["extra_special_tokens"] = value
        added_file = files.pop("added_tokens_file", None)
        if added_file is not None:
            added = read_json_file(added_file, "added tokens")
            if not isinstance(added, dict) or not all(isinstance(v, int) for v in added.values()):
                raise TokenizerFileError(
                    f"{describe_path(added_file)} must map token strings to integer ids."
                )
            decoder = init_kwargs.setdefault("added_tokens_decoder", {})
            for content, index in added.items():
                decoder.setdefault(str(index), {"content": content, "special": False, "normalized": True})
            init_kwargs["_added_tokens_file"] = added_file
        templates: dict[str, str] = {}
        for file_id in [k for k in files if k.startswith("chat_template_") and k != "chat_template_file"]:
            path = files.pop(file_id)
            if path is not None:
                templates[file_id[len("chat_template_"):]] = _read_text(path)
        template_file = files.pop("chat_template_file", None)
        if template_file is not None:
            templates["default"] = _read_text(template_file)
        if templates:
            init_kwargs["chat_template"] = templates["default"] if list(templates) == ["default"] else templates
        init_kwargs.update(kwargs)
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            if init_kwargs.get(key) is not None:
                where = f"{key} in {describe_path(config_file)}" if config_file and key not in kwargs else key
                init_kwargs[key] = as_added_token(init_kwargs[key], special=True, where=where) \
                    if isinstance(init_kwargs[key], dict) else init_kwargs[key]
                if not isinstance(init_kwargs[key], (str, AddedToken)):
                    raise TokenizerError(
                        f"{where} must be a string or AddedToken dict, got {type(init_kwargs[key]).__name__}."
                    )
        return init_kwargs

    @classmethod
    def _from_files(
        cls, files: dict[str, str | None], init_inputs: tuple[Any, ...], init_kwargs: dict[str, Any]
    ) -> PreTrainedTokenizerBase:
        for file_id, path in files.items():
            if path is not None and init_kwargs.get(file_id) is None:
                init_kwargs[file_id] = path
        return cls(*init_inputs, **init_kwargs)

    # -- saving --------------------------------------------------------------------------
    def _config_to_save(self) -> dict[str, Any]:
        config = {k: v for k, v in self.init_kwargs.items() if not k.startswith("_") and k not in _LOADING_KEYS}
        for key in ("added_tokens_decoder", "chat_template", "additional_special_tokens", "extra_special_tokens",
                    *SPECIAL_TOKENS_ATTRIBUTES, *self.vocab_files_names):
            config.pop(key, None)
        config.update(self._family_config())
        config["model_max_length"] = self.model_max_length
        config["padding_side"] = self.padding_side
        config["truncation_side"] = self.truncation_side
        config["clean_up_tokenization_spaces"] = self.clean_up_tokenization_spaces
        if self.split_special_tokens:
            config["split_special_tokens"] = True
        if list(self.model_input_names) != list(type(self).model_input_names):
            config["model_input_names"] = list(self.model_input_names)
        for key, value in self._special_tokens.items():
            if value is not None:
                config[key] = str(value)
        if self._extra_special_tokens:
            config["extra_special_tokens"] = self.extra_special_tokens
        config["added_tokens_decoder"] = {
            str(index): added_token_state(token) for index, token in sorted(self.added_tokens_decoder.items())
        }
        name = type(self).__name__
        config["tokenizer_class"] = name[:-4] if name.endswith("Fast") and name != "PreTrainedTokenizerFast" else name
        return config

    def _family_config(self) -> dict[str, Any]:
        """The family's own settings to write into tokenizer_config.json."""
        return {}

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> tuple[str, ...]:
        """Write the tokenizer's files (config, special tokens map, chat template and the vocabulary in the
        implementation's format) so that both torchformers and the reference library load it identically."""
        if push_to_hub:
            raise UnsupportedArgumentError("push_to_hub is not supported: upload the saved folder with huggingface_hub.")
        save_jinja_files = kwargs.pop("save_jinja_files", True)
        if kwargs:
            raise UnsupportedArgumentError(f"save_pretrained() got unsupported arguments {sorted(kwargs)}.")
        if os.path.isfile(save_directory):
            raise TokenizerFileError(f"{describe_path(save_directory)} is a file; save_pretrained needs a directory.")
        os.makedirs(save_directory, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        config = self._config_to_save()
        written = []
        if self.chat_template is not None:
            if save_jinja_files:
                templates = self.chat_template if isinstance(self.chat_template, dict) else {"default": self.chat_template}
                for name, template in templates.items():
                    if name == "default":
                        path = os.path.join(save_directory, prefix + CHAT_TEMPLATE_FILE)
                    else:
                        if os.sep in name or "/" in name or name.startswith("."):
                            raise TokenizerError(f"Invalid chat template name {name!r}.")
                        folder = os.path.join(save_directory, prefix + "additional_chat_templates")
                        os.makedirs(folder, exist_ok=True)
                        path = os.path.join(folder, f"{name}.jinja")
                    atomic_write_text(path, template)
                    written.append(path)
            elif isinstance(self.chat_template, dict):
                config["chat_template"] = [{"name": k, "template": v} for k, v in self.chat_template.items()]
            else:
                config["chat_template"] = self.chat_template
        config_path = os.path.join(save_directory, prefix + TOKENIZER_CONFIG_FILE)
        atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        special_path = os.path.join(save_directory, prefix + SPECIAL_TOKENS_MAP_FILE)
        special_map: dict[str, Any] = dict(self.special_tokens_map)
        if self._extra_special_tokens:
            special_map["additional_special_tokens"] = self.extra_special_tokens
        atomic_write_text(special_path, json.dumps(special_map, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        written = [config_path, special_path, *written]
        written += self._save_vocabulary_files(save_directory, prefix, legacy_format)
        return tuple(written)

    def _save_vocabulary_files(self, directory: str, prefix: str, legacy_format: bool | None) -> list[str]:
        raise NotImplementedError

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write only the vocabulary files."""
        os.makedirs(save_directory, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        return tuple(self._save_vocabulary_files(save_directory, prefix, True))

    # -- misc ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"truncation_side={self.truncation_side!r}, special_tokens={self.special_tokens_map})"
        )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenizerFileError(f"Cannot read {describe_path(path)}: {error}.") from None


def _special_property(key: str) -> property:
    def get(self: PreTrainedTokenizerBase) -> str | None:
        return self._get_special(key)

    def set_(self: PreTrainedTokenizerBase, value: Any) -> None:
        self._set_special(key, value)

    return property(get, set_, doc=f"The {key.replace('_', ' ')} (a string), or None when not set.")


def _special_id_property(key: str) -> property:
    def get(self: PreTrainedTokenizerBase) -> int | None:
        return self._get_special_id(key)

    def set_(self: PreTrainedTokenizerBase, value: int | None) -> None:
        self._set_special_id(key, value)

    return property(get, set_, doc=f"The id of the {key.replace('_', ' ')}, or None when not set.")


for _key in SPECIAL_TOKENS_ATTRIBUTES:
    setattr(PreTrainedTokenizerBase, _key, _special_property(_key))
    setattr(PreTrainedTokenizerBase, f"{_key}_id", _special_id_property(_key))
