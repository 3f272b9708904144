"""Logits processors: each one against the reference library's class of the same name, on random
scores and token histories (duplicates, padding and -inf scores included)."""

from __future__ import annotations

import pytest
import torch
import transformers.generation.logits_process as reference

import torchformers.generation.logits as ours
from torchformers.errors import ConfigError, GenerationError

VOCAB = 50
BATCH = 4


def random_inputs(seed: int = 0, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 12, (BATCH, length), generator=generator)  # small ids: repeats are common
    scores = torch.randn(BATCH, VOCAB, generator=generator) * 3
    scores[0, 5] = float("-inf")  # already filtered by an earlier processor
    return input_ids, scores


# name -> constructor arguments (the same for both libraries)
CASES: dict[str, tuple[str, dict]] = {
    "min-length-active": ("MinLengthLogitsProcessor", {"min_length": 20, "eos_token_id": [3, 7]}),
    "min-length-inactive": ("MinLengthLogitsProcessor", {"min_length": 5, "eos_token_id": 3}),
    "min-new-tokens": ("MinNewTokensLengthLogitsProcessor",
                       {"prompt_length_to_skip": 4, "min_new_tokens": 10, "eos_token_id": [3, 7]}),
    "temperature": ("TemperatureLogitsWarper", {"temperature": 0.7}),
    "repetition": ("RepetitionPenaltyLogitsProcessor", {"penalty": 1.7}),
    "repetition-ignore-int": ("RepetitionPenaltyLogitsProcessor", {"penalty": 0.8, "prompt_ignore_length": 5}),
    "repetition-ignore-rows": ("RepetitionPenaltyLogitsProcessor",
                               {"penalty": 1.3, "prompt_ignore_length": torch.tensor([0, 2, 5, 11])}),
    "top-k": ("TopKLogitsWarper", {"top_k": 7}),
    "top-k-keep": ("TopKLogitsWarper", {"top_k": 1, "min_tokens_to_keep": 3}),
    "top-p": ("TopPLogitsWarper", {"top_p": 0.6}),
    "top-p-keep": ("TopPLogitsWarper", {"top_p": 0.05, "min_tokens_to_keep": 2}),
    "min-p": ("MinPLogitsWarper", {"min_p": 0.05}),
    "min-p-keep": ("MinPLogitsWarper", {"min_p": 0.9, "min_tokens_to_keep": 3}),
    "typical": ("TypicalLogitsWarper", {"mass": 0.5}),
    "epsilon": ("EpsilonLogitsWarper", {"epsilon": 0.02, "min_tokens_to_keep": 2}),
    "eta": ("EtaLogitsWarper", {"epsilon": 0.05}),
    "no-repeat-1": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 1}),
    "no-repeat-2": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 2}),
    "no-repeat-3": ("NoRepeatNGramLogitsProcessor", {"ngram_size": 3}),
    "bad-words": ("NoBadWordsLogitsProcessor", {"bad_words_ids": [[4], [1, 2], [9, 10, 11], [3]],
                                                "eos_token_id": 3}),
    "sequence-bias": ("SequenceBiasLogitsProcessor", {"sequence_bias": {(4,): 2.5, (1, 2): -3.0, (5, 6, 7): 1.0}}),
    "sequence-bias-list": ("SequenceBiasLogitsProcessor", {"sequence_bias": [[[4], 2.5], [[8, 9], -1.5]]}),
    "forced-bos": ("ForcedBOSTokenLogitsProcessor", {"bos_token_id": 1}),
    "forced-eos": ("ForcedEOSTokenLogitsProcessor", {"max_length": 13, "eos_token_id": [3, 7]}),
    "suppress": ("SuppressTokensLogitsProcessor", {"suppress_tokens": [0, 9, 49]}),
    "suppress-at-begin": ("SuppressTokensAtBeginLogitsProcessor", {"begin_suppress_tokens": [2, 8], "begin_index": 12}),
    "inf-nan": ("InfNanRemoveLogitsProcessor", {}),
    "normalize": ("LogitNormalization", {}),
    "decay": ("ExponentialDecayLengthPenalty",
              {"exponential_decay_length_penalty": (3, 1.4), "eos_token_id": [3], "input_ids_seq_length": 4}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("length", [1, 12])
def test_processor_matches_reference(case, length):
    name, kwargs = CASES[case]
    input_ids, scores = random_inputs(seed=len(case), length=length)
    if case == "repetition-ignore-rows" and length == 1:
        kwargs = {**kwargs, "prompt_ignore_length": torch.tensor([0, 1, 0, 1])}
    mine = getattr(ours, name)(**kwargs)(input_ids, scores.clone())
    theirs = getattr(reference, name)(**kwargs)(input_ids, scores.clone())
    assert mine.shape == theirs.shape == scores.shape
    assert torch.equal(torch.isneginf(mine), torch.isneginf(theirs))
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(mine[finite], theirs[finite], rtol=1e-6, atol=1e-6)


def test_processors_do_not_modify_their_input():
    input_ids, scores = random_inputs()
    for name, kwargs in CASES.values():
        before = scores.clone()
        getattr(ours, name)(**kwargs)(input_ids, scores)
        assert torch.equal(before.nan_to_num(), scores.nan_to_num()), name


def test_processor_list_applies_in_order_and_passes_extra_arguments():
    input_ids, scores = random_inputs()

    class AddStep(ours.LogitsProcessor):
        def __call__(self, input_ids, scores, step):
            return scores + step

    processors = ours.LogitsProcessorList([ours.TemperatureLogitsWarper(2.0), AddStep()])
    torch.testing.assert_close(processors(input_ids, scores, step=1.0), scores / 2 + 1)
    with pytest.raises(GenerationError, match="step"):
        processors(input_ids, scores, other=1)


def test_merge_custom_replaces_same_type_and_appends_the_rest():
    default = [ours.TemperatureLogitsWarper(0.5), ours.TopKLogitsWarper(5)]
    mine_top_k, extra = ours.TopKLogitsWarper(2), ours.MinPLogitsWarper(0.1)
    merged = ours.merge_custom(default, [extra, mine_top_k], ours.LogitsProcessorList)
    assert merged[0] is default[0] and merged[1] is mine_top_k and merged[2] is extra
    assert isinstance(merged, ours.LogitsProcessorList)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("TemperatureLogitsWarper", {"temperature": 0.0}, "do_sample=False"),
        ("TopPLogitsWarper", {"top_p": 1.5}, "top_p"),
        ("TopKLogitsWarper", {"top_k": 0}, "top_k"),
        ("MinPLogitsWarper", {"min_p": -0.1}, "min_p"),
        ("TypicalLogitsWarper", {"mass": 1.0}, "typical_p"),
        ("RepetitionPenaltyLogitsProcessor", {"penalty": 0.0}, "repetition_penalty"),
        ("NoRepeatNGramLogitsProcessor", {"ngram_size": 0}, "no_repeat_ngram_size"),
        ("NoBadWordsLogitsProcessor", {"bad_words_ids": [[1], []]}, "bad_words_ids"),
        ("SequenceBiasLogitsProcessor", {"sequence_bias": {(1,): "a lot"}}, "sequence_bias"),
    ],
)
def test_invalid_arguments_raise_config_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        getattr(ours, name)(**kwargs)


def test_sequence_bias_beyond_the_vocabulary_raises():
    input_ids, scores = random_inputs()
    with pytest.raises(GenerationError, match="500"):
        ours.SequenceBiasLogitsProcessor({(500,): 1.0})(input_ids, scores)


def test_prefix_constrained_matches_reference():
    input_ids, scores = random_inputs()

    def allowed(batch_id, sent):
        return [batch_id, int(sent[-1]) % VOCAB, 30]

    mine = ours.PrefixConstrainedLogitsProcessor(allowed, num_beams=2)(input_ids, scores)
    theirs = reference.PrefixConstrainedLogitsProcessor(allowed, num_beams=2)(input_ids, scores)
    assert torch.equal(mine, theirs)
    with pytest.raises(GenerationError, match="no token"):
        ours.PrefixConstrainedLogitsProcessor(lambda b, s: [], num_beams=1)(input_ids, scores)
