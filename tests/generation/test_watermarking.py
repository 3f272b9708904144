"""Green-list watermarking against the reference library: the same watermarked tokens, and the
detectors agree on which sequences carry the mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from _checkpoints import PAD, prompt

import torchformers
from torchformers.errors import ConfigError, UnsupportedArgumentError

SETTINGS = [
    {"bias": 8.0},
    {"bias": 8.0, "seeding_scheme": "selfhash"},
    {"bias": 8.0, "context_width": 2, "greenlist_ratio": 0.4},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["lefthash", "selfhash", "wider-context"])
def test_watermarked_tokens_and_detection_match_reference(checkpoint, settings):
    _, reference, ours = checkpoint("llama")
    ids = prompt(batch=2, seed=3)
    options = dict(max_new_tokens=20, do_sample=False, pad_token_id=PAD)
    theirs = reference.generate(ids, watermarking_config=transformers.WatermarkingConfig(**settings), **options)
    mine = ours.generate(ids, watermarking_config=torchformers.WatermarkingConfig(**settings), **options)
    plain = ours.generate(ids, **options)
    assert (mine == theirs).all() and not (mine == plain).all()

    their_detector = transformers.WatermarkDetector(reference.config, "cpu", transformers.WatermarkingConfig(**settings))
    our_detector = torchformers.WatermarkDetector(ours.config, "cpu", settings)  # a dict works too
    for tokens in (mine[:, ids.shape[1]:], plain[:, ids.shape[1] + 1:]):
        expected, got = their_detector(tokens, return_dict=True), our_detector(tokens, return_dict=True)
        for field in ("num_tokens_scored", "num_green_tokens", "z_score", "p_value", "prediction"):
            np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-12)
    assert our_detector(mine[:, ids.shape[1]:]).all()  # bias 8 leaves no doubt
    assert not our_detector(plain[:, ids.shape[1] + 1:]).any()


def test_watermarking_config_is_saved_as_a_dict_and_checked(tmp_path):
    config = torchformers.GenerationConfig(watermarking_config={"bias": 3.0})
    config.save_pretrained(tmp_path)
    loaded = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert loaded.watermarking_config.bias == 3.0 and loaded.watermarking_config.seeding_scheme == "lefthash"
    assert torchformers.GenerationConfig.from_pretrained(tmp_path).watermarking_config.bias == 3.0
    with pytest.raises(ConfigError, match="seeding_scheme"):
        torchformers.WatermarkingConfig(seeding_scheme="minhash")
    with pytest.raises(UnsupportedArgumentError, match="that WatermarkingConfig does not have"):
        torchformers.GenerationConfig(watermarking_config={"bias": 3.0, "salt": 1}).validate()


# -- SynthID Text ------------------------------------------------------------------------------
SYNTHID = {"ngram_len": 3, "keys": [654, 400, 836, 123, 340, 443], "context_history_size": 4,
           "sampling_table_size": 2**10}


@pytest.mark.parametrize("options", [{}, {"skip_first_ngram_calls": True}, {"debug_mode": True}],
                         ids=["plain", "skip-first", "debug"])
def test_synthid_processor_matches_reference_bit_for_bit(options):
    settings = {**SYNTHID, **options}
    theirs = transformers.SynthIDTextWatermarkingConfig(**settings).construct_processor(100, "cpu")
    ours = torchformers.SynthIDTextWatermarkingConfig(**settings).construct_processor(100, "cpu")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (3, 4), generator=generator)  # few token values: contexts repeat
    for _ in range(9):
        scores = torch.randn(3, 100, generator=generator) * 3
        assert torch.equal(ours(ids, scores.clone()), theirs(ids, scores.clone()))
        ids = torch.cat([ids, torch.randint(0, 6, (3, 1), generator=generator)], dim=1)
    assert torch.equal(ours.compute_g_values(ids), theirs.compute_g_values(ids))
    assert torch.equal(ours.compute_context_repetition_mask(ids), theirs.compute_context_repetition_mask(ids))
    assert torch.equal(ours.compute_eos_token_mask(ids, 2), theirs.compute_eos_token_mask(ids, 2))
    assert ours.expected_mean_g_value(100) == theirs.expected_mean_g_value(100)


def test_synthid_sampling_matches_reference_and_carries_the_mark(checkpoint):
    _, reference, ours = checkpoint("llama")
    ids = prompt(batch=2, seed=4)
    options = dict(max_new_tokens=40, do_sample=True, top_k=0, temperature=4.0, pad_token_id=PAD)  # flat: room to mark
    torch.manual_seed(11)
    theirs = reference.generate(ids, watermarking_config=transformers.SynthIDTextWatermarkingConfig(**SYNTHID),
                                **options)
    torch.manual_seed(11)
    mine = ours.generate(ids, watermarking_config=torchformers.SynthIDTextWatermarkingConfig(**SYNTHID), **options)
    assert torch.equal(mine, theirs)
    # Watermarked text's g-values (where the context was new) average above the unwatermarked 0.5.
    processor = torchformers.SynthIDTextWatermarkingConfig(**SYNTHID).construct_processor(128, "cpu")
    generated = mine[:, ids.shape[1] - 2:]
    g = processor.compute_g_values(generated).float()
    counted = processor.compute_context_repetition_mask(generated)[..., None].expand_as(g)
    assert g[counted].mean() > 0.6


def test_synthid_config_is_chosen_saved_and_checked(tmp_path):
    config = torchformers.GenerationConfig(watermarking_config=dict(SYNTHID))
    assert isinstance(config.watermarking_config, torchformers.SynthIDTextWatermarkingConfig)
    config.save_pretrained(tmp_path)
    loaded = torchformers.GenerationConfig.from_pretrained(tmp_path).watermarking_config
    assert loaded == torchformers.SynthIDTextWatermarkingConfig(**SYNTHID)
    assert torchformers.WatermarkingConfig.from_value(transformers.SynthIDTextWatermarkingConfig(**SYNTHID)) == loaded
    with pytest.raises(ConfigError, match="sampling_table_size must be at most 2\\*\\*24"):
        torchformers.SynthIDTextWatermarkingConfig(ngram_len=3, keys=[1], sampling_table_size=2**25)
    with pytest.raises(ConfigError, match="keys must be a non-empty list"):
        torchformers.SynthIDTextWatermarkingConfig(ngram_len=3, keys=[])
