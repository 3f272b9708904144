"""Decoding loops against the reference library: the same tokens for deterministic strategies,
the same scores (and draws) for sampling, on seeded Llama and GPT-2 checkpoints."""

from __future__ import annotations

import pytest
import torch
from _checkpoints import EOS, PAD, left_padded, prompt

import torchformers.nn.linear as linear_module
from torchformers.generation import search

FAMILIES = ["llama", "gpt2"]


def generate_both(checkpoint, family: str, **kwargs):
    _, reference, ours = checkpoint(family)
    seed = kwargs.pop("seed", None)
    if seed is not None:
        torch.manual_seed(seed)
    theirs = reference.generate(**kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    mine = ours.generate(**kwargs)
    return mine, theirs


def assert_same_tokens(ours, theirs) -> None:
    ours_seq = ours if isinstance(ours, torch.Tensor) else ours.sequences
    theirs_seq = theirs if isinstance(theirs, torch.Tensor) else theirs.sequences
    assert ours_seq.shape == theirs_seq.shape, (ours_seq, theirs_seq)
    assert torch.equal(ours_seq, theirs_seq), (ours_seq, theirs_seq)


def assert_same_scores(ours, theirs, name: str = "scores", atol: float = 5e-4) -> None:
    """Scores agree to float32 rounding of logits around +-20 (the checkpoints are scaled up)."""
    mine, reference = getattr(ours, name), getattr(theirs, name)
    assert mine is not None and len(mine) == len(reference) > 0
    for step, (a, b) in enumerate(zip(mine, reference, strict=True)):
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite), f"step {step}: different tokens filtered out"
        torch.testing.assert_close(a[finite], b[finite], atol=atol, rtol=1e-5,
                                   msg=lambda m, step=step: f"step {step}: {m}")


# -- greedy --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_reference(checkpoint, family):
    ours, theirs = generate_both(checkpoint, family, input_ids=prompt(), max_new_tokens=20, do_sample=False)
    assert_same_tokens(ours, theirs)
    assert len(set(ours[0, 6:].tolist())) > 3  # a real continuation, not one repeated token


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_matches_reference(checkpoint, family):
    ids, mask = left_padded(prompt(batch=3, length=7, seed=1), (0, 3, 5))
    ours, theirs = generate_both(checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                 do_sample=False, pad_token_id=PAD)
    assert_same_tokens(ours, theirs)
    # Padding is honoured: a padded row continues as its unpadded prompt does alone.
    alone, _ = generate_both(checkpoint, family, input_ids=ids[1:2, 3:], max_new_tokens=12, do_sample=False)
    assert torch.equal(ours[1, 7:], alone[0, 4:])


def _record_packing(monkeypatch) -> list[int]:
    """The row counts weights get packed for, from now on."""
    packed: list[int] = []
    of = linear_module.PackedWeight.of
    monkeypatch.setattr(linear_module.PackedWeight, "of", lambda matrix, rows: packed.append(rows) or of(matrix, rows))
    return packed


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_weights_give_the_reference_tokens(checkpoint, family, num_beams, monkeypatch, packing_route):
    # Long batch generations decode with packed weights (PACK_WHEN_STEPS_LEFT); here 12 new tokens are long.
    monkeypatch.setattr(search, "PACK_WHEN_STEPS_LEFT", 10)
    packed = _record_packing(monkeypatch)
    ids, mask = left_padded(prompt(batch=3, length=7, seed=1), (0, 3, 5))
    ours, theirs = generate_both(checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                 do_sample=False, pad_token_id=PAD, num_beams=num_beams)
    assert_same_tokens(ours, theirs)
    assert packed and set(packed) == {3 * num_beams}
    _, _, model = checkpoint(family)
    assert not any("_packing" in module.__dict__ for module in model.modules())


def test_short_generations_keep_the_plain_weights(checkpoint, monkeypatch, packing_route):
    monkeypatch.setattr(search, "PACK_WHEN_STEPS_LEFT", 10)
    packed = _record_packing(monkeypatch)
    _, _, model = checkpoint("llama")
    model.generate(prompt(batch=3, seed=2), max_new_tokens=10, do_sample=False)  # 9 decode steps
    assert packed == []
    model.generate(prompt(batch=3, seed=2), max_new_tokens=11, do_sample=False)
    assert set(packed) == {3}


