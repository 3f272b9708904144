"""question-answering: extractive answers, a span of the context, with the classic pipeline's behaviour.

The reference library's current release dropped this pipeline; this one keeps the behaviour of
its last version (4.x): a context longer than ``max_seq_len`` is split into windows that
overlap by ``doc_stride`` tokens, each window proposes its best spans, and the best over all
windows win. A span's score is P(start) * P(end), the softmaxes taken over the context tokens
(and the first, [CLS], token, which stands for "no answer").
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from ..errors import PipelineError, UnsupportedArgumentError
from .base import Batch, Feature, Pipeline

MASKED_LOGIT = -10000.0  # what the classic pipeline puts on tokens that cannot be part of an answer


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, top_k: int,
               max_answer_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The ``top_k`` best (start, end) token spans of one window, their scores, and the window's
    "no answer" score (P(start=0) * P(end=0)).

    ``allowed`` marks the tokens an answer may use. Spans run forward and hold at most
    ``max_answer_len`` tokens; candidates outside ``allowed`` are dropped after the top-k cut,
    as in the classic pipeline (so fewer than ``top_k`` may come back).
    """
    start = _softmax(np.where(allowed, start_logits, MASKED_LOGIT))
    end = _softmax(np.where(allowed, end_logits, MASKED_LOGIT))
    null_score = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
    flat = candidates.ravel()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, top_k)[:top_k]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, candidates.shape)
    # The classic pipeline also returned backward, too long or [CLS] "spans" (score 0) when top_k
    # exceeded the real ones; only real spans are kept here.
    keep = allowed[starts] & allowed[ends] & (starts > 0) & (starts <= ends) & (ends < starts + max_answer_len)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends], null_score


def _softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max())
    return exp / exp.sum()


