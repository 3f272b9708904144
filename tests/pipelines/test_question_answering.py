"""question-answering: the answer is the best span computed directly from the reference model's
start/end logits (the reference library no longer has this pipeline), window by window for long
contexts, with the classic pipeline's scoring: P(start) * P(end), softmaxes over the context
tokens and [CLS]."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import assert_same_answers

import torchformers
from torchformers.errors import PipelineError, UnsupportedArgumentError

QUESTION = "Where does Wolfgang live?"
CONTEXT = "My name is Wolfgang and I live in Berlin, a large city in Germany with many museums."
LONG_CONTEXT = " ".join(f"Section {i}: the committee in Vienna reviewed figures, argued over budgets and adjourned."
                        for i in range(40))


@pytest.fixture(scope="module")
def qa(checkpoint):
    directory = str(checkpoint("question_answering"))
    ours = torchformers.pipeline("question-answering", model=directory, device="cpu")
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(directory).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return ours, model, tokenizer


def spans_directly(model, tokenizer, question, context, max_seq_len=384, stride=128, max_answer_len=15):
    """Every (score, start char, end char) span of every window, scored from the model's logits."""
    encoded = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    spans = []
    for window in range(len(encoded["input_ids"])):
        inputs = {key: torch.tensor([encoded[key][window]]) for key in ("input_ids", "token_type_ids",
                                                                          "attention_mask")}
        with torch.no_grad():
            output = model(**inputs)
        context_tokens = [i for i, sequence in enumerate(encoded.sequence_ids(window)) if sequence == 1]
        candidates = [0, *context_tokens]  # [CLS] takes part in the softmax, never in an answer
        start = output.start_logits[0, candidates].double().softmax(-1)
        end = output.end_logits[0, candidates].double().softmax(-1)
        offsets = encoded["offset_mapping"][window]
        for i, s in enumerate(context_tokens, start=1):
            for j, e in enumerate(context_tokens, start=1):
                if s <= e < s + max_answer_len:
                    spans.append((float(start[i] * end[j]), offsets[s][0], offsets[e][1]))
    return sorted(spans, reverse=True)


def test_the_answer_is_the_best_span_of_the_logits(qa):
    ours, model, tokenizer = qa
    score, start, end = spans_directly(model, tokenizer, QUESTION, CONTEXT)[0]
    answer = ours(question=QUESTION, context=CONTEXT, align_to_words=False)
    assert (answer["start"], answer["end"], answer["answer"]) == (start, end, CONTEXT[start:end])
    assert answer["score"] == pytest.approx(score, abs=1e-4)


def test_top_k_and_max_answer_len(qa):
    ours, model, tokenizer = qa
    expected = spans_directly(model, tokenizer, QUESTION, CONTEXT, max_answer_len=3)[:5]
    answers = ours(question=QUESTION, context=CONTEXT, top_k=5, max_answer_len=3, align_to_words=False)
    assert [(a["start"], a["end"]) for a in answers] == [(s, e) for _, s, e in expected]
    assert [a["score"] for a in answers] == pytest.approx([score for score, _, _ in expected], abs=1e-4)
    assert all(len(tokenizer.tokenize(a["answer"])) <= 3 for a in answers)


def test_long_context_is_read_in_overlapping_windows(qa):
    ours, model, tokenizer = qa
    expected = spans_directly(model, tokenizer, "Who adjourned?", LONG_CONTEXT, max_seq_len=64, stride=16)
    answers = ours(question="Who adjourned?", context=LONG_CONTEXT, max_seq_len=64, doc_stride=16, top_k=3,
                   align_to_words=False)
    # Each window proposes its own best spans; the best over all windows win.
    assert (answers[0]["start"], answers[0]["end"]) == expected[0][1:]
    assert answers[0]["score"] == pytest.approx(expected[0][0], abs=1e-4)
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)


def test_answers_are_widened_to_whole_words(qa):
    ours, _, _ = qa
    for answer in ours(question=QUESTION, context=CONTEXT, top_k=10):
        start, end = answer["start"], answer["end"]
        assert CONTEXT[start:end] == answer["answer"]
        assert start == 0 or not CONTEXT[start - 1].isalnum()
        assert end == len(CONTEXT) or not CONTEXT[end].isalnum()


def test_impossible_answer(qa):
    ours, model, tokenizer = qa
    encoded = tokenizer(QUESTION, CONTEXT, return_tensors="pt")
    with torch.no_grad():
        output = model(**encoded)
    allowed = torch.tensor([s == 1 for s in encoded.sequence_ids(0)])
    allowed[0] = True
    null = (output.start_logits[0][allowed].softmax(-1)[0] * output.end_logits[0][allowed].softmax(-1)[0]).item()
    answers = ours(question=QUESTION, context=CONTEXT, handle_impossible_answer=True, top_k=1000)
    empty = [a for a in answers if a["answer"] == ""]
    assert empty == [{"score": pytest.approx(null, abs=1e-4), "start": 0, "end": 0, "answer": ""}]


def test_input_forms_and_batching(qa):
    ours, _, _ = qa
    questions = [QUESTION, "What does the city have?", "Which country?"]
    one_by_one = [ours(question=q, context=CONTEXT) for q in questions]
    assert_same_answers(ours(question=questions, context=CONTEXT, batch_size=2), one_by_one, atol=1e-5)
    assert_same_answers(ours([{"question": q, "context": CONTEXT} for q in questions], batch_size=3), one_by_one,
                        atol=1e-5)
    assert_same_answers(ours(QUESTION, CONTEXT), one_by_one[0])
    assert_same_answers(ours([{"question": QUESTION, "context": CONTEXT}]), one_by_one[0])  # the classic shape
    long_batch = ours(question=["Who adjourned?", QUESTION], context=[LONG_CONTEXT, CONTEXT], max_seq_len=64,
                      doc_stride=16, batch_size=4)
    assert_same_answers(long_batch, [ours(question="Who adjourned?", context=LONG_CONTEXT, max_seq_len=64,
                                          doc_stride=16), one_by_one[0]], atol=1e-5)


def test_bad_inputs(qa):
    ours, _, _ = qa
    with pytest.raises(PipelineError, match="question=.*context="):
        ours(question=QUESTION)
    with pytest.raises(PipelineError, match="'context' must be a non-empty string"):
        ours(question=QUESTION, context="")
    with pytest.raises(PipelineError, match="doc_stride"):
        ours(question=QUESTION, context=CONTEXT, max_seq_len=32, doc_stride=40)
    with pytest.raises(PipelineError, match="2 questions but 1 contexts"):
        ours(question=[QUESTION, QUESTION], context=[CONTEXT])
    with pytest.raises(UnsupportedArgumentError, match="max_question_len"):
        ours(question=QUESTION, context=CONTEXT, max_question_len=10)
