"""What every pipeline shares: argument handling, batching, the forward pass and result order.

A task subclass says how one input becomes model rows (:meth:`Pipeline.preprocess`, returning
one :class:`Feature` or several, as for a long context split into windows), how a padded
batch of rows runs through the model (:meth:`Pipeline._forward`, returning one output per
row) and how the outputs of one input become the answer (:meth:`Pipeline.postprocess`).

Batching differs from the reference library in one deliberate way: when a whole list is
given with ``batch_size > 1``, its rows are ordered by length before they are cut into
batches, so a batch holds rows of similar length and little padding is computed. Answers
come back in input order and equal the one-by-one answers (padding is masked). Generators
and datasets are processed ``batch_size`` items at a time, in order, so results stream.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset, IterableDataset

from ..errors import PipelineError, UnsupportedArgumentError


@dataclass
class Feature:
    """One model row made from an input: its unpadded model inputs and what postprocess needs."""

    inputs: dict[str, list[int]]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])


@dataclass
class Batch:
    """Rows padded to one length, as tensors on the pipeline's device."""

    inputs: dict[str, torch.Tensor]
    features: list[Feature]
    padding_side: str

    def unpadded(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Each row of ``values`` (batch, length, ...) without its padding positions."""
        width = values.shape[1]
        rows = []
        for index, feature in enumerate(self.features):
            start = width - len(feature) if self.padding_side == "left" else 0
            rows.append(values[index, start:start + len(feature)])
        return rows


# Model inputs whose padding is not the pad token.
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0}


def pick_device(model: torch.nn.Module, device: Any, placed_by_device_map: bool) -> torch.device:
    """The device inputs go to: the one asked for, else where a device_map put the model, else the
    first accelerator (CUDA) when there is one, else the CPU, as in the reference library."""
    if device is None:
        if placed_by_device_map:
            return model.get_input_embeddings().weight.device
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device("cuda", device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UnsupportedArgumentError(f"pipeline(): device={device!r} is not a device; use 'cpu', 'cuda:0' or 0.") \
            from None


def check_keywords(function: Callable[..., Any], given: dict[str, Any], where: str) -> None:
    """Raise UnsupportedArgumentError naming the keywords ``function`` does not take."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(given) - set(parameters))
    if unknown:
        known = sorted(name for name in parameters if not name.startswith("_"))
        raise UnsupportedArgumentError(f"{where} got unsupported arguments {unknown}; it takes {known}.")


class Pipeline:
    """Raw input in, structured answer out: tokenize, run the model in batches, format the answers.

    Arguments (passed by :func:`torchformers.pipeline`): ``model``, ``tokenizer``, ``task``,
    ``device`` (a device, an index, ``-1`` for the CPU; default: the first GPU if any),
    ``batch_size`` (default 1) and the task's own options, which calls may override.
    Call the pipeline with one input (one answer back), a list (a list of answers, in order),
    or a generator or ``torch.utils.data.Dataset`` (an iterator of answers, in order).
    ``progress_bar=True`` shows a tqdm bar over the model rows (an input split into windows counts
    once per window).
    """

    # "left" for pipelines whose model continues the rows (generation); None: the tokenizer's side.
    padding_side: ClassVar[str | None] = None
    # The Auto class (torchformers.models.auto) whose models this task works with.
    auto_class_name: ClassVar[str] = "AutoModel"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        task: str = "",
        device: Any = None,
        batch_size: int | None = None,
        progress_bar: bool = False,
        placed_by_device_map: bool = False,
        **kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise PipelineError(
                f"The {task or type(self).__name__} pipeline needs a tokenizer; pass tokenizer=... (a directory, "
                "a hub id or a tokenizer object)."
            )
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.check_model()
        self.device = pick_device(model, device, placed_by_device_map)
        if not placed_by_device_map and model.device != self.device:
            model.to(self.device)
        self.batch_size = batch_size
        self.progress_bar = progress_bar
        self._params = self._sanitized(kwargs)
        self._model_takes_use_cache = "use_cache" in inspect.signature(model.forward).parameters

    # -- what a task defines -----------------------------------------------------------------
    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Split the task's options into (preprocess, forward, postprocess) keyword arguments."""
        return {}, {}, {}

    def preprocess(self, item: Any, **params: Any) -> Feature | list[Feature]:
        raise NotImplementedError

    def _forward(self, batch: Batch, **params: Any) -> list[Any]:
        raise NotImplementedError

    def postprocess(self, features: list[Feature], outputs: list[Any], **params: Any) -> Any:
        raise NotImplementedError

    def is_single(self, inputs: Any, preprocess_params: dict[str, Any]) -> bool:
        """Whether ``inputs`` is one input (answered directly) rather than several."""
        return not isinstance(inputs, (list, tuple, Iterator, Dataset))

    def check_model(self) -> None:
        """Raise PipelineError when the model is not of the kind this task needs."""
        from ..models import auto

        registry = getattr(auto, self.auto_class_name)
        model_type = getattr(self.model.config, "model_type", None)
        accepted = {cls.__name__ for cls in registry._registered.values()} | set(registry._builtin.values())
        if type(self.model).__name__ not in accepted:
            expected = registry._builtin.get(model_type) or sorted(accepted)
            raise PipelineError(
                f"The {self.task or type(self).__name__} pipeline needs a model loaded with {self.auto_class_name} "
                f"(for model_type {model_type!r}: {expected}), got {type(self.model).__name__}. Load the "
                f"checkpoint with {self.auto_class_name}.from_pretrained, or pass its path as model=..."
            )

    # -- calling -----------------------------------------------------------------------------
    def _sanitized(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        check_keywords(self._sanitize_parameters, kwargs, f"The {self.task or type(self).__name__} pipeline")
        return self._sanitize_parameters(**kwargs)

    def __call__(self, inputs: Any, *args: Any, batch_size: int | None = None, progress_bar: bool | None = None,
                 num_workers: int | None = None, **kwargs: Any) -> Any:
        if args:
            raise UnsupportedArgumentError(
                f"The {self.task} pipeline takes one positional input (or a list of them), got {1 + len(args)}."
            )
        del num_workers  # accepted for compatibility: rows are prepared in this process
        call_params = self._sanitized(kwargs)
        params = tuple({**init, **call} for init, call in zip(self._params, call_params, strict=True))
        if batch_size is None:
            batch_size = self.batch_size if self.batch_size is not None else 1
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PipelineError(f"batch_size must be a positive integer, got {batch_size!r}.")
        progress = self.progress_bar if progress_bar is None else progress_bar
        if self.is_single(inputs, params[0]):
            return next(self._answers([inputs], 1, params, progress=False))
        if isinstance(inputs, (list, tuple)):
            return list(self._answers(inputs, batch_size, params, progress))
        if isinstance(inputs, Dataset) and not isinstance(inputs, IterableDataset):
            dataset = inputs
            inputs = (dataset[index] for index in range(len(dataset)))  # type: ignore[arg-type]
        return self._answers(inputs, batch_size, params, progress)

    def _answers(self, items: Iterable[Any], batch_size: int, params: tuple[dict, dict, dict],
                 progress: bool) -> Iterator[Any]:
        preprocess_params, forward_params, postprocess_params = params
        # A list is known whole: sort all its rows by length. A stream goes batch_size items at a time.
        window = max(len(items), 1) if isinstance(items, Sequence) else batch_size
        bar = _progress_bar(self.task) if progress else None
        iterator = iter(items)
        try:
            while chunk := list(itertools.islice(iterator, window)):
                per_item = [self._features(item, preprocess_params) for item in chunk]
                rows = [feature for features in per_item for feature in features]
                if bar is not None:
                    bar.total = (bar.total or 0) + len(rows)
                    bar.refresh()
                outputs = self._run_rows(rows, batch_size, forward_params, bar)
                position = 0
                for features in per_item:
                    yield self.postprocess(features, outputs[position:position + len(features)], **postprocess_params)
                    position += len(features)
        finally:
            if bar is not None:
                bar.close()

    def _features(self, item: Any, preprocess_params: dict[str, Any]) -> list[Feature]:
        features = self.preprocess(item, **preprocess_params)
        return [features] if isinstance(features, Feature) else list(features)

    def _run_rows(self, rows: list[Feature], batch_size: int, forward_params: dict[str, Any], bar: Any) -> list[Any]:
        order = sorted(range(len(rows)), key=lambda i: len(rows[i])) if batch_size > 1 else list(range(len(rows)))
        outputs: list[Any] = [None] * len(rows)
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = self.collate([rows[i] for i in indices])
            with torch.inference_mode():
                results = self._forward(batch, **forward_params)
            for index, result in zip(indices, results, strict=True):
                outputs[index] = result
            if bar is not None:
                bar.update(len(indices))
        return outputs

    def collate(self, features: list[Feature]) -> Batch:
        """Pad the rows' model inputs to the longest and make tensors on the pipeline's device."""
        side = self.padding_side or getattr(self.tokenizer, "padding_side", "right")
        longest = max(len(feature) for feature in features)
        inputs = {}
        for key in features[0].inputs:
            rows = [feature.inputs[key] for feature in features]
            if any(len(row) != longest for row in rows):
                pad = self._pad_value(key)
                rows = [[pad] * (longest - len(row)) + row if side == "left" else row + [pad] * (longest - len(row))
                        for row in rows]
            inputs[key] = torch.tensor(rows, dtype=torch.long, device=self.device)
        return Batch(inputs, features, side)

    def _pad_value(self, key: str) -> int:
        if key in _PAD_VALUES:
            return _PAD_VALUES[key]
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise PipelineError(
                "Batching inputs of different lengths needs a pad token, and this tokenizer has none. Set one "
                "(pipe.tokenizer.pad_token = pipe.tokenizer.eos_token) or use batch_size=1."
            )
        return pad_id

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        """The batch's tensors as model keyword arguments (no cache for a single forward pass)."""
        inputs: dict[str, Any] = dict(batch.inputs)
        if self._model_takes_use_cache:
            inputs["use_cache"] = False
        return inputs

    # -- conveniences the reference library offers -------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Save the model and the tokenizer into one directory."""
        self.model.save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory)

    def predict(self, inputs: Any) -> Any:
        return self(inputs)

    transform = predict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, device={self.device})"


