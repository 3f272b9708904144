"""fill-mask answers equal the reference pipeline's: tokens, strings, sequences and scores."""

from __future__ import annotations

import pytest
from conftest import assert_same_answers

from torchformers.errors import PipelineError

TEXTS = ["The capital of France is [MASK].", "I [MASK] this movie, it was [MASK] good.", "[MASK]"]


@pytest.fixture(scope="module")
def fillers(pipelines):
    return pipelines("fill-mask", "masked_lm")


@pytest.mark.parametrize("options", [{}, {"top_k": 2}, {"targets": ["paris", "london", "berlin"]},
                                     {"targets": "good", "top_k": 3}, {"targets": ["paris", "xylophonist"]}])
def test_same_predictions_as_the_reference(fillers, options):
    ours, reference = fillers
    for inputs in (TEXTS[0], TEXTS[1], TEXTS[2], TEXTS, TEXTS[:1]):
        assert_same_answers(ours(inputs, **options), reference(inputs, **options))


def test_batched_like_one_by_one(fillers):
    ours, _ = fillers
    assert_same_answers(ours(TEXTS * 2, batch_size=4), [ours(text) for text in TEXTS * 2], atol=1e-5)


def test_several_masks_give_one_list_per_mask(fillers):
    ours, _ = fillers
    answer = ours(TEXTS[1], top_k=3)
    assert len(answer) == 2 and all(len(per_mask) == 3 for per_mask in answer)
    assert answer[0][0]["sequence"].startswith("[CLS]")  # several masks keep special tokens, as in the reference


def test_input_without_a_mask_is_an_error(fillers):
    ours, _ = fillers
    with pytest.raises(PipelineError, match=r"No mask token \(\[MASK\]\)"):
        ours("There is nothing to fill here.")
    with pytest.raises(PipelineError, match="targets"):
        ours(TEXTS[0], targets=[])
