"""Fast tokenizers: the shared API over a `tokenizers` (Rust) backend.

``PreTrainedTokenizerFast`` loads ``tokenizer.json``; a family's fast class can also be built
from its slow vocabulary files (``vocab.txt``, ``vocab.json`` + ``merges.txt``,
``tokenizer.model``) by converting the slow tokenizer, as the reference library does.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from tokenizers import AddedToken, Tokenizer, normalizers, processors

from ..errors import TokenizerError, TokenizerFileError, describe_path
from .base import TOKENIZER_FILE, Padding, PreTrainedTokenizerBase, Truncation, as_added_token


def load_backend(path: str | os.PathLike) -> Tokenizer:
    """Read ``tokenizer.json``; a missing or corrupt file raises TokenizerFileError naming it."""
    if not os.path.isfile(path):
        raise TokenizerFileError(f"{describe_path(path)} does not exist; pass the tokenizer.json of the model.")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerFileError(
            f"{describe_path(path)} is not a readable tokenizer.json ({error}); re-download the file."
        ) from None
    try:
        return Tokenizer.from_str(text)
    except Exception as error:
        raise TokenizerFileError(
            f"{describe_path(path)} is not a valid tokenizer.json for the tokenizers library ({error})."
        ) from None


def template_from_processor(config: dict[str, Any] | None, pair: bool) -> list[tuple[Any, int]]:
    """A post-processor's JSON as a template: ``("A"|"B", type_id)`` or ``([ids], type_id)`` items."""
    if not config:
        return [("A", 0)] + ([("B", 1)] if pair else [])
    kind = config.get("type")
    if kind == "TemplateProcessing":
        pieces = []
        specials = config.get("special_tokens", {})
        for item in config["pair" if pair else "single"]:
            if "Sequence" in item:
                pieces.append((item["Sequence"]["id"], item["Sequence"]["type_id"]))
            else:
                special = item["SpecialToken"]
                pieces.append((list(specials[special["id"]]["ids"]), special["type_id"]))
        return pieces
    if kind in ("BertProcessing", "RobertaProcessing"):
        cls, sep = [config["cls"][1]], [config["sep"][1]]
        if kind == "BertProcessing":
            single = [(cls, 0), ("A", 0), (sep, 0)]
            return single + [("B", 1), (sep, 1)] if pair else single
        single = [(cls, 0), ("A", 0), (sep, 0)]
        return single + [(sep, 0), ("B", 0), (sep, 0)] if pair else single
    if kind == "Sequence":
        for processor in config.get("processors", []):
            if processor.get("type") in ("TemplateProcessing", "BertProcessing", "RobertaProcessing"):
                return template_from_processor(processor, pair)
    return [("A", 0)] + ([("B", 1)] if pair else [])


def apply_template(template: list[tuple[Any, int]], ids_0: list[int], ids_1: list[int] | None
                   ) -> tuple[list[int], list[int], list[int]]:
    ids, mask, types = [], [], []
    for piece, type_id in template:
        part = ids_0 if piece == "A" else ids_1 if piece == "B" else piece
        special = piece not in ("A", "B")
        ids += part
        mask += [1 if special else 0] * len(part)
        types += [type_id] * len(part)
    return ids, mask, types


