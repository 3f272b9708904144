"""Fixtures of the training tests: tiny models (built in milliseconds) and quiet TrainingArguments."""

from __future__ import annotations

import pytest
import torch
from training_cases import TINY_BERT, TINY_LLAMA


@pytest.fixture
def tiny_bert():
    """A seeded tiny BertForSequenceClassification; ``tiny_bert(**overrides)`` changes the config."""
    from torchformers import BertConfig, BertForSequenceClassification

    def build(**overrides):
        torch.manual_seed(0)
        return BertForSequenceClassification.from_config(BertConfig(**{**TINY_BERT, **overrides}))

    return build


@pytest.fixture
def tiny_lm():
    """A seeded tiny LlamaForCausalLM."""
    from torchformers import LlamaConfig, LlamaForCausalLM

    def build():
        torch.manual_seed(0)
        return LlamaForCausalLM.from_config(LlamaConfig(**TINY_LLAMA))

    return build


@pytest.fixture
def training_args(tmp_path):
    """TrainingArguments for quiet tests writing under tmp_path; keywords override."""
    from torchformers import TrainingArguments

    def build(**overrides):
        options = dict(output_dir=str(tmp_path / "out"), disable_tqdm=True, report_to="none", save_strategy="no",
                       logging_steps=1000)
        return TrainingArguments(**{**options, **overrides})

    return build
