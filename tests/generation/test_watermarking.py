"""Green-list watermarking against the reference library: the same watermarked tokens, and the
detectors agree on which sequences carry the mark."""

from __future__ import annotations

import numpy as np
import pytest
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
    with pytest.raises(UnsupportedArgumentError, match="SynthID"):
        torchformers.GenerationConfig(watermarking_config={"ngram_len": 5, "keys": [1, 2]}).validate()
