"""Quantizing whole models: ``quantization_config`` on ``from_pretrained``, ``quantize()``, quantized
checkpoints that reload exactly, and the refusals (mismatched configs, other quantizers' formats)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import torchformers
from torchformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from torchformers.errors import ConfigError, UnsupportedArgumentError, WeightsMismatchError
from torchformers.quantization import Int4Linear, Int8Linear, WeightOnlyConfig, quantize
from torchformers.quantization.quantizer import quantized_layers

TINY = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}
IDS = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("float")
    LlamaForCausalLM.from_config(LlamaConfig(**TINY)).save_pretrained(directory)
    return directory


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def relative_error(output, expected):
    return ((output - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize(
    ("quantization_config", "layer_class", "bound"),
    [(WeightOnlyConfig(bits=8), Int8Linear, 0.015), ({"bits": 4, "group_size": 32}, Int4Linear, 0.12),
     ({"bits": 4}, Int4Linear, 0.15)],
)
def test_quantized_loading_saving_and_reloading(float_dir, tmp_path, quantization_config, layer_class, bound):
    expected = logits(AutoModelForCausalLM.from_pretrained(float_dir))
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=quantization_config)
    layers = quantized_layers(model)
    assert len(layers) == 2 * 7 and all(isinstance(layer, layer_class) for layer in layers.values())
    assert type(model.lm_head) is torchformers.models.llama.Linear  # the output layer stays in floating point
    output = logits(model)
    assert relative_error(output, expected) < bound

    model.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert stored["quant_method"] == "torchformers" and stored["modules_to_not_convert"] == ["lm_head"]
    assert stored["group_size"] == (None if layer_class is Int8Linear else quantization_config.get("group_size", 64))
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == ("I8" if layer_class is Int8Linear else "U8")
    assert dtypes["model.layers.0.self_attn.q_proj.weight_scale"] == "BF16"

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(logits(reloaded), output)
    assert torch.equal(reloaded.generate(IDS[:1], max_new_tokens=6, do_sample=False),
                       model.generate(IDS[:1], max_new_tokens=6, do_sample=False))
    same = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quantization_config)
    assert torch.equal(logits(same), output)


def test_a_quantized_tied_output_layer_is_untied_and_reloads(float_dir, tmp_path):
    model = LlamaForCausalLM.from_pretrained(float_dir)
    quantize(model, WeightOnlyConfig(bits=8, modules_to_not_convert=[]))
    assert isinstance(model.lm_head, Int8Linear) and model.config.tie_word_embeddings is False
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert isinstance(reloaded.lm_head, Int8Linear)
    assert torch.equal(logits(reloaded), logits(model))


def test_gpt2_conv1d_and_bert_layers_quantize():
    torch.manual_seed(0)
    gpt2 = torchformers.GPT2LMHeadModel.from_config(torchformers.GPT2Config(
        vocab_size=96, n_embd=64, n_layer=2, n_head=4, n_positions=32)).eval()
    expected = logits(gpt2)
    quantize(gpt2, {"bits": 8})
    assert isinstance(gpt2.transformer.h[0].attn.c_attn, Int8Linear)
    assert relative_error(logits(gpt2), expected) < 0.02
    bert = torchformers.BertForSequenceClassification.from_config(torchformers.BertConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)).eval()
    expected = logits(bert)
    quantize(bert, {"bits": 4, "group_size": 32})
    assert isinstance(bert.bert.encoder.layer[0].attention.self.query, Int4Linear)
    assert not isinstance(bert.classifier, Int4Linear)  # the task head stays in floating point
    assert relative_error(logits(bert), expected) < 0.2


def test_a_quantized_checkpoint_refuses_another_quantization(float_dir, tmp_path):
    AutoModelForCausalLM.from_pretrained(float_dir, quantization_config={"bits": 4, "group_size": 32}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="already quantized.*'bits': 4.*asks for.*'bits': 8"):
        AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config={"bits": 8})
    with pytest.raises(ConfigError, match="already quantized"):
        AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config={"bits": 4, "group_size": 64})


def test_a_checkpoint_whose_tensors_do_not_fit_its_quantization_config_is_refused(float_dir, tmp_path):
    for name in ("model.safetensors", "generation_config.json"):
        (tmp_path / name).write_bytes((float_dir / name).read_bytes())
    config = json.loads((float_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "torchformers", "bits": 8, "group_size": None,
                                     "modules_to_not_convert": ["lm_head"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match="model.safetensors lacks weights.*q_proj.weight_scale"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    config["quantization_config"]["bits"] = 4
    config["quantization_config"]["group_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match="model.safetensors.*shape"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"quantization_config": {"bits": 4, "group_size": 128}}, ConfigError,
         "q_proj has 64 input features, which group_size=128 does not divide.*\\[64, 32\\]"),
        ({"quantization_config": {"bits": 3}}, ConfigError, "bits must be 8 or 4"),
        ({"quantization_config": {"bits": 4, "group_size": 48}}, ConfigError, "int4 group_size must be one of"),
        ({"quantization_config": {"bits": 8, "symmetric": False}}, ConfigError, "symmetric"),
        ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, UnsupportedArgumentError,
         "quant_method='bitsandbytes'.*WeightOnlyConfig"),
        ({"quantization_config": "int8"}, UnsupportedArgumentError, "WeightOnlyConfig or a dict"),
        ({"load_in_8bit": True}, UnsupportedArgumentError, "load_in_8bit.*WeightOnlyConfig\\(bits=8\\)"),
    ],
)
def test_bad_quantization_options_are_refused(float_dir, options, error, message):
    with pytest.raises(error, match=message):
        AutoModelForCausalLM.from_pretrained(float_dir, **options)


def test_quantize_refuses_a_model_with_adapters(float_dir):
    from torchformers.peft import LoraConfig, get_peft_model

    model = get_peft_model(LlamaForCausalLM.from_pretrained(float_dir), LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(UnsupportedArgumentError, match="quantize the base model first"):
        quantize(model, {"bits": 8})


def test_float_codes_are_refused_by_a_quantized_layer():
    layer = Int8Linear(64, 8)
    state = layer.state_dict()
    state["weight"] = state["weight"].float()
    with pytest.raises(WeightsMismatchError, match="'weight' holds torch.float32.*not saved with this quantization"):
        layer.load_state_dict(state)