class PreTrainedTokenizerFast(PreTrainedTokenizerBase):
    """A tokenizer backed by the `tokenizers` library, loaded from ``tokenizer.json`` (or converted from a
    family's slow files). The same API as the reference library's fast tokenizers."""

    vocab_files_names: ClassVar[dict[str, str]] = {"tokenizer_file": TOKENIZER_FILE}
    slow_tokenizer_class: ClassVar[type | None] = None
    init_arguments: ClassVar[tuple[str, ...]] = ("add_bos_token", "add_eos_token")

    def __init__(self, *args: Any, tokenizer_object: Tokenizer | None = None, tokenizer_file: str | None = None,
                 **kwargs: Any) -> None:
        added_tokens = kwargs.pop("added_tokens_decoder", None) or {}
        config_file = kwargs.get("_config_file")
        if tokenizer_object is not None:
            backend = Tokenizer.from_str(tokenizer_object.to_str())
        elif tokenizer_file is not None:
            backend = load_backend(tokenizer_file)
        elif self.slow_tokenizer_class is not None and any(
            kwargs.get(key) is not None for key in self.slow_tokenizer_class.vocab_files_names
        ) or args:
            slow = self.slow_tokenizer_class(*args, added_tokens_decoder=added_tokens, **kwargs)
            backend = slow.build_backend()
            kwargs = {**kwargs, **slow.converted_init_kwargs()}
        else:
            raise TokenizerFileError(
                f"{type(self).__name__} needs a tokenizer.json (tokenizer_file=...), a tokenizers.Tokenizer "
                "(tokenizer_object=...)"
                + (" or its vocabulary files " + str(sorted(self.slow_tokenizer_class.vocab_files_names.values()))
                   if self.slow_tokenizer_class else "")
                + "; none was found."
            )
        backend.no_truncation()
        backend.no_padding()
        self._tokenizer = backend
        self._backend_settings: tuple[Any, Any] | None = (None, None)
        self._configure_backend(kwargs)
        super().__init__(**kwargs)
        self._check_added_tokens(added_tokens, config_file)
        self._add_special_tokens_to_vocab()
        if "add_bos_token" in kwargs or "add_eos_token" in kwargs:
            self._set_bos_eos_template(bool(kwargs.get("add_bos_token")), bool(kwargs.get("add_eos_token")))
        self._template_cache: dict[bool, list[tuple[Any, int]]] = {}

    def _configure_backend(self, kwargs: dict[str, Any]) -> None:
        """A family's hook: adjust the backend to the config's options (lower casing, prefix space...)."""

    def _check_added_tokens(self, added_tokens: dict[Any, Any], config_file: str | None) -> None:
        """Add the config's added tokens the backend lacks; an id that names another token is an error."""
        where = describe_path(config_file) if config_file else "added_tokens_decoder"
        for index, value in sorted(((int(i), v) for i, v in added_tokens.items()), key=lambda item: item[0]):
            token = as_added_token(value, special=False, where=f"added token {index} in {where}")
            current = self._tokenizer.id_to_token(index)
            if current is not None:
                if current != token.content:
                    raise TokenizerError(
                        f"{where} says token id {index} is {token.content!r}, but the vocabulary has {current!r} "
                        "there; the tokenizer files disagree (re-save or re-download them)."
                    )
                continue
            existing = self._tokenizer.token_to_id(token.content)
            if existing is not None:
                raise TokenizerError(
                    f"{where} gives {token.content!r} the id {index}, but the vocabulary already has it at id "
                    f"{existing}; the tokenizer files disagree."
                )
            self._add_tokens([token])
            if self._tokenizer.token_to_id(token.content) != index:
                raise TokenizerError(
                    f"{where} gives {token.content!r} the id {index}, but the vocabulary has "
                    f"{len(self)} tokens, so it cannot get that id; the tokenizer files disagree."
                )

    def _set_bos_eos_template(self, add_bos: bool, add_eos: bool) -> None:
        bos, eos = self.bos_token, self.eos_token
        add_bos = add_bos and bos is not None
        add_eos = add_eos and eos is not None
        single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
        pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
        special = {}
        if add_bos:
            special[bos] = self.bos_token_id
        if add_eos:
            special[eos] = self.eos_token_id
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join(single), pair=" ".join(pair), special_tokens=list(special.items())
        )
        self._add_bos_token, self._add_eos_token = add_bos, add_eos
        self._template_cache = {}

    @property
    def add_bos_token(self) -> bool:
        return getattr(self, "_add_bos_token", False)

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._set_bos_eos_template(value, self.add_eos_token)

    @property
    def add_eos_token(self) -> bool:
        return getattr(self, "_add_eos_token", False)

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._set_bos_eos_template(self.add_bos_token, value)

    @classmethod
    def _from_files(cls, files: dict[str, str | None], init_inputs: tuple[Any, ...], init_kwargs: dict[str, Any]
                    ) -> PreTrainedTokenizerBase:
        if files.get("tokenizer_file") is not None:
            # tokenizer.json already holds the post-processor the config's add_bos/eos_token describe.
            for key in ("add_bos_token", "add_eos_token"):
                if key not in init_kwargs.get("_user_keys", ()):
                    init_kwargs.pop(key, None)
        else:
            files.pop("tokenizer_file", None)
            slow = cls.slow_tokenizer_class
            if slow is None or not any(files.get(k) for k in slow.vocab_files_names):
                raise TokenizerFileError(
                    f"{init_kwargs.get('name_or_path')!r} has no tokenizer.json"
                    + (f" and none of {sorted(slow.vocab_files_names.values())}" if slow else "")
                    + f", so {cls.__name__} cannot be built; check the files are there."
                )
        return super()._from_files(files, init_inputs, init_kwargs)

    # -- backend access ------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The `tokenizers.Tokenizer` doing the work."""
        return self._tokenizer

    @property
    def decoder(self) -> Any:
        return self._tokenizer.decoder

    @property
    def is_fast(self) -> bool:
        return True

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._tokenizer.get_added_tokens_decoder().items()))

    def _add_tokens(self, tokens: list[AddedToken]) -> int:
        special = [t for t in tokens if t.special]
        normal = [t for t in tokens if not t.special]
        count = 0
        if special:
            count += self._tokenizer.add_special_tokens(special)
        if normal:
            count += self._tokenizer.add_tokens(normal)
        self._template_cache = {}
        return count

    def _token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def _id_to_token(self, index: int) -> str | None:
        return self._tokenizer.id_to_token(index)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self._tokenizer.post_processor
        return processor.num_special_tokens_to_add(pair) if processor is not None else 0

    def _template(self, pair: bool) -> list[tuple[Any, int]]:
        cache = getattr(self, "_template_cache", {})
        if pair not in cache:
            config = json.loads(self._tokenizer.to_str()).get("post_processor")
            cache[pair] = template_from_processor(config, pair)
            self._template_cache = cache
        return cache[pair]

    def _template_ids(self, ids_0: list[int], ids_1: list[int] | None) -> tuple[list[int], list[int], list[int]]:
        return apply_template(self._template(ids_1 is not None), list(ids_0), list(ids_1 or []))

    # -- encoding and decoding -----------------------------------------------------------
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
        backend = self._tokenizer
        if truncation is not None:
            self._check_truncation(batch, add_special_tokens, is_pretokenized, truncation, split_special_tokens)
        if (truncation, padding) != self._backend_settings or backend.truncation is None and truncation is not None:
            if truncation is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(truncation.max_length, stride=truncation.stride,
                                          strategy=truncation.strategy, direction=truncation.direction)
            if padding is None:
                backend.no_padding()
            else:
                backend.enable_padding(direction=padding.direction, pad_id=padding.pad_id,
                                       pad_type_id=padding.pad_type_id, pad_token=padding.pad_token,
                                       length=padding.length, pad_to_multiple_of=padding.pad_to_multiple_of)
            self._backend_settings = (truncation, padding)
        if backend.encode_special_tokens != split_special_tokens:
            backend.encode_special_tokens = split_special_tokens
        try:
            return backend.encode_batch(batch, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)
        except Exception as error:  # the Rust side raises plain Exceptions
            raise TokenizerError(f"{type(self).__name__} could not encode the input: {error}") from None

    def _check_truncation(self, batch: list[Any], add_special_tokens: bool, is_pretokenized: bool,
                          truncation: Truncation, split_special_tokens: bool) -> None:
        """Raise TokenizerError for a truncation the Rust side cannot do (it would panic)."""
        from .slow.base import truncation_lengths

        pairs = [isinstance(item, tuple) for item in batch]
        for pair in set(pairs):
            room = truncation.max_length - (self.num_special_tokens_to_add(pair) if add_special_tokens else 0)
            if room < 0:
                raise TokenizerError(
                    f"max_length={truncation.max_length} leaves no room for the special tokens added."
                )
        if truncation.stride == 0 and truncation.strategy == "longest_first":
            return
        backend = Tokenizer.from_str(self._tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = split_special_tokens
        for item, pair in zip(batch, pairs, strict=False):
            room = truncation.max_length - (self.num_special_tokens_to_add(pair) if add_special_tokens else 0)
            parts = item if pair else (item,)
            lengths = [len(e.ids) for e in backend.encode_batch(list(parts), add_special_tokens=False,
                                                                  is_pretokenized=is_pretokenized)]
            truncation_lengths(lengths[0], lengths[1] if pair else None, truncation, room)

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    @property
    def _cleanup_would_corrupt(self) -> bool:
        return type(self._tokenizer.model).__name__ == "BPE"

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    # -- saving --------------------------------------------------------------------------
    def _family_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if "_add_bos_token" in self.__dict__:
            config["add_bos_token"] = self._add_bos_token
            config["add_eos_token"] = self._add_eos_token
        return config

    def _save_vocabulary_files(self, directory: str, prefix: str, legacy_format: bool | None) -> list[str]:
        from ..files import atomic_destination

        path = os.path.join(directory, prefix + TOKENIZER_FILE)
        with atomic_destination(path) as temporary:
            self._tokenizer.save(temporary)
        return [path]

    def train_new_from_iterator(self, *args: Any, **kwargs: Any) -> PreTrainedTokenizerFast:
        raise TokenizerError(
            "train_new_from_iterator is not supported; train a tokenizers.Tokenizer and pass it as "
            "PreTrainedTokenizerFast(tokenizer_object=...)."
        )


# -- families -------------------------------------------------------------------------------
from .slow.bpe import GPT2Tokenizer  # noqa: E402
from .slow.sentencepiece import LlamaTokenizer, T5Tokenizer  # noqa: E402
from .slow.wordpiece import BertTokenizer  # noqa: E402


class BertTokenizerFast(PreTrainedTokenizerFast):
    """BERT's WordPiece tokenizer on the `tokenizers` library (``tokenizer.json`` or ``vocab.txt``)."""

    slow_tokenizer_class = BertTokenizer
    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "vocab.txt", "tokenizer_file": TOKENIZER_FILE}
    model_input_names: ClassVar[list[str]] = BertTokenizer.model_input_names
    default_special_tokens: ClassVar[dict[str, str | None]] = BertTokenizer.default_special_tokens
    init_arguments = PreTrainedTokenizerFast.init_arguments + BertTokenizer.init_arguments

    def _configure_backend(self, kwargs: dict[str, Any]) -> None:
        # A config that says otherwise than tokenizer.json's normalizer wins, as in the reference.
        normalizer = json.loads(self._tokenizer.to_str()).get("normalizer") or {}
        if normalizer.get("type") != "BertNormalizer":
            return
        wanted = {"lowercase": kwargs.get("do_lower_case", normalizer["lowercase"]),
                  "strip_accents": kwargs.get("strip_accents", normalizer["strip_accents"]),
                  "handle_chinese_chars": kwargs.get("tokenize_chinese_chars", normalizer["handle_chinese_chars"])}
        if any(normalizer[key] != value for key, value in wanted.items()):
            self._tokenizer.normalizer = normalizers.BertNormalizer(clean_text=normalizer["clean_text"], **wanted)

    def _family_config(self) -> dict[str, Any]:
        normalizer = json.loads(self._tokenizer.to_str()).get("normalizer") or {}
        config = super()._family_config()
        if normalizer.get("type") == "BertNormalizer":
            config.update(do_lower_case=normalizer["lowercase"], strip_accents=normalizer["strip_accents"],
                          tokenize_chinese_chars=normalizer["handle_chinese_chars"])
        return config


