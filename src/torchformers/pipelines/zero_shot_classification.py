"""zero-shot-classification: rank labels never trained on, with a natural-language-inference model.

Each candidate label becomes a hypothesis ("This example is {label}.") paired with the text;
the model's entailment score for each pair ranks the labels.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import PipelineError, TokenizerError
from .base import Batch, Feature, Pipeline, encoding_rows

logger = logging.getLogger("torchformers")

DEFAULT_TEMPLATE = "This example is {}."


def parse_labels(labels: Any) -> list[str]:
    """Candidate labels from a list or a comma-separated string."""
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return list(labels)


class ZeroShotClassificationPipeline(Pipeline):
    """Classify texts into ``candidate_labels`` with a sequence-classification model trained on NLI.

    The model's config names its classes in ``label2id``; the one starting with "entail" is the
    entailment class (its first class is taken as contradiction, or its last when entailment is
    the first). Options: ``candidate_labels`` (required: a list, or one comma-separated string),
    ``hypothesis_template`` (default ``"This example is {}."``) and ``multi_label`` (score each
    label on its own, entailment against contradiction, instead of a softmax across labels).
    Each text gives ``{"sequence", "labels", "scores"}`` with labels best first.
    """

    auto_class_name: ClassVar[str] = "AutoModelForSequenceClassification"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.entailment_id == -1:
            logger.warning("No label of the model's label2id starts with 'entail', so the entailment class is unknown "
                           "and the last class is used; name the classes in config.label2id.")

    @property
    def entailment_id(self) -> int:
        for label, index in self.model.config.label2id.items():
            if label.lower().startswith("entail"):
                return int(index)
        return -1

    def _sanitize_parameters(self, candidate_labels: Any = None, hypothesis_template: str | None = None,
                             multi_label: bool | None = None) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = parse_labels(candidate_labels)
        if hypothesis_template is not None:
            preprocess["hypothesis_template"] = hypothesis_template
        postprocess = {} if multi_label is None else {"multi_label": multi_label}
        return preprocess, {}, postprocess

    def __call__(self, sequences: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs["candidate_labels"] = args[0]
        elif args:
            raise PipelineError(f"zero-shot-classification takes the texts and the candidate labels, got extra "
                                f"arguments {args}.")
        if "candidate_labels" not in kwargs and "candidate_labels" not in self._params[0]:
            raise PipelineError("zero-shot-classification needs candidate_labels=[...] (the labels to choose from).")
        return super().__call__(sequences, **kwargs)

    def preprocess(self, sequence: Any, candidate_labels: list[str] | None = None,
                   hypothesis_template: str = DEFAULT_TEMPLATE) -> list[Feature]:
        if not candidate_labels:
            raise PipelineError("zero-shot-classification needs at least one candidate label.")
        if not isinstance(sequence, str) or not sequence:
            raise PipelineError(f"zero-shot-classification takes non-empty strings, got {sequence!r}.")
        if hypothesis_template.format(candidate_labels[0]) == hypothesis_template:
            raise PipelineError(f"hypothesis_template {hypothesis_template!r} has no {{}} for the label to go in.")
        features = []
        for label in candidate_labels:
            hypothesis = hypothesis_template.format(label)
            try:
                encoded = self.tokenizer(sequence, hypothesis, truncation="only_first")
            except TokenizerError:
                # The hypothesis alone is longer than the model's length: the reference then does not truncate.
                encoded = self.tokenizer(sequence, hypothesis)
            row = encoding_rows(encoded, self.tokenizer.model_input_names)[0]
            features.append(Feature(row, {"label": label, "sequence": sequence}))
        return features

    def _forward(self, batch: Batch) -> list[torch.Tensor]:
        return list(self.model(**self.model_inputs(batch)).logits.float().cpu())

    def postprocess(self, features: list[Feature], outputs: list[torch.Tensor], multi_label: bool = False) -> Any:
        labels = [feature.extra["label"] for feature in features]
        logits = torch.stack(outputs).numpy()
        entailment = self.entailment_id
        if multi_label or len(labels) == 1:
            contradiction = -1 if entailment == 0 else 0
            pair = np.exp(logits[:, [contradiction, entailment]])
            scores = (pair / pair.sum(-1, keepdims=True))[:, 1]
        else:
            exp = np.exp(logits[:, entailment])
            scores = exp / exp.sum()
        ranked = list(reversed(scores.argsort()))
        return {"sequence": features[0].extra["sequence"], "labels": [labels[i] for i in ranked],
                "scores": scores[ranked].tolist()}