def test_finished_rows_are_padded_like_the_reference(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt(batch=2, seed=3)
    plain = ours.generate(ids, max_new_tokens=10, do_sample=False)
    # End sequences at a token row 0 produces early: it stops there and is padded afterwards.
    eos = int(plain[0, 8])
    for pad in (None, 5):  # without a pad token, finished rows repeat the first eos id
        mine, theirs = generate_both(checkpoint, "llama", input_ids=ids, max_new_tokens=10, do_sample=False,
                                     eos_token_id=[eos, EOS], pad_token_id=pad)
        assert_same_tokens(mine, theirs)
        assert (mine[0, 9:] == (pad if pad is not None else eos)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_min_new_tokens_with_several_eos_ids(checkpoint, family):
    _, _, ours = checkpoint(family)
    ids = prompt(batch=2, seed=4)
    plain = ours.generate(ids, max_new_tokens=12, do_sample=False)
    eos_ids = [int(plain[0, 7]), int(plain[1, 6]), EOS]  # tokens that would end both rows early
    for min_new in (0, 5):
        mine, theirs = generate_both(checkpoint, family, input_ids=ids, max_new_tokens=12, min_new_tokens=min_new,
                                     eos_token_id=eos_ids, pad_token_id=PAD, do_sample=False,
                                     return_dict_in_generate=True, output_scores=True)
        assert_same_tokens(mine, theirs)
        assert_same_scores(mine, theirs)
        generated = mine.sequences[:, 6:].tolist()
        first_eos = [next((i for i, t in enumerate(row) if t in eos_ids), len(row)) for row in generated]
        assert min(first_eos) >= min_new and (min_new > 0 or max(first_eos) < 2)


@pytest.mark.parametrize(
    "options",
    [
        {"repetition_penalty": 1.5},
        {"no_repeat_ngram_size": 2},
        {"bad_words_ids": [[20], [30, 40]], "sequence_bias": {(50,): -2.0, (60, 70): 3.0}},
        {"suppress_tokens": [10, 11, 12], "begin_suppress_tokens": [13, 14]},
        {"forced_eos_token_id": 7, "exponential_decay_length_penalty": (3, 1.5)},
        {"remove_invalid_values": True, "renormalize_logits": True},
        {"encoder_repetition_penalty": 1.5},
        {"encoder_repetition_penalty": 0.7, "encoder_no_repeat_ngram_size": 2},
    ],
    ids=["repetition", "ngram", "bad-words-bias", "suppress", "forced-eos-decay", "renormalize", "encoder-penalty",
         "encoder-ngram"],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_processing_matches_reference(checkpoint, family, options):
    ids, mask = left_padded(prompt(batch=2, seed=5), (2, 0))
    mine, theirs = generate_both(checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=14,
                                 do_sample=False, pad_token_id=PAD, return_dict_in_generate=True,
                                 output_scores=True, output_logits=True, **options)
    assert_same_tokens(mine, theirs)
    assert_same_scores(mine, theirs)
    assert_same_scores(mine, theirs, "logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_based_controls_with_beams_match_reference(checkpoint, family):
    # Each beam (and each returned sequence) looks at its own prompt's tokens and n-grams.
    ids, mask = left_padded(prompt(batch=2, seed=8), (1, 0))
    mine, theirs = generate_both(checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=10,
                                 num_beams=3, num_return_sequences=2, do_sample=False, pad_token_id=PAD,
                                 encoder_repetition_penalty=2.0, encoder_no_repeat_ngram_size=1,
                                 return_dict_in_generate=True, output_scores=True)
    assert_same_tokens(mine, theirs)
    assert_same_scores(mine, theirs)
    torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-5)


def test_prompt_based_controls_take_effect(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt(seed=6)
    prompt_tokens = set(ids[0].tolist())
    blocked = ours.generate(ids, max_new_tokens=30, encoder_no_repeat_ngram_size=1)[0, 6:].tolist()
    assert not set(blocked) & prompt_tokens
    plain = ours.generate(ids, max_new_tokens=30)[0, 6:].tolist()
    favoured = ours.generate(ids, max_new_tokens=30, encoder_repetition_penalty=3.0)[0, 6:].tolist()
    assert sum(t in prompt_tokens for t in favoured) > sum(t in prompt_tokens for t in plain)


def test_min_new_tokens_above_max_new_tokens_runs_as_the_reference(checkpoint):
    # The reference runs this conflict (eos stays suppressed to the end); here it also warns.
    with pytest.warns(UserWarning, match="min_new_tokens"):
        mine, theirs = generate_both(checkpoint, "llama", input_ids=prompt(batch=2, seed=9), max_new_tokens=4,
                                     min_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD, do_sample=False)
    assert_same_tokens(mine, theirs)
    assert mine.shape[1] == 6 + 4 and not (mine[:, 6:] == EOS).any()


def test_repetition_controls_take_effect(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt(seed=6)
    ngram = ours.generate(ids, max_new_tokens=40, no_repeat_ngram_size=2)[0].tolist()
    bigrams = list(zip(ngram, ngram[1:], strict=False))
    assert len(bigrams) == len(set(bigrams))
    banned = ours.generate(ids, max_new_tokens=20)[0, 6:9].tolist()
    out = ours.generate(ids, max_new_tokens=20, bad_words_ids=[[t] for t in banned])[0, 6:].tolist()
    assert not set(out) & set(banned)


# -- beam search -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("num_beams", "num_return_sequences", "length_penalty", "early_stopping"),
    [(3, 1, 1.0, False), (4, 2, 0.5, True), (3, 3, 2.0, "never"), (2, 2, -1.0, False), (4, 1, 0.0, "never")],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_matches_reference(checkpoint, family, num_beams, num_return_sequences, length_penalty,
                                       early_stopping):
    _, _, ours = checkpoint(family)
    ids, mask = left_padded(prompt(batch=2, seed=7), (0, 2))
    plain = ours.generate(ids, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD)
    eos_ids = [int(plain[0, 9]), int(plain[1, 8])]  # so that beams end at different lengths
    mine, theirs = generate_both(
        checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=num_beams,
        num_return_sequences=num_return_sequences, length_penalty=length_penalty, early_stopping=early_stopping,
        eos_token_id=eos_ids, pad_token_id=PAD, do_sample=False, return_dict_in_generate=True, output_scores=True,
        output_logits=True,
    )
    assert_same_tokens(mine, theirs)
    torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-5)
    assert torch.equal(mine.beam_indices, theirs.beam_indices)
    assert_same_scores(mine, theirs)
    assert mine.sequences.shape[0] == 2 * num_return_sequences


def test_beam_search_without_eos_runs_to_max_length(checkpoint):
    mine, theirs = generate_both(checkpoint, "llama", input_ids=prompt(batch=2), max_new_tokens=8, num_beams=3,
                                 eos_token_id=None, do_sample=False)
    assert_same_tokens(mine, theirs)
    assert mine.shape == (2, 14)


# -- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.7, "top_k": 10},
        {"top_p": 0.8, "top_k": 0},
        {"min_p": 0.1, "temperature": 1.5},
        {"typical_p": 0.7},
        {"epsilon_cutoff": 0.02, "eta_cutoff": 0.05},
        {"top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2, "num_return_sequences": 2},
        {"top_h": 0.5},
        {"top_h": 0.9, "temperature": 0.7, "top_k": 30},
    ],
    ids=["plain", "temperature-top-k", "top-p", "min-p", "typical", "epsilon-eta", "mixed", "top-h", "top-h-mixed"],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_scores_and_draws_match_reference(checkpoint, family, options):
    ids, mask = left_padded(prompt(batch=2, seed=8), (0, 1))
    mine, theirs = generate_both(checkpoint, family, input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                 do_sample=True, pad_token_id=PAD, return_dict_in_generate=True,
                                 output_scores=True, seed=1234, **options)
    # The reference draws with torch.multinomial on the softmax of the processed scores; so do we.
    assert_same_tokens(mine, theirs)
    assert_same_scores(mine, theirs)


def test_top_h_keeps_the_likely_tokens_within_its_entropy_share(checkpoint):
    from torchformers import TopHLogitsWarper

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [0.0] * 4]))
    kept = torch.isfinite(TopHLogitsWarper(0.6)(None, scores))
    # Entropy 1.14 nats; the running shares -p log p are 0.35, 0.71, 0.99, 1.14: 0.6 * 1.14 = 0.69 keeps one.
    assert kept[0].tolist() == [True] + [False] * 7
    assert torch.isfinite(TopHLogitsWarper(1.0)(None, scores))[0, :4].all()


# -- classifier-free guidance -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"guidance_scale": 1.5},
        {"guidance_scale": 2.0, "negative_prompt_ids": prompt(batch=2, length=4, seed=4)},
        {"guidance_scale": 1.5, "num_beams": 3},
        {"guidance_scale": 1.5, "use_cache": False},
        {"guidance_scale": 3.0, "do_sample": True, "top_h": 0.4, "seed": 5},
    ],
    ids=["last-token", "negative-prompt", "beams", "no-cache", "sampling"],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_classifier_free_guidance_matches_reference(checkpoint, family, options):
    mine, theirs = generate_both(checkpoint, family, input_ids=prompt(batch=2, seed=3), max_new_tokens=8,
                                 pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, **options)
    assert_same_tokens(mine, theirs)
    assert_same_scores(mine, theirs)