class GPT2TokenizerFast(PreTrainedTokenizerFast):
    """GPT-2's byte-level BPE tokenizer on the `tokenizers` library (``tokenizer.json`` or
    ``vocab.json`` + ``merges.txt``)."""

    slow_tokenizer_class = GPT2Tokenizer
    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "vocab.json", "merges_file": "merges.txt",
                                                   "tokenizer_file": TOKENIZER_FILE}
    default_special_tokens: ClassVar[dict[str, str | None]] = GPT2Tokenizer.default_special_tokens
    init_arguments = PreTrainedTokenizerFast.init_arguments + GPT2Tokenizer.init_arguments

    def _configure_backend(self, kwargs: dict[str, Any]) -> None:
        if "add_prefix_space" in kwargs and type(self._tokenizer.pre_tokenizer).__name__ == "ByteLevel":
            self._tokenizer.pre_tokenizer.add_prefix_space = bool(kwargs["add_prefix_space"])


class LlamaTokenizerFast(PreTrainedTokenizerFast):
    """Llama's SentencePiece BPE tokenizer on the `tokenizers` library (``tokenizer.json`` or
    ``tokenizer.model``)."""

    slow_tokenizer_class = LlamaTokenizer
    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "tokenizer.model", "tokenizer_file": TOKENIZER_FILE}
    padding_side = "left"
    default_special_tokens: ClassVar[dict[str, str | None]] = LlamaTokenizer.default_special_tokens
    init_arguments = PreTrainedTokenizerFast.init_arguments + LlamaTokenizer.init_arguments


class T5TokenizerFast(PreTrainedTokenizerFast):
    """T5's SentencePiece unigram tokenizer on the `tokenizers` library (``tokenizer.json`` or
    ``spiece.model``)."""

    slow_tokenizer_class = T5Tokenizer
    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": "spiece.model", "tokenizer_file": TOKENIZER_FILE}
    default_special_tokens: ClassVar[dict[str, str | None]] = T5Tokenizer.default_special_tokens
    init_arguments = PreTrainedTokenizerFast.init_arguments + T5Tokenizer.init_arguments
