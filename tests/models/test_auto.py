"""The Auto classes: picking a family by model_type, and registering user classes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchformers
from torchformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from torchformers.errors import ConfigError, RemoteCodeError, UnknownModelTypeError
from torchformers.models import auto as auto_module

FAMILIES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_auto_classes_pick_the_family(tiny_llama_kwargs, model_type):
    config = AutoConfig.for_model(model_type, **tiny_llama_kwargs)
    prefix = FAMILIES[model_type]
    assert type(config).__name__ == f"{prefix}Config"
    for auto_class, suffix in [(AutoModel, "Model"), (AutoModelForCausalLM, "ForCausalLM"),
                               (AutoModelForSequenceClassification, "ForSequenceClassification")]:
        model = auto_class.from_config(config)
        assert type(model).__name__ == prefix + suffix
        assert type(model) is getattr(torchformers, prefix + suffix)
        assert type(model.config) is type(config)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_auto_from_pretrained_round_trip(tmp_path, tiny_llama_kwargs, model_type):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **tiny_llama_kwargs))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_auto_model_loads_the_base_of_a_causal_lm_checkpoint(tiny_llama_dir, tiny_llama):
    base = AutoModel.from_pretrained(tiny_llama_dir)
    assert type(base).__name__ == "LlamaModel"
    assert torch.equal(base.embed_tokens.weight, tiny_llama.model.embed_tokens.weight)


def test_a_base_checkpoint_loads_into_a_head_model(tmp_path, tiny_llama_dir):
    AutoModel.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert classifier.score.out_features == 4
    base = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(classifier.model.norm.weight, base.norm.weight)


def test_config_argument_as_a_path(tmp_path, tiny_llama_dir, tiny_llama_kwargs):
    AutoConfig.for_model("llama", **tiny_llama_kwargs, rms_norm_eps=1e-3).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, config=str(tmp_path))
    assert model.config.rms_norm_eps == 1e-3


def test_from_config_keywords(tiny_llama_kwargs):
    config = AutoConfig.for_model("qwen2", **tiny_llama_kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"


def test_auto_classes_are_not_instantiated():
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification):
        with pytest.raises(OSError, match="from_pretrained"):
            auto_class()


def test_trust_remote_code_in_from_config(tiny_llama_kwargs):
    with pytest.raises(RemoteCodeError):
        AutoModel.from_config(AutoConfig.for_model("llama", **tiny_llama_kwargs), trust_remote_code=True)


# -- registering user classes -------------------------------------------------------------------------


class TinyMlpConfig(PretrainedConfig):
    model_type = "tiny-mlp"
    defaults = {"width": 4, "vocab_size": 10}


class TinyMlpModel(PreTrainedModel):
    config_class = TinyMlpConfig
    base_model_prefix = "body"

    def __init__(self, config: TinyMlpConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(input_ids))


@pytest.fixture
def registered(monkeypatch):
    """TinyMlp registered with AutoConfig and AutoModel, undone after the test."""
    monkeypatch.setattr(auto_module, "_REGISTERED_CONFIGS", {})
    monkeypatch.setattr(AutoModel, "_registered", {})
    monkeypatch.setattr(AutoModelForCausalLM, "_registered", {})
    AutoConfig.register("tiny-mlp", TinyMlpConfig)
    AutoModel.register(TinyMlpConfig, TinyMlpModel)


def test_registered_user_classes_save_and_load(tmp_path, registered):
    torch.manual_seed(0)
    model = AutoModel.from_config(TinyMlpConfig(width=6))
    assert isinstance(model, TinyMlpModel)
    model.save_pretrained(tmp_path)

    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, TinyMlpModel)
    assert type(loaded.config) is TinyMlpConfig and loaded.config.width == 6
    assert torch.equal(loaded.proj.weight, model.proj.weight)
    assert "tiny-mlp" not in AutoModelForCausalLM._registered  # each Auto class has its own registry


def test_an_auto_class_without_the_registered_type_lists_what_it_supports(tmp_path, registered):
    TinyMlpConfig().save_pretrained(tmp_path)
    with pytest.raises(UnknownModelTypeError) as caught:
        AutoModelForCausalLM.from_pretrained(tmp_path)
    message = str(caught.value)
    assert "AutoModelForCausalLM" in message and "'tiny-mlp'" in message and "'llama'" in message


def test_register_refuses_inconsistent_classes(registered):
    class OtherConfig(PretrainedConfig):
        model_type = "other"

    with pytest.raises(ConfigError, match="config_class"):
        AutoModel.register(OtherConfig, TinyMlpModel)

    class NoConfigClassModel(PreTrainedModel):  # config_class left at the base PretrainedConfig
        pass

    with pytest.raises(ConfigError, match="config_class"):
        AutoModelForCausalLM.register(TinyMlpConfig, NoConfigClassModel)
    with pytest.raises(ConfigError, match="exist_ok"):
        AutoModel.register(TinyMlpConfig, TinyMlpModel)
    AutoModel.register(TinyMlpConfig, TinyMlpModel, exist_ok=True)
    llama_config = type(AutoConfig.for_model("llama"))
    with pytest.raises(ConfigError, match="already has a class for 'llama'"):
        AutoModel.register(llama_config, torchformers.LlamaModel)



ENCODER_AND_GPT2_CLASSES = {
    "bert": ("Bert", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                      "ForQuestionAnswering", "ForMultipleChoice"]),
    "roberta": ("Roberta", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                            "ForQuestionAnswering", "ForMultipleChoice"]),
    "xlm-roberta": ("XLMRoberta", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                                   "ForQuestionAnswering", "ForMultipleChoice"]),
    "distilbert": ("DistilBert", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                                  "ForQuestionAnswering", "ForMultipleChoice"]),
    "gpt2": ("GPT2", ["Model", "LMHeadModel", "ForSequenceClassification", "ForTokenClassification",
                      "ForQuestionAnswering"]),
}
TASK_AUTO_CLASSES = {
    "Model": "AutoModel", "LMHeadModel": "AutoModelForCausalLM", "ForMaskedLM": "AutoModelForMaskedLM",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering", "ForMultipleChoice": "AutoModelForMultipleChoice",
}


@pytest.mark.parametrize("model_type", sorted(ENCODER_AND_GPT2_CLASSES))
def test_auto_classes_pick_the_encoder_and_gpt2_families(model_type):
    prefix, suffixes = ENCODER_AND_GPT2_CLASSES[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2)
    assert type(config).__name__ == f"{prefix}Config"
    for suffix in suffixes:
        auto_class = getattr(torchformers, TASK_AUTO_CLASSES[suffix])
        model = auto_class.from_config(config)
        assert type(model) is getattr(torchformers, prefix + suffix)
    for task_auto in set(TASK_AUTO_CLASSES.values()) - {TASK_AUTO_CLASSES[s] for s in suffixes}:
        with pytest.raises(UnknownModelTypeError, match=model_type):
            getattr(torchformers, task_auto).from_config(config)
        with pytest.raises(OSError, match="from_pretrained"):
            getattr(torchformers, task_auto)()