class QuestionAnsweringPipeline(Pipeline):
    """Answer questions with a span of a context, using a question-answering (span) model.

    Inputs: ``question=...`` and ``context=...`` (strings, or lists for several), a
    ``{"question": ..., "context": ...}`` dict, or a list of such dicts. Options: ``top_k``
    (answers per input, default 1), ``doc_stride`` (overlap between the windows of a long
    context, default ``min(max_seq_len // 2, 128)``), ``max_seq_len`` (tokens per window,
    default ``min(model_max_length, 384)``), ``max_answer_len`` (default 15 tokens),
    ``handle_impossible_answer`` (also consider the empty answer), ``align_to_words`` (widen
    the span to whole words, default True). Each answer is ``{"score", "start", "end",
    "answer"}`` with character offsets into the context; ``top_k > 1`` gives a list.

    Differences from the classic pipeline: ``max_question_len`` (it applied to slow tokenizers
    only) is refused, as are ``SquadExample`` inputs; slow tokenizers take the same path as fast
    ones; and when ``top_k`` exceeds the number of real spans, the zero-score pseudo-spans
    (backward, too long, or on [CLS]) the classic pipeline filled the list with are left out.
    """

    auto_class_name: ClassVar[str] = "AutoModelForQuestionAnswering"

    def _sanitize_parameters(self, top_k: int | None = None, topk: int | None = None, doc_stride: int | None = None,
                             max_answer_len: int | None = None, max_seq_len: int | None = None,
                             max_question_len: int | None = None, handle_impossible_answer: bool | None = None,
                             align_to_words: bool | None = None, padding: Any = None) -> tuple[dict, dict, dict]:
        if max_question_len is not None:
            raise UnsupportedArgumentError(
                "max_question_len is not supported: the question and context share max_seq_len tokens, and only "
                "the context is split into windows."
            )
        preprocess: dict[str, Any] = {}
        for name, value in (("doc_stride", doc_stride), ("max_seq_len", max_seq_len), ("padding", padding)):
            if value is not None:
                preprocess[name] = value
        postprocess: dict[str, Any] = {}
        if topk is not None and top_k is None:
            warnings.warn("topk is an old name; use top_k.", FutureWarning, stacklevel=3)
            top_k = topk
        for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len)):
            if value is not None:
                if not isinstance(value, int) or value < 1:
                    raise PipelineError(f"{name} must be a positive integer, got {value!r}.")
                postprocess[name] = value
        if handle_impossible_answer is not None:
            postprocess["handle_impossible_answer"] = handle_impossible_answer
        if align_to_words is not None:
            postprocess["align_to_words"] = align_to_words
        return preprocess, {}, postprocess

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        inputs = self._inputs(args, question, context)
        if isinstance(inputs, list) and len(inputs) == 1:
            inputs = inputs[0]  # the classic pipeline answers a one-element list like a single input
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _inputs(args: tuple[Any, ...], question: Any, context: Any) -> Any:
        if args and (question is not None or context is not None):
            raise PipelineError("Pass the inputs either positionally or as question=/context=, not both.")
        if len(args) == 2 and all(isinstance(arg, str) for arg in args):
            return {"question": args[0], "context": args[1]}
        if len(args) == 1:
            return args[0]
        if args:
            raise PipelineError(f"question-answering takes one input or a (question, context) pair, got {len(args)}.")
        if question is None or context is None:
            raise PipelineError("question-answering needs both question=... and context=... (or {'question': ..., "
                                "'context': ...} dicts).")
        if isinstance(question, str) and isinstance(context, str):
            return {"question": question, "context": context}
        if isinstance(question, list) and isinstance(context, str):
            return [{"question": q, "context": context} for q in question]
        if isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise PipelineError(f"{len(question)} questions but {len(context)} contexts; give one context per "
                                    "question, or a single context for all.")
            return [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        raise PipelineError("question and context must be strings, or lists of strings.")

    def is_single(self, inputs: Any, preprocess_params: dict[str, Any]) -> bool:
        return isinstance(inputs, dict)

    def preprocess(self, example: Any, doc_stride: int | None = None, max_seq_len: int | None = None,
                   padding: Any = False) -> list[Feature]:
        if not isinstance(example, dict):
            raise PipelineError(f"Each question-answering input is a {{'question': ..., 'context': ...}} dict, got "
                                f"{type(example).__name__}.")
        for key in ("question", "context"):
            if not isinstance(example.get(key), str) or not example[key]:
                raise PipelineError(f"The input's {key!r} must be a non-empty string, got {example.get(key)!r}.")
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, 384)
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise PipelineError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len}).")
        # Models with left padding (XLNet-style) read the context first, as in the classic pipeline.
        question_first = self.tokenizer.padding_side == "right"
        pair = (example["question"], example["context"]) if question_first else (example["context"],
                                                                                     example["question"])
        encoded = self.tokenizer(*pair, padding=padding, truncation="only_second" if question_first else "only_first",
                                 max_length=max_seq_len, stride=doc_stride, return_overflowing_tokens=True)
        context_index = 1 if question_first else 0
        features = []
        for encoding in encoded.encodings:
            allowed = [sequence == context_index for sequence in encoding.sequence_ids]
            for index, token_id in enumerate(encoding.ids):
                if token_id == self.tokenizer.cls_token_id:
                    allowed[index] = True  # the "no answer" position
            inputs = {"input_ids": list(encoding.ids)}
            for key, values in (("attention_mask", encoding.attention_mask), ("token_type_ids", encoding.type_ids)):
                if key in self.tokenizer.model_input_names:
                    inputs[key] = list(values)
            features.append(Feature(inputs, {"allowed": np.array(allowed) & np.array(encoding.attention_mask, bool),
                                             "encoding": encoding, "context": example["context"],
                                             "context_index": context_index}))
        return features

    def _forward(self, batch: Batch) -> list[tuple[np.ndarray, np.ndarray]]:
        output = self.model(**self.model_inputs(batch))
        starts = batch.unpadded(output.start_logits.float())
        ends = batch.unpadded(output.end_logits.float())
        return [(start.cpu().numpy(), end.cpu().numpy()) for start, end in zip(starts, ends, strict=True)]

    def postprocess(self, features: list[Feature], outputs: list[tuple[np.ndarray, np.ndarray]], top_k: int = 1,
                    handle_impossible_answer: bool = False, max_answer_len: int = 15,
                    align_to_words: bool = True) -> Any:
        null_score = 1e6
        answers = []
        for feature, (start_logits, end_logits) in zip(features, outputs, strict=True):
            starts, ends, scores, window_null = best_spans(start_logits, end_logits, feature.extra["allowed"], top_k,
                                                           max_answer_len)
            null_score = min(null_score, window_null)
            for start, end, score in zip(starts.tolist(), ends.tolist(), scores.tolist(), strict=True):
                first, last = self._char_span(feature, start, end, align_to_words)
                answers.append({"score": score, "start": first, "end": last,
                                "answer": feature.extra["context"][first:last]})
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    @staticmethod
    def _char_span(feature: Feature, start: int, end: int, align_to_words: bool) -> tuple[int, int]:
        encoding = feature.extra["encoding"]
        if align_to_words:
            start_word, end_word = encoding.token_to_word(start), encoding.token_to_word(end)
            if start_word is not None and end_word is not None:
                first = encoding.word_to_chars(start_word, feature.extra["context_index"])
                last = encoding.word_to_chars(end_word, feature.extra["context_index"])
                if first is not None and last is not None:
                    return first[0], last[1]
        return encoding.offsets[start][0], encoding.offsets[end][1]