def _progress_bar(task: str) -> Any:
    from tqdm.auto import tqdm

    # Counted in model rows: an input split into windows (a long context) counts once per window.
    return tqdm(total=None, desc=task or "pipeline", unit="row")


def tokenizer_call_keywords(tokenizer: Any) -> set[str]:
    """The keyword arguments a tokenizer call accepts (to check options before any work is done)."""
    return {name for name, p in inspect.signature(tokenizer.__call__).parameters.items()
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD} - {"self", "text", "text_pair"}


def check_tokenizer_kwargs(tokenizer: Any, given: dict[str, Any], where: str) -> None:
    unknown = sorted(set(given) - tokenizer_call_keywords(tokenizer))
    if unknown:
        raise UnsupportedArgumentError(f"{where}: {unknown} are neither options of the pipeline nor of the tokenizer.")


def encoding_rows(encoded: Any, keys: Iterable[str]) -> list[dict[str, list[int]]]:
    """Per-row dicts of the given keys of a tokenizer output (lists, possibly batched)."""
    keys = [key for key in keys if key in encoded]
    values = {key: encoded[key] for key in keys}
    first = values[keys[0]]
    if first and isinstance(first[0], list):
        return [{key: values[key][row] for key in keys} for row in range(len(first))]
    return [values]
