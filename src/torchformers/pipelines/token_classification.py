"""token-classification (alias ner): a label per token, or entities grouped from them."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from ..errors import PipelineError
from .base import Batch, Feature, Pipeline

STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")


def split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity type) of an IOB label; a label without a prefix continues ("I")."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities found in overlapping windows of a long text: of those that overlap, keep the longer
    (the higher score on a tie)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda entity: entity["start"])
    kept, current = [], entities[0]
    for entity in entities:
        if current["start"] <= entity["start"] < current["end"]:
            length, current_length = entity["end"] - entity["start"], current["end"] - current["start"]
            if length > current_length or (length == current_length and entity["score"] > current["score"]):
                current = entity
        else:
            kept.append(current)
            current = entity
    kept.append(current)
    return kept


class TokenClassificationPipeline(Pipeline):
    """Label each token of a text (named entities, parts of speech) with a token-classification model.

    Options, as in the reference: ``aggregation_strategy`` (``"none"``: one entry per token with
    ``entity``, ``score``, ``index``, ``word``, ``start``, ``end``; ``"simple"``: adjacent tokens
    of one entity grouped into ``entity_group`` entries; ``"first"``, ``"average"``, ``"max"``:
    words first take one label from their tokens (first token's, the average scores' or the
    best token's), then are grouped), ``ignore_labels`` (default ``["O"]``), ``stride`` (long
    texts are split into overlapping windows of the model's length instead of truncated),
    ``is_split_into_words`` with ``delimiter`` for pre-split input. ``start``/``end`` are
    character offsets into the original text.

    Difference: slow tokenizers here report offsets too, so every strategy works with them; the
    pieces of a word are the tokens that share its word id (fast tokenizers follow the
    reference: a word-piece prefix such as "##", else no space before the token).
    """

    auto_class_name: ClassVar[str] = "AutoModelForTokenClassification"

    def _sanitize_parameters(self, ignore_labels: list[str] | None = None, aggregation_strategy: Any = None,
                             stride: int | None = None, is_split_into_words: bool = False,
                             delimiter: str | None = None) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {"is_split_into_words": is_split_into_words}
        if is_split_into_words:
            preprocess["delimiter"] = " " if delimiter is None else delimiter
        postprocess: dict[str, Any] = {}
        strategy = None
        if aggregation_strategy is not None:
            strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy)).lower()
            if strategy not in STRATEGIES:
                raise PipelineError(f"aggregation_strategy must be one of {list(STRATEGIES)}, got "
                                    f"{aggregation_strategy!r}.")
            postprocess["aggregation_strategy"] = strategy
        if ignore_labels is not None:
            postprocess["ignore_labels"] = list(ignore_labels)
        if stride is not None:
            if stride >= self.tokenizer.model_max_length:
                raise PipelineError(f"stride ({stride}) must be less than the tokenizer's model_max_length "
                                    f"({self.tokenizer.model_max_length}).")
            if strategy == "none":
                raise PipelineError("stride splits long texts into windows whose entities are then merged; it "
                                    "needs an aggregation_strategy other than 'none'.")
            preprocess["stride"] = stride
        return preprocess, {}, postprocess

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        split = kwargs.get("is_split_into_words", self._params[0].get("is_split_into_words"))
        if split and isinstance(inputs, list) and not all(isinstance(words, list) for words in inputs):
            # One pre-split sentence: answered as a batch of one, as the reference does.
            inputs = [inputs]
        return super().__call__(inputs, **kwargs)

    def preprocess(self, sentence: Any, is_split_into_words: bool = False, delimiter: str = " ",
                   stride: int | None = None) -> list[Feature]:
        word_starts = None
        if is_split_into_words:
            if not isinstance(sentence, list):
                raise PipelineError("With is_split_into_words=True each input is a list of words.")
            words, sentence = sentence, delimiter.join(sentence)
            word_starts, position = [], 0
            for word in words:
                word_starts.append(position)
                position += len(word) + len(delimiter)
            text: Any = words
        elif isinstance(sentence, str):
            text = sentence
        else:
            raise PipelineError(f"token-classification takes a str per input, got {type(sentence).__name__}.")
        options: dict[str, Any] = {"is_split_into_words": is_split_into_words}
        if stride is not None:
            options.update(return_overflowing_tokens=True, stride=stride)
        encoded = self.tokenizer(text, truncation=bool(self.tokenizer.model_max_length), **options)
        features = []
        for index, encoding in enumerate(encoded.encodings):
            offsets = list(encoding.offsets)
            if word_starts is not None:
                # Offsets of pre-split words are within each word; move them into the joined sentence.
                offsets = [(s + word_starts[w], e + word_starts[w]) if w is not None else (s, e)
                           for (s, e), w in zip(offsets, encoding.word_ids, strict=True)]
            inputs = {"input_ids": list(encoding.ids)}
            if "attention_mask" in self.tokenizer.model_input_names:
                inputs["attention_mask"] = list(encoding.attention_mask)
            if "token_type_ids" in self.tokenizer.model_input_names:
                inputs["token_type_ids"] = list(encoding.type_ids)
            features.append(Feature(inputs, {"sentence": sentence, "offsets": offsets, "word_ids": encoding.word_ids,
                                             "special": list(encoding.special_tokens_mask), "window": index}))
        return features

    def _forward(self, batch: Batch) -> list[torch.Tensor]:
        logits = self.model(**self.model_inputs(batch)).logits.float()
        return [row.cpu() for row in batch.unpadded(logits)]

    def postprocess(self, features: list[Feature], outputs: list[torch.Tensor], aggregation_strategy: str = "none",
                    ignore_labels: list[str] | None = None) -> list[dict[str, Any]]:
        ignore = ["O"] if ignore_labels is None else ignore_labels
        entities = []
        for feature, logits in zip(features, outputs, strict=True):
            scores = torch.softmax(logits, dim=-1)
            tokens = self._tokens(feature, scores, aggregation_strategy)
            for entity in self._aggregate(tokens, aggregation_strategy):
                if entity.get("entity") not in ignore and entity.get("entity_group") not in ignore:
                    entities.append(entity)
        return merge_overlapping(entities) if len(features) > 1 else entities

    def _tokens(self, feature: Feature, scores: torch.Tensor, strategy: str) -> list[dict[str, Any]]:
        """One entry per real (non-special) token: its string, scores, offsets and whether it
        continues the previous word."""
        sentence, word_ids = feature.extra["sentence"], feature.extra["word_ids"]
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        has_subword_prefix = bool(getattr(getattr(backend, "model", None), "continuing_subword_prefix", None))
        if backend is not None and not has_subword_prefix and strategy in WORD_STRATEGIES:
            warnings.warn("The tokenizer does not mark word pieces; words are found from the spaces in the text.",
                          UserWarning, stacklevel=4)
        ids = feature.inputs["input_ids"]
        tokens = []
        for index, (token_id, is_special) in enumerate(zip(ids, feature.extra["special"], strict=True)):
            if is_special:
                continue
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            start, end = feature.extra["offsets"][index]
            original = sentence[start:end]
            if backend is None:
                # A slow tokenizer: the pieces of one word share its word id.
                is_subword = index > 0 and word_ids[index] is not None and word_ids[index] == word_ids[index - 1]
            elif has_subword_prefix:
                is_subword = len(word) != len(original)
            else:
                is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
            if token_id == self.tokenizer.unk_token_id:
                word, is_subword = original, False
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "is_subword": is_subword})
        return tokens

    def _aggregate(self, tokens: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        id2label = self.model.config.id2label
        if strategy in ("none", "simple"):
            entities = []
            for token in tokens:
                best = int(token["scores"].argmax())
                entities.append({"entity": id2label[best], "score": token["scores"][best].item(),
                                 "index": token["index"], "word": token["word"], "start": token["start"],
                                 "end": token["end"]})
        else:
            entities = [self._word_entity(word, strategy) for word in self._words(tokens)]
        return entities if strategy == "none" else self._group(entities)

    @staticmethod
    def _words(tokens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        words: list[list[dict[str, Any]]] = []
        for token in tokens:
            if words and token["is_subword"]:
                words[-1].append(token)
            else:
                words.append([token])
        return words

    def _word_entity(self, tokens: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda token: token["scores"].max().item())["scores"]
        else:
            scores = torch.stack([token["scores"] for token in tokens]).mean(dim=0)
        best = int(scores.argmax())
        return {"entity": self.model.config.id2label[best], "score": scores[best].item(),
                "word": self.tokenizer.convert_tokens_to_string([token["word"] for token in tokens]),
                "start": tokens[0]["start"], "end": tokens[-1]["end"]}

    def _group(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Join adjacent entries of one entity type; a "B-" label starts a new entity."""
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            bi, tag = split_tag(entity["entity"])
            if groups and bi != "B" and tag == split_tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
                 "score": sum(e["score"] for e in group) / len(group),
                 "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in group]),
                 "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


NerPipeline = TokenClassificationPipeline