def test_classifier_free_guidance_changes_the_choice(checkpoint):
    _, _, ours = checkpoint("llama")
    ids = prompt(batch=2, seed=3)
    plain = ours.generate(ids, max_new_tokens=8, do_sample=False)
    guided = ours.generate(ids, max_new_tokens=8, do_sample=False, guidance_scale=4.0)
    assert not torch.equal(plain, guided)


def test_seeded_sampling_is_reproducible_and_varies_with_the_seed(checkpoint):
    _, _, ours = checkpoint("llama")
    from torchformers import set_seed

    draws = []
    for seed in (0, 0, 1):
        set_seed(seed)
        draws.append(ours.generate(prompt(), max_new_tokens=15, do_sample=True, temperature=2.0))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_sampling_matches_reference(checkpoint, family):
    mine, theirs = generate_both(checkpoint, family, input_ids=prompt(batch=2, seed=9), max_new_tokens=8,
                                 num_beams=3, do_sample=True, top_k=10, seed=7, return_dict_in_generate=True,
                                 output_scores=True)
    assert_same_tokens(mine, theirs)
    torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-5)


# -- assisted decoding -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "drafter"),
    [("llama", "prompt-lookup"), ("gpt2", "prompt-lookup"), ("llama", "assistant-same"), ("gpt2", "assistant-same"),
     ("llama", "assistant-other")],
)
def test_assisted_decoding_gives_plain_greedy_tokens(checkpoint, family, drafter):
    _, _, ours = checkpoint(family)
    # A repetitive prompt gives prompt lookup something to find.
    ids = torch.cat([prompt(length=5, seed=10)] * 3, dim=1)
    if drafter == "prompt-lookup":
        options = {"prompt_lookup_num_tokens": 4}
    elif drafter == "assistant-same":
        options = {"assistant_model": ours}  # every draft is right
    else:
        options = {"assistant_model": checkpoint("llama-assistant")[2]}  # most drafts are wrong
    for extra in ({}, {"repetition_penalty": 1.3, "eos_token_id": [EOS, 9]}):
        plain = ours.generate(ids, max_new_tokens=24, do_sample=False, **extra)
        assisted = ours.generate(ids, max_new_tokens=24, do_sample=False, **options, **extra)
        assert torch.equal(assisted, plain), (assisted, plain)


