"""feature-extraction: the model's hidden states for each token, or one pooled sentence embedding."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import PipelineError
from .base import Batch, Feature, Pipeline, check_tokenizer_kwargs, encoding_rows

POOLINGS = ("mean",)


class FeatureExtractionPipeline(Pipeline):
    """Embed texts with a bare model (no task head).

    By default each text gives its token embeddings, the last hidden states, as a nested list
    of shape [1, tokens, hidden] (a tensor with ``return_tensors=True``), as in the reference.
    Options: ``truncation``, ``tokenize_kwargs``, ``return_tensors``, and two of torchformers':
    ``pooling="mean"`` averages the token embeddings over the real tokens (sentence-transformers'
    mean pooling) and ``normalize=True`` scales the result to unit length; a pooled text gives a
    list of ``hidden`` floats (a 1-d tensor with ``return_tensors=True``). The
    ``"sentence-embedding"`` task is this pipeline with both on.

    Difference: with ``batch_size > 1`` each text's embeddings keep only its own tokens (the
    reference also returns the batch's padding positions).
    """

    auto_class_name: ClassVar[str] = "AutoModel"
    default_pooling: ClassVar[str | None] = None
    default_normalize: ClassVar[bool] = False

    def _sanitize_parameters(self, truncation: bool | str | None = None,
                             tokenize_kwargs: dict[str, Any] | None = None, return_tensors: bool | None = None,
                             pooling: str | None = None, normalize: bool | None = None) -> tuple[dict, dict, dict]:
        tokenize_kwargs = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in tokenize_kwargs:
                raise PipelineError("truncation is given twice: as an argument and in tokenize_kwargs.")
            tokenize_kwargs["truncation"] = truncation
        check_tokenizer_kwargs(self.tokenizer, tokenize_kwargs, "feature-extraction tokenize_kwargs")
        postprocess: dict[str, Any] = {}
        if return_tensors is not None:
            postprocess["return_tensors"] = return_tensors
        if pooling is not None:
            if pooling not in POOLINGS:
                raise PipelineError(f"pooling must be one of {list(POOLINGS)} (or None for token embeddings), got "
                                    f"{pooling!r}.")
            postprocess["pooling"] = pooling
        if normalize is not None:
            postprocess["normalize"] = normalize
        return tokenize_kwargs, {}, postprocess

    def preprocess(self, text: Any, **tokenize_kwargs: Any) -> Feature:
        if not isinstance(text, str):
            raise PipelineError(f"feature-extraction takes a str per input, got {type(text).__name__}.")
        return Feature(encoding_rows(self.tokenizer(text, **tokenize_kwargs), self.tokenizer.model_input_names)[0])

    def _forward(self, batch: Batch) -> list[torch.Tensor]:
        hidden = self.model(**self.model_inputs(batch))[0]
        return [row.cpu() for row in batch.unpadded(hidden)]

    def postprocess(self, features: list[Feature], outputs: list[torch.Tensor], return_tensors: bool = False,
                    pooling: str | None = None, normalize: bool | None = None) -> Any:
        embeddings = outputs[0]
        pooling = pooling or self.default_pooling
        normalize = self.default_normalize if normalize is None else normalize
        if pooling == "mean":
            mask = torch.tensor(features[0].inputs.get("attention_mask", [1] * len(features[0])), dtype=torch.float32)
            embeddings = (embeddings.float() * mask[:, None]).sum(dim=0) / mask.sum().clamp(min=1e-9)
        else:
            embeddings = embeddings.unsqueeze(0)
        if normalize:
            embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=-1)
        return embeddings if return_tensors else embeddings.tolist()


class SentenceEmbeddingPipeline(FeatureExtractionPipeline):
    """feature-extraction with mean pooling and unit length on: one vector per text, as
    sentence-transformers computes it for models such as all-MiniLM-L6-v2."""

    default_pooling: ClassVar[str | None] = "mean"
    default_normalize: ClassVar[bool] = True
