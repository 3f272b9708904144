"""generate(): how settings combine, what it returns, caches, custom processors and criteria,
and clear errors for bad input (never a hang)."""

from __future__ import annotations

import logging
import time

import pytest
import torch
import transformers
from _checkpoints import BOS, EOS, PAD, VOCAB, left_padded, prompt

import torchformers
from torchformers import (
    DynamicCache,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StaticCache,
    StoppingCriteria,
    StoppingCriteriaList,
)
from torchformers.errors import ConfigError, GenerationError, UnsupportedArgumentError


# -- settings ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")  # the reference's advice
def test_unset_max_length_means_twenty_new_tokens_and_explicit_max_length_is_total(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids = prompt(length=7)
    assert ours.generate(ids).shape == reference.generate(ids).shape == (1, 27)
    assert ours.generate(ids, max_length=12).shape == reference.generate(ids, max_length=12).shape == (1, 12)
    assert ours.generate(ids, max_new_tokens=3, max_length=12).shape == (1, 10)  # max_new_tokens wins


def test_model_generation_config_passed_config_and_keywords_combine(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt()
    saved = ours.generation_config
    try:
        ours.generation_config = GenerationConfig(max_new_tokens=4, eos_token_id=EOS, pad_token_id=PAD,
                                                  bos_token_id=BOS)
        assert ours.generate(ids).shape == (1, 10)
        # A passed config overrides what it sets and keeps the model's other settings (eos here).
        config = GenerationConfig(max_new_tokens=6)
        out = ours.generate(ids, generation_config=config, return_dict_in_generate=True, output_scores=True)
        assert out.sequences.shape == (1, 12) and len(out.scores) == 6
        assert ours.generate(ids, generation_config=config, max_new_tokens=2).shape == (1, 8)
        assert config.max_new_tokens == 6 and ours.generation_config.max_new_tokens == 4  # not modified
    finally:
        ours.generation_config = saved


def test_none_switches_a_sampling_setting_off_like_the_reference(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids = prompt(batch=2)
    kwargs = dict(input_ids=ids, max_new_tokens=8, do_sample=True, top_k=None, temperature=None,
                  return_dict_in_generate=True, output_scores=True)
    torch.manual_seed(3)
    mine = ours.generate(**kwargs)
    torch.manual_seed(3)
    theirs = reference.generate(**kwargs)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert torch.isfinite(mine.scores[0]).all()  # top_k=None keeps every token


def test_return_dict_outputs(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids, mask = left_padded(prompt(batch=2), (2, 0))
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, return_dict_in_generate=True,
                  output_scores=True, output_logits=True, output_hidden_states=True, output_attentions=True)
    mine = ours.generate(**kwargs)
    theirs = reference.generate(**kwargs)
    assert isinstance(mine, GenerateDecoderOnlyOutput) and isinstance(mine.past_key_values, DynamicCache)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert mine.past_key_values.get_seq_length() == theirs.past_key_values.get_seq_length() == 10
    assert len(mine.hidden_states) == len(theirs.hidden_states) == 5
    for step in (0, 4):
        assert len(mine.hidden_states[step]) == len(theirs.hidden_states[step]) == 3
        assert mine.hidden_states[step][-1].shape == theirs.hidden_states[step][-1].shape
        assert len(mine.attentions[step]) == 2 and mine.attentions[step][0].shape[-1] == 6 + step
    assert mine.keys() == ["sequences", "scores", "logits", "attentions", "hidden_states", "past_key_values"]
    beams = ours.generate(ids, attention_mask=mask, max_new_tokens=5, num_beams=2, return_dict_in_generate=True)
    assert isinstance(beams, GenerateBeamDecoderOnlyOutput) and beams.sequences_scores is None
    assert beams.beam_indices.shape == (2, 5)


# -- caches ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_static_cache_and_no_cache_give_the_same_tokens(checkpoint, family):
    _, _, ours = checkpoint(family)
    ids, mask = left_padded(prompt(batch=2, seed=2), (0, 3))
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD)
    plain = ours.generate(**kwargs)
    assert torch.equal(ours.generate(**kwargs, cache_implementation="static"), plain)
    assert torch.equal(ours.generate(**kwargs, use_cache=False), plain)
    assert torch.equal(ours.generate(**kwargs, prefill_chunk_size=2), plain)
    beams = ours.generate(**kwargs, num_beams=3)
    assert torch.equal(ours.generate(**kwargs, num_beams=3, cache_implementation="static"), beams)


def test_a_static_cache_is_reused_across_calls(checkpoint):
    _, _, ours = checkpoint("llama")
    cache = StaticCache(config=ours.config, max_cache_len=40)
    for seed in (0, 1):
        ids = prompt(batch=2, seed=seed)
        expected = ours.generate(ids, max_new_tokens=12)
        cache.reset()
        out = ours.generate(ids, max_new_tokens=12, past_key_values=cache)
        assert torch.equal(out, expected)
        assert cache.get_seq_length() == 6 + 12 - 1  # the last token is never fed back


@pytest.mark.parametrize("cache_class", [DynamicCache, StaticCache])
def test_generation_continues_from_a_returned_cache(checkpoint, cache_class):
    _, reference, ours = checkpoint("llama")
    ids = prompt(seed=4)
    whole = ours.generate(ids, max_new_tokens=16)
    cache = cache_class() if cache_class is DynamicCache else cache_class(max_cache_len=64)
    first = ours.generate(ids, max_new_tokens=6, past_key_values=cache)
    # The cache holds the prompt and 5 of the 6 new tokens; only the rest is fed now.
    second = ours.generate(first, max_new_tokens=10, past_key_values=cache)
    assert torch.equal(second, whole)
    # Passing back a cache that holds the whole prompt recomputes the last position.
    again = ours.generate(whole[:, :12], max_new_tokens=4, past_key_values=cache)
    assert torch.equal(again, whole[:, :16])
    assert torch.equal(whole, reference.generate(ids, max_new_tokens=16))


def test_cache_errors(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt()
    with pytest.raises(GenerationError, match="not both"):
        ours.generate(ids, past_key_values=DynamicCache(), cache_implementation="static")
    with pytest.raises(GenerationError, match="StaticCache holds 8"):
        ours.generate(ids, max_new_tokens=10, past_key_values=StaticCache(max_cache_len=8))
    with pytest.raises(GenerationError, match="tuples"):
        ours.generate(ids, past_key_values=((torch.zeros(1), torch.zeros(1)),))
    cache = DynamicCache()
    ours.generate(prompt(batch=2), max_new_tokens=3, past_key_values=cache)
    with pytest.raises(GenerationError, match="holds 2 sequences"):
        ours.generate(prompt(batch=3, length=9), max_new_tokens=3, past_key_values=cache)
    with pytest.raises(UnsupportedArgumentError, match="offloaded"):
        ours.generate(ids, cache_implementation="offloaded")


# -- custom processors and criteria ----------------------------------------------------------------------
class BanToken(LogitsProcessor):
    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token] = -float("inf")
        return scores


class StopAtLength(StoppingCriteria):
    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length)


def test_user_processors_and_criteria_work_like_the_reference(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids = prompt(batch=2, seed=5)
    plain = ours.generate(ids, max_new_tokens=12)
    banned = int(plain[0, 7])
    kwargs = dict(input_ids=ids, max_new_tokens=12, logits_processor=LogitsProcessorList([BanToken(banned)]),
                  stopping_criteria=StoppingCriteriaList([StopAtLength(13)]), pad_token_id=PAD)
    mine = ours.generate(**kwargs)
    assert torch.equal(mine, reference.generate(**kwargs))
    assert mine.shape == (2, 13) and banned not in mine[:, 6:].tolist()[0]


def test_max_time_stops_a_long_generation(checkpoint):
    _, _, ours = checkpoint("llama")
    start = time.perf_counter()
    out = ours.generate(prompt(), max_new_tokens=100_000, max_time=0.05, cache_implementation=None)
    assert time.perf_counter() - start < 5 and 6 < out.shape[1] < 6 + 100_000


def test_stop_strings(checkpoint, byte_level_tokenizers):
    _, reference, ours = checkpoint("llama")
    tokenizer, reference_tokenizer = byte_level_tokenizers
    ids = prompt(batch=2, seed=6)
    text = [tokenizer.decode(row) for row in ours.generate(ids, max_new_tokens=20)[:, 6:]]
    stop = text[0][len(text[0]) // 3: len(text[0]) // 3 + 3]
    assert stop.strip()
    mine = ours.generate(ids, max_new_tokens=20, stop_strings=[stop], tokenizer=tokenizer, pad_token_id=PAD)
    theirs = reference.generate(ids, max_new_tokens=20, stop_strings=[stop], tokenizer=reference_tokenizer,
                                pad_token_id=PAD)
    assert torch.equal(mine, theirs)
    assert mine[0, -1] == PAD and stop in tokenizer.decode(mine[0, 6:])  # row 0 stopped early
    with pytest.raises(GenerationError, match="tokenizer"):
        ours.generate(ids, stop_strings="x")


# -- bad input --------------------------------------------------------------------------------------------
def test_empty_prompt(checkpoint):
    _, reference, ours = checkpoint("llama")
    assert torch.equal(ours.generate(max_new_tokens=5), reference.generate(max_new_tokens=5))
    assert ours.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=5)[0, 0] == BOS
    with pytest.raises(GenerationError, match="bos_token_id"):
        ours.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=5, bos_token_id=None)
    with pytest.raises(GenerationError, match="bos_token_id"):
        ours.generate(max_new_tokens=5, bos_token_id=None)


def test_lengths_beyond_the_model(checkpoint, caplog):
    _, reference, ours = checkpoint("llama")
    ids = prompt(length=120)
    # Rotary positions go on past max_position_embeddings (128): a warning, and the reference's tokens.
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        out = ours.generate(ids, max_new_tokens=20)
    assert "max_position_embeddings" in caplog.text
    assert torch.equal(out, reference.generate(ids, max_new_tokens=20))
    # GPT-2's learned position table ends at 64: refused before any work.
    _, _, gpt2 = checkpoint("gpt2")
    with pytest.raises(GenerationError, match="64 learned positions"):
        gpt2.generate(prompt(length=10), max_new_tokens=60)
    with pytest.raises(GenerationError, match="no room"):
        ours.generate(prompt(length=10), max_length=8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_return_sequences": 2}, ConfigError, "num_return_sequences"),
        ({"num_beams": 2, "num_return_sequences": 3}, ConfigError, "num_return_sequences"),
        ({"num_beams": 4, "num_beam_groups": 3}, ConfigError, "divisible"),
        ({"top_p": 1.5, "do_sample": True}, ConfigError, "top_p"),
        ({"encoder_repetition_penalty": -1.0}, ConfigError, "encoder_repetition_penalty"),
        ({"encoder_no_repeat_ngram_size": 1.5}, ConfigError, "encoder_no_repeat_ngram_size"),
        ({"suppress_tokens": [2], "forced_eos_token_id": 2}, ConfigError, "suppress_tokens"),
        ({"num_beams": 4, "num_beam_groups": 2}, UnsupportedArgumentError, "group"),
        ({"penalty_alpha": 0.6, "top_k": 4}, UnsupportedArgumentError, "contrastive"),
        ({"negative_prompt_ids": torch.ones(1, 2, dtype=torch.long)}, GenerationError, "guidance_scale"),
        ({"guidance_scale": 1.5, "prompt_lookup_num_tokens": 2}, UnsupportedArgumentError, "assisted"),
        ({"top_h": 1.5, "do_sample": True}, ConfigError, "top_h"),
        ({"max_new_tokenz": 5}, UnsupportedArgumentError, "max_new_tokenz"),
        ({"inputs_embeds": torch.zeros(1, 2, 32)}, UnsupportedArgumentError, "inputs_embeds"),
        ({"prompt_lookup_num_tokens": 3, "do_sample": True}, UnsupportedArgumentError, "greedy"),
        ({"num_beams": 2, "streamer": object()}, GenerationError, "beam"),
        ({"input_ids": torch.ones(1, 3, dtype=torch.long)}, GenerationError, "not both"),
        ({"attention_mask": torch.ones(1, 4)}, GenerationError, "attention_mask"),
    ],
)
def test_conflicting_or_unsupported_options_raise(checkpoint, kwargs, error, match):
    _, _, ours = checkpoint("llama")
    with pytest.raises(error, match=match):
        ours.generate(prompt(), max_new_tokens=3, **kwargs)