def test_assisted_decoding_matches_reference_scores(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids = torch.cat([prompt(length=4, seed=11)] * 3, dim=1)
    mine = ours.generate(ids, max_new_tokens=12, prompt_lookup_num_tokens=3, return_dict_in_generate=True,
                         output_scores=True)
    theirs = reference.generate(ids, max_new_tokens=12, prompt_lookup_num_tokens=3, do_sample=False,
                                return_dict_in_generate=True, output_scores=True)
    assert_same_tokens(mine, theirs)
    assert_same_scores(mine, theirs)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_prefix_allowed_tokens_fn_matches_reference(checkpoint, num_beams):
    def allowed(batch_id, sent):
        return list(range(10 + 5 * batch_id + int(sent[-1]) % 7, 60))

    ids = prompt(batch=2, seed=12)
    mine, theirs = generate_both(checkpoint, "llama", input_ids=ids, max_new_tokens=8, num_beams=num_beams,
                                 prefix_allowed_tokens_fn=allowed, do_sample=False)
    assert_same_tokens(mine, theirs)
    assert mine[:, 6:].max() < 60


def test_beam_search_without_a_cache(checkpoint):
    _, _, ours = checkpoint("gpt2")
    ids, mask = left_padded(prompt(batch=2, seed=13), (0, 2))
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, num_beams=3, num_return_sequences=2,
                  pad_token_id=PAD)
    assert torch.equal(ours.generate(**kwargs, use_cache=False), ours.generate(**kwargs))
