"""Data collators: turn a list of dataset rows into one batch of tensors.

They behave as the reference library's collators do on the same rows and tokenizer (padding,
``label``/``label_ids`` renamed to ``labels``, -100 for label padding, masked-LM masking drawn in the same
order from the same generator). They return PyTorch tensors only (``return_tensors="pt"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import TokenizerError, UnsupportedArgumentError
from ..nn.losses import IGNORE_INDEX


def _check_pt(return_tensors: str | None) -> None:
    if return_tensors not in (None, "pt"):
        raise UnsupportedArgumentError(
            f"return_tensors={return_tensors!r}: torchformers' data collators return PyTorch tensors only ('pt')."
        )


def _as_dict(row: Any) -> Mapping[str, Any]:
    return row if isinstance(row, Mapping) else vars(row)


def _stack(values: list[Any], dtype: torch.dtype | None = None) -> torch.Tensor:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, np.ndarray):
        return torch.from_numpy(np.stack(values))
    return torch.tensor(values, dtype=dtype)


def default_data_collator(features: list[Any], return_tensors: str = "pt") -> dict[str, Any]:
    """Stack rows that already have one length. ``label`` (a number per row) and ``label_ids`` (a list
    per row) become ``labels`` (int64 for integers, float32 otherwise); strings and ``None`` are dropped."""
    _check_pt(return_tensors)
    rows = [_as_dict(row) for row in features]
    first = rows[0]
    batch: dict[str, Any] = {}
    if first.get("label") is not None:
        label = first["label"].item() if isinstance(first["label"], torch.Tensor) else first["label"]
        dtype = torch.long if isinstance(label, (int, np.integer)) else torch.float
        batch["labels"] = torch.tensor([row["label"] for row in rows], dtype=dtype)
    elif first.get("label_ids") is not None:
        label_ids = first["label_ids"]
        dtype = None if isinstance(label_ids, torch.Tensor) else (
            torch.long if isinstance(label_ids[0], (int, np.integer)) else torch.float)
        batch["labels"] = _stack([row["label_ids"] for row in rows], dtype)
    for key, value in first.items():
        if key not in ("label", "label_ids") and value is not None and not isinstance(value, str):
            batch[key] = _stack([row[key] for row in rows])
    return batch


@dataclasses.dataclass
class DefaultDataCollator:
    """:func:`default_data_collator` as an object."""

    return_tensors: str = "pt"

    def __call__(self, features: list[Any], return_tensors: str | None = None) -> dict[str, Any]:
        return default_data_collator(features, return_tensors or self.return_tensors)


def _pad_with_tokenizer(tokenizer: Any, features: Any, **options: Any) -> dict[str, Any]:
    if tokenizer is None or not hasattr(tokenizer, "pad"):
        raise UnsupportedArgumentError("This data collator needs a tokenizer (with a pad() method) to pad rows.")
    return tokenizer.pad(features, return_tensors="pt", **options)


def _rename_labels(batch: Any) -> Any:
    for name in ("label", "label_ids"):
        if name in batch:
            batch["labels"] = batch.pop(name)
    return batch


@dataclasses.dataclass
class DataCollatorWithPadding:
    """Pad each batch with the tokenizer (to its longest row by default); ``label``/``label_ids`` become ``labels``."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        _check_pt(self.return_tensors)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = _pad_with_tokenizer(self.tokenizer, features, padding=self.padding, max_length=self.max_length,
                                    pad_to_multiple_of=self.pad_to_multiple_of)
        return _rename_labels(batch)


def _padded_labels(labels: Sequence[Any], length: int, pad_id: int, side: str) -> torch.Tensor:
    rows = []
    for label in labels:
        label = label.tolist() if isinstance(label, (torch.Tensor, np.ndarray)) else list(label)
        filler = [pad_id] * (length - len(label))
        rows.append(label + filler if side == "right" else filler + label)
    return torch.tensor(rows, dtype=torch.int64)


def _split_labels(features: list[dict[str, Any]]) -> tuple[str, list[Any] | None, list[dict[str, Any]]]:
    name = "label" if "label" in features[0] else "labels"
    labels = [row[name] for row in features] if name in features[0] else None
    return name, labels, [{key: value for key, value in row.items() if key != name} for row in features]


