"""fill-mask: the likeliest tokens for each mask token of a text."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from ..errors import PipelineError
from .base import Batch, Feature, Pipeline, check_tokenizer_kwargs, encoding_rows

logger = logging.getLogger("torchformers")


class FillMaskPipeline(Pipeline):
    """Predict the masked tokens of texts with a masked-language model.

    Options: ``top_k`` (default 5), ``targets`` (score only these tokens; a word outside the
    vocabulary is replaced by its first token, with a warning, as in the reference) and
    ``tokenizer_kwargs``. Each prediction is ``{"score", "token", "token_str", "sequence"}``;
    a text with several masks gives one list per mask (scores are per mask, not joint), and
    its sequences keep the special tokens, as in the reference.
    """

    auto_class_name: ClassVar[str] = "AutoModelForMaskedLM"

    def check_model(self) -> None:
        super().check_model()
        if self.tokenizer.mask_token_id is None:
            raise PipelineError("fill-mask needs a tokenizer with a mask token; this one has none (mask_token).")

    def _sanitize_parameters(self, top_k: int | None = None, targets: str | list[str] | None = None,
                             tokenizer_kwargs: dict[str, Any] | None = None) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        if tokenizer_kwargs is not None:
            check_tokenizer_kwargs(self.tokenizer, tokenizer_kwargs, "fill-mask tokenizer_kwargs")
            preprocess["tokenizer_kwargs"] = tokenizer_kwargs
        postprocess: dict[str, Any] = {}
        if targets is not None:
            postprocess["target_ids"] = self.target_ids(targets)
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise PipelineError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess["top_k"] = top_k
        return preprocess, {}, postprocess

    def target_ids(self, targets: str | list[str]) -> torch.Tensor:
        """Token ids of the targets: vocabulary entries as they are, other words by their first token."""
        vocab = self.tokenizer.get_vocab()
        ids = []
        for target in [targets] if isinstance(targets, str) else targets:
            token_id = vocab.get(target)
            if token_id is None:
                pieces = self.tokenizer(target, add_special_tokens=False, return_attention_mask=False,
                                        return_token_type_ids=False, max_length=1, truncation=True)["input_ids"]
                if not pieces:
                    logger.warning("The target %r is not in the vocabulary and has no tokens; it is left out.", target)
                    continue
                token_id = pieces[0]
                logger.warning("The target %r is not in the vocabulary; it is replaced by its first token %r.",
                               target, self.tokenizer.convert_ids_to_tokens(token_id))
            ids.append(token_id)
        if not ids:
            raise PipelineError(f"targets={targets!r} gives no token to score; pass at least one word.")
        return torch.tensor(sorted(set(ids)))

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        outputs = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and len(inputs) == 1:
            return outputs[0]  # the reference answers a one-text list like the text itself
        return outputs

    def preprocess(self, text: Any, tokenizer_kwargs: dict[str, Any] | None = None) -> Feature:
        encoded = self.tokenizer(text, **(tokenizer_kwargs or {}))
        row = encoding_rows(encoded, self.tokenizer.model_input_names)[0]
        if self.tokenizer.mask_token_id not in row["input_ids"]:
            raise PipelineError(f"No mask token ({self.tokenizer.mask_token}) found in the input {text!r}; fill-mask "
                                "predicts the token at each mask.")
        return Feature(row)

    def _forward(self, batch: Batch) -> list[torch.Tensor]:
        # Only the mask positions are needed: keep (masks, vocabulary) per row, not the whole sequence.
        logits = self.model(**self.model_inputs(batch)).logits
        is_mask = batch.inputs["input_ids"] == self.tokenizer.mask_token_id
        return [logits[row][is_mask[row]].float().cpu() for row in range(logits.shape[0])]

    def postprocess(self, features: list[Feature], outputs: list[torch.Tensor], top_k: int = 5,
                    target_ids: torch.Tensor | None = None) -> Any:
        input_ids = torch.tensor(features[0].inputs["input_ids"])
        mask_positions = (input_ids == self.tokenizer.mask_token_id).nonzero().squeeze(-1).tolist()
        probs = outputs[0].softmax(dim=-1)
        if target_ids is not None:
            probs = probs[..., target_ids]
            top_k = min(top_k, len(target_ids))
        values, predictions = probs.topk(top_k)
        single_mask = len(mask_positions) == 1
        result = []
        for position, row_values, row_predictions in zip(mask_positions, values.tolist(), predictions.tolist(),
                                                         strict=True):
            proposals = []
            for score, choice in zip(row_values, row_predictions, strict=True):
                token = int(target_ids[choice]) if target_ids is not None else choice
                tokens = input_ids.clone()
                tokens[position] = token
                if self.tokenizer.pad_token_id is not None:
                    tokens = tokens[tokens != self.tokenizer.pad_token_id]
                proposals.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                                  "sequence": self.tokenizer.decode(tokens.tolist(), skip_special_tokens=single_mask)})
            result.append(proposals)
        return result[0] if single_mask else result
