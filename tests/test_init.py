"""The package's lazily imported public names."""

from __future__ import annotations

import pytest

import torchformers


def test_every_public_name_resolves():
    for name in torchformers.__all__:
        assert getattr(torchformers, name) is not None, name
    assert "AutoModelForCausalLM" in dir(torchformers)
    assert torchformers.PreTrainedConfig is torchformers.PretrainedConfig
    assert torchformers.errors.ConfigError.__module__ == "torchformers.errors"
    assert torchformers.Qwen3ForCausalLM.__name__ == "Qwen3ForCausalLM"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NotAThing"):
        torchformers.NotAThing  # noqa: B018
    assert not hasattr(torchformers, "AutoTokenizerr")