@dataclasses.dataclass
class DataCollatorForTokenClassification:
    """Pad inputs with the tokenizer and labels (one per token) with ``label_pad_token_id`` (-100), on the
    tokenizer's padding side."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX
    return_tensors: str = "pt"

    def __call__(self, features: list[dict[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        _check_pt(return_tensors or self.return_tensors)
        name, labels, inputs = _split_labels(features)
        batch = _pad_with_tokenizer(self.tokenizer, inputs, padding=self.padding, max_length=self.max_length,
                                    pad_to_multiple_of=self.pad_to_multiple_of)
        if labels is not None:
            length = batch["input_ids"].shape[1]
            batch[name] = _padded_labels(labels, length, self.label_pad_token_id, self.tokenizer.padding_side)
        return batch


@dataclasses.dataclass
class DataCollatorForSeq2Seq:
    """Pad inputs with the tokenizer and ``labels`` to their own longest length with ``label_pad_token_id``.

    With a ``model`` that has ``prepare_decoder_input_ids_from_labels``, ``decoder_input_ids`` are added.
    """

    tokenizer: Any
    model: Any | None = None
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX
    return_tensors: str = "pt"

    def __call__(self, features: list[dict[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        _check_pt(return_tensors or self.return_tensors)
        _, labels, inputs = _split_labels(features)
        if labels is not None and all(label is None for label in labels):
            labels = None
        batch = _pad_with_tokenizer(self.tokenizer, inputs, padding=self.padding, max_length=self.max_length,
                                    pad_to_multiple_of=self.pad_to_multiple_of)
        if labels is None:
            batch["labels"] = None
            return batch
        if self.padding in (False, "do_not_pad"):
            raise UnsupportedArgumentError("DataCollatorForSeq2Seq(padding=False) cannot make a labels tensor; "
                                           "pad, or collate the rows yourself.")
        if self.padding == "max_length" and self.max_length is not None:
            length = self.max_length
        else:
            length = max(len(label) for label in labels)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch["labels"] = _padded_labels(labels, length, self.label_pad_token_id, self.tokenizer.padding_side)
        if self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch


def _collate_id_lists(examples: list[Any], tokenizer: Any, pad_to_multiple_of: int | None) -> torch.Tensor:
    """Stack rows of token ids, padding with the tokenizer's pad token on its padding side when needed."""
    rows = [e if isinstance(e, torch.Tensor) else torch.tensor(e, dtype=torch.long) for e in examples]
    longest = max(row.shape[0] for row in rows)
    if pad_to_multiple_of and longest % pad_to_multiple_of:
        longest += pad_to_multiple_of - longest % pad_to_multiple_of
    if all(row.shape[0] == longest for row in rows):
        return torch.stack(rows)
    if tokenizer.pad_token is None:
        raise TokenizerError(f"Rows of different lengths need padding, but {type(tokenizer).__name__} has no pad token.")
    batch = rows[0].new_full((len(rows), longest), tokenizer.pad_token_id)
    for i, row in enumerate(rows):
        if tokenizer.padding_side == "right":
            batch[i, : row.shape[0]] = row
        else:
            batch[i, longest - row.shape[0]:] = row
    return batch


@dataclasses.dataclass
class DataCollatorForLanguageModeling:
    """Batches for language modelling.

    ``mlm=True``: each non-special token is chosen with ``mlm_probability``; chosen tokens become the
    mask token (``mask_replace_prob``), a random token (``random_replace_prob``) or stay; ``labels`` hold
    the original ids at chosen positions and -100 elsewhere. ``mlm=False`` (causal): ``labels`` are the
    input ids with padding set to -100 (the model shifts them). With ``seed`` the masking draws from a
    generator of its own (in the main process; ``seed + worker id`` in DataLoader workers).
    """

    tokenizer: Any
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: float | None = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_pt(self.return_tensors)
        if self.whole_word_mask:
            raise UnsupportedArgumentError("whole_word_mask=True is not supported; mask tokens independently.")
        if self.mlm:
            if self.tokenizer.mask_token is None:
                raise TokenizerError(f"{type(self.tokenizer).__name__} has no mask token, which masked language "
                                     "modelling needs; pass mlm=False for causal language modelling.")
            if self.mlm_probability is None or not 0 <= self.mlm_probability <= 1:
                raise TokenizerError(f"mlm_probability must be between 0 and 1, got {self.mlm_probability!r}.")
            self.mlm_probability = float(self.mlm_probability)
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise TokenizerError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}.")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise TokenizerError("mask_replace_prob + random_replace_prob must not exceed 1.")
        self.generator: torch.Generator | None = None

    def _make_generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        return torch.Generator().manual_seed(self.seed + (worker.id if worker is not None else 0))

    def __call__(self, examples: list[Any], return_tensors: str | None = None) -> dict[str, Any]:
        _check_pt(return_tensors)
        if self.seed is not None and self.generator is None:
            self.generator = self._make_generator()
        if isinstance(examples[0], Mapping):
            batch = _pad_with_tokenizer(self.tokenizer, examples, pad_to_multiple_of=self.pad_to_multiple_of)
        else:
            batch = {"input_ids": _collate_id_lists(examples, self.tokenizer, self.pad_to_multiple_of)}
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        batch.pop("offset_mapping", None)
        if self.mlm:
            batch["input_ids"], batch["labels"] = self.torch_mask_tokens(batch["input_ids"], special_tokens_mask)
        else:
            labels = batch["input_ids"].clone()
            if self.tokenizer.pad_token_id is not None:
                labels[labels == self.tokenizer.pad_token_id] = IGNORE_INDEX
            batch["labels"] = labels
        return batch

    def torch_mask_tokens(self, inputs: torch.Tensor, special_tokens_mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask ``inputs`` in place for masked-LM training; returns ``(inputs, labels)``."""
        labels = inputs.clone()
        if special_tokens_mask is None:
            special_tokens_mask = [self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                                   for row in labels.tolist()]
        never_masked = torch.as_tensor(special_tokens_mask, dtype=torch.bool)
        probabilities = torch.full(labels.shape, self.mlm_probability).masked_fill_(never_masked, 0.0)
        chosen = torch.bernoulli(probabilities, generator=self.generator).bool()
        labels[~chosen] = IGNORE_INDEX
        to_mask = torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=self.generator).bool()
        to_mask &= chosen
        inputs[to_mask] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        if self.mask_replace_prob == 1 or self.random_replace_prob == 0:
            return inputs, labels
        # Of the chosen tokens not masked, this share becomes random so that the overall shares are the asked ones.
        random_share = self.random_replace_prob / (1 - self.mask_replace_prob)
        to_randomize = torch.bernoulli(torch.full(labels.shape, random_share), generator=self.generator).bool()
        to_randomize &= chosen & ~to_mask
        random_ids = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long, generator=self.generator)
        inputs[to_randomize] = random_ids[to_randomize]
        return inputs, labels
