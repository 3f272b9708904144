"""text-classification (alias sentiment-analysis): labels and scores for texts and text pairs."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import PipelineError
from .base import Batch, Feature, Pipeline, check_tokenizer_kwargs, encoding_rows

FUNCTIONS = ("sigmoid", "softmax", "none")
_UNSET: Any = object()  # top_k=None means "every label", so absence needs its own marker


def apply_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    if function == "sigmoid":
        return torch.sigmoid(logits)
    if function == "softmax":
        return torch.softmax(logits, dim=-1)
    return logits


def default_function(config: Any) -> str:
    """The score function the reference picks from the config: none for regression, sigmoid for
    multi-label or one label, softmax for several labels."""
    problem_type = getattr(config, "problem_type", None)
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    if problem_type == "single_label_classification" or config.num_labels > 1:
        return "softmax"
    return str(getattr(config, "function_to_apply", "none"))


class TextClassificationPipeline(Pipeline):
    """Classify texts with a sequence-classification model.

    Inputs: a text, a ``{"text": ..., "text_pair": ...}`` dict, or a list of them. Options:
    ``top_k`` (how many labels, best first; ``None`` for all), ``function_to_apply``
    (``"softmax"``, ``"sigmoid"`` or ``"none"``; by default chosen from the config as the
    reference does) and tokenizer options (``truncation``, ``max_length``...).

    As in the reference, without ``top_k`` a single text gives ``[{"label", "score"}]`` and each
    item of a list gives one ``{"label", "score"}``; with ``top_k`` each input gives a list.
    """

    auto_class_name: ClassVar[str] = "AutoModelForSequenceClassification"

    def _sanitize_parameters(self, top_k: Any = _UNSET, function_to_apply: str | None = None,
                             **tokenizer_kwargs: Any) -> tuple[dict, dict, dict]:
        check_tokenizer_kwargs(self.tokenizer, tokenizer_kwargs, "text-classification")
        postprocess: dict[str, Any] = {}
        if top_k is not _UNSET:
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise PipelineError(f"top_k must be a positive integer or None (every label), got {top_k!r}.")
            postprocess["top_k"] = top_k
        if function_to_apply is not None:
            function = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if function not in FUNCTIONS:
                raise PipelineError(f"function_to_apply must be one of {list(FUNCTIONS)}, got {function_to_apply!r}.")
            postprocess["function_to_apply"] = function
        return tokenizer_kwargs, {}, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        result = super().__call__(inputs, **kwargs)
        # The reference's shape: a bare text answers inside a one-element list unless the call names top_k.
        if isinstance(inputs, str) and "top_k" not in kwargs:
            return [result]
        return result

    def preprocess(self, item: Any, **tokenizer_kwargs: Any) -> Feature:
        if isinstance(item, dict):
            if "text" not in item:
                raise PipelineError(f"A text-pair input is a dict with 'text' and 'text_pair' keys, got {sorted(item)}.")
            encoded = self.tokenizer(item["text"], item.get("text_pair"), **tokenizer_kwargs)
        elif isinstance(item, str):
            encoded = self.tokenizer(item, **tokenizer_kwargs)
        else:
            raise PipelineError(
                f"text-classification takes a str or a {{'text': ..., 'text_pair': ...}} dict per input, got "
                f"{type(item).__name__}. To classify a text pair, pass a dict."
            )
        return Feature(encoding_rows(encoded, self.tokenizer.model_input_names)[0])

    def _forward(self, batch: Batch) -> list[torch.Tensor]:
        return list(self.model(**self.model_inputs(batch)).logits.float().cpu())

    def postprocess(self, features: list[Feature], outputs: list[torch.Tensor], top_k: Any = _UNSET,
                    function_to_apply: str | None = None) -> Any:
        config = self.model.config
        scores = apply_function(outputs[0], function_to_apply or default_function(config)).tolist()
        if top_k is _UNSET:
            best = max(range(len(scores)), key=scores.__getitem__)
            return {"label": config.id2label[best], "score": scores[best]}
        ranked = sorted(({"label": config.id2label[i], "score": s} for i, s in enumerate(scores)),
                        key=lambda entry: entry["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]