def test_malformed_prompts_raise(checkpoint):
    _, _, ours = checkpoint("llama")
    with pytest.raises(GenerationError, match="different lengths"):
        ours.generate([[5, 6, 7], [8, 9]], max_new_tokens=3)
    with pytest.raises(GenerationError, match=r"\(batch, length\)"):
        ours.generate(torch.tensor([5, 6, 7]), max_new_tokens=3)
    with pytest.raises(GenerationError, match="vocabulary"):
        ours.generate(torch.tensor([[5, VOCAB]]), max_new_tokens=3)
    with pytest.raises(GenerationError, match="empty"):
        ours.generate(torch.zeros(0, 4, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(GenerationError, match="all padding"):
        ours.generate(prompt(batch=2), attention_mask=torch.tensor([[1] * 6, [0] * 6]), max_new_tokens=3)


def test_padding_is_inferred_from_the_pad_token_as_the_reference_does(checkpoint, caplog):
    _, reference, ours = checkpoint("llama")
    ids, _ = left_padded(prompt(batch=2, seed=7), (3, 0))
    assert torch.equal(ours.generate(ids, max_new_tokens=8), reference.generate(ids, max_new_tokens=8))
    right_padded = torch.cat([ids[:, 3:], ids[:, :3]], dim=1)
    with caplog.at_level(logging.WARNING, logger="torchformers"):
        ours.generate(right_padded, attention_mask=(right_padded != PAD).long(), max_new_tokens=2)
    assert "right-padded" in caplog.text


def test_generation_mixin_is_public(checkpoint):
    assert isinstance(checkpoint("gpt2")[2], torchformers.GenerationMixin)
    assert transformers.__version__  # the reference is the test oracle here


def test_returned_tensors_are_ordinary_tensors(checkpoint):
    """Decode steps run in inference mode; what generate returns must still work everywhere."""
    _, _, ours = checkpoint("llama")
    ids = prompt(batch=2)
    for kwargs in ({}, {"num_beams": 2}, {"prompt_lookup_num_tokens": 2, "input_ids": ids[:1]}):
        kwargs = {"input_ids": ids, **kwargs}
        out = ours.generate(max_new_tokens=6, return_dict_in_generate=True, output_scores=True, **kwargs)
        assert not out.sequences.is_inference() and not any(s.is_inference() for s in out.scores)
        out.sequences[0, 0] = 5  # in place, outside inference mode
        out.scores[0].add_(1)
    # A returned cache keeps working in a plain forward pass, with autograd on.
    out = ours.generate(ids, max_new_tokens=4, return_dict_in_generate=True)
    logits = ours(input_ids=out.sequences[:, -1:], past_key_values=out.past_key_values).logits
    assert not logits.is_inference() and logits.requires_grad


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 5}, {"num_beams": 3, "num_return_sequences": 2}])
@pytest.mark.parametrize("normalize_logits", [False, True])
def test_compute_transition_scores_matches_reference(checkpoint, options, normalize_logits):
    _, reference, ours = checkpoint("llama")
    torch.manual_seed(0)
    out = ours.generate(prompt(batch=2, seed=8), max_new_tokens=7, return_dict_in_generate=True, output_scores=True,
                        eos_token_id=[EOS, 40], **options)
    mine = ours.compute_transition_scores(out.sequences, out.scores, out.get("beam_indices"), normalize_logits)
    theirs = reference.compute_transition_scores(out.sequences, out.scores, out.get("beam_indices"),
                                                 normalize_logits)
    assert mine.shape == theirs.shape and mine.shape[1] >= 1
    torch.testing.assert_close(mine, theirs)
