"""GGUF files loaded with ``dequantize=False``: Q8_0, Q4_0 and Q4_1 matrices become int8 and int4
layers holding the file's codes, checked against the same file loaded dequantized (whose weights
equal the `gguf` package's dequantization, see test_gguf_dequant.py), on tiny files written here
and on the real SmolLM2-135M-Instruct Q4_1 file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from gguf_writers import gguf_name, write_model_gguf

import torchformers
from torchformers.errors import UnsupportedArgumentError
from torchformers.packaged import packaged_model_dir
from torchformers.quantization import Int4Linear, Int8Linear, QuantizedEmbedding
from torchformers.quantization.quantizer import quantized_layers

TINY = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
        "rope_theta": 5000.0}
IDS = torch.randint(0, TINY["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(0))
BITS = {Q.Q8_0: 8, Q.Q4_0: 4, Q.Q4_1: 4}
LAYER_CLASSES = {8: Int8Linear, 4: Int4Linear}


def reference_model(tie: bool, seed: int = 0):
    config = transformers.LlamaConfig(**TINY, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if "norm" in name else 0.0))
    return model


def load_both(path):
    """The file loaded dequantized (float32) and kept quantized."""
    dequantized = torchformers.AutoModelForCausalLM.from_pretrained(path)
    return dequantized, torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False)


def weight_of(model, name):
    return model.get_submodule(name).weight.detach()


def blocks_with_bfloat16_scales(qtype: Q, rows: int, columns: int, seed: int) -> np.ndarray:
    """Random blocks whose scales (and Q4_1 zero points ``m + 8 d``) bfloat16 holds exactly."""
    rng = np.random.default_rng(seed)
    count = rows * columns // 32
    step = 2.0 ** -7
    d = ((1 + rng.integers(0, 8, count) / 8) * step).astype(np.float16)
    halves = [d]
    if qtype == Q.Q4_1:
        # m = z - 8 d with z a small multiple of the step: m, d and z all exact in half and bfloat16.
        halves.append((rng.integers(-16, 17, count) * step - 8 * d.astype(np.float32)).astype(np.float16))
    code_bytes = 32 if qtype == Q.Q8_0 else 16
    codes = rng.integers(0, 256, (count, code_bytes), dtype=np.uint8)
    parts = [half.view(np.uint8).reshape(count, 2) for half in halves] + [codes]
    return np.concatenate(parts, axis=1).reshape(rows, -1)


# -- tiny files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", list(BITS), ids=lambda q: q.name)
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_blocks_load_as_quantized_layers_close_to_the_dequantized_model(tmp_path, qtype, tie):
    path = write_model_gguf(tmp_path / "m.gguf", reference_model(tie), "llama", qtype=qtype)
    dequantized, model = load_both(path)
    layers = quantized_layers(model)
    assert len(layers) == 2 * 7 + 1  # the output layer too: from the embedding's blocks when tied
    for name, layer in layers.items():
        assert type(layer) is LAYER_CLASSES[BITS[qtype]] and layer.group_size == 32, name
        expected = weight_of(dequantized, name)
        ours = layer.dequantize(torch.float32)
        # Codes are the file's; scales and zero points are rounded to bfloat16 (relative error at most
        # 2**-8), which moves a weight by at most 2**-8 * (8 d + |zero|) in int4 and 2**-8 * |code| d
        # in int8: at most 2**-8 of the block's largest magnitude for Q8_0 and Q4_0, about 3.2x that
        # for Q4_1 (whose zero point reaches past the block's range).
        blocks = expected.reshape(expected.shape[0], -1, 32)
        largest = blocks.abs().amax(-1, keepdim=True)
        bound = (largest * 2.0 ** -8 * (3.5 if qtype == Q.Q4_1 else 1.05)).expand_as(blocks)
        assert ((ours.reshape(blocks.shape) - blocks).abs() <= bound).all(), name
    # The input embedding stays quantized too, with float32 scales: the file's table to float32 rounding
    # (exactly, but for Q4_1's zero point, which adds one rounding).
    embedding = model.model.embed_tokens
    assert type(embedding) is QuantizedEmbedding and embedding.bits == BITS[qtype]
    table = dequantized.model.embed_tokens.weight
    torch.testing.assert_close(embedding.dequantize(), table, rtol=0 if qtype != Q.Q4_1 else 2e-7,
                               atol=0 if qtype != Q.Q4_1 else 1e-7 * table.abs().max().item())
    assert torch.equal(embedding(IDS), embedding.dequantize()[IDS])
    assert not model.config.tie_word_embeddings  # the output layer has codes of its own now
    stored = model.config.quantization_config
    assert stored == {"quant_method": "torchformers", "bits": BITS[qtype], "group_size": 32,
                      "modules_to_not_convert": [], "quantized_embeddings": ["model.embed_tokens"]}
    with torch.no_grad():
        expected_logits, logits = dequantized(IDS).logits, model(IDS).logits
    # Activations run in bfloat16 through the int4/int8 kernels.
    assert ((logits - expected_logits).norm() / expected_logits.norm()).item() < 0.02


@pytest.mark.parametrize("qtype", list(BITS), ids=lambda q: q.name)
def test_weights_equal_the_files_when_bfloat16_holds_the_scales(tmp_path, qtype):
    model = reference_model(tie=False)
    matrices = {}
    for seed, (name, module) in enumerate(model.named_modules()):
        if isinstance(module, torch.nn.Linear):
            rows, columns = module.weight.shape
            matrices[name] = blocks_with_bfloat16_scales(qtype, rows, columns, seed)
    overrides = {gguf_name(f"{name}.weight"): (blocks, qtype) for name, blocks in matrices.items()}
    path = write_model_gguf(tmp_path / "m.gguf", model, "llama", qtype=qtype, overrides=overrides)
    dequantized, quantized = load_both(path)
    for name, layer in quantized_layers(quantized).items():
        assert torch.equal(layer.dequantize(torch.float32), weight_of(dequantized, name)), name


def test_other_types_load_dequantized_and_are_recorded(tmp_path):
    # Q8_0 matrices with the MLP as Q5_0 and an F16 output layer: only the Q8_0 ones stay quantized.
    model = reference_model(tie=False)
    overrides = {gguf_name(name): (param.detach().numpy(), Q.Q5_0)
                 for name, param in model.named_parameters() if ".mlp." in name}
    overrides["output.weight"] = (model.lm_head.weight.detach().numpy(), Q.F16)
    path = write_model_gguf(tmp_path / "m.gguf", model, "llama", qtype=Q.Q8_0, overrides=overrides)
    dequantized, quantized = load_both(path)
    kept = quantized_layers(quantized)
    assert sorted(kept) == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo")
    assert type(quantized.lm_head) is type(dequantized.lm_head)
    assert torch.equal(quantized.model.layers[1].mlp.up_proj.weight, dequantized.model.layers[1].mlp.up_proj.weight)
    floats = quantized.config.quantization_config["modules_to_not_convert"]
    assert sorted(floats) == sorted([f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up", "down")]
                                    + ["lm_head"])


def test_mixed_bits_save_and_reload(tmp_path):
    # Q4_1 layers with a Q8_0 embedding that the tied output layer reads: int4 with one int8 layer.
    model = reference_model(tie=True)
    embedding = model.model.embed_tokens.weight.detach().numpy()
    path = write_model_gguf(tmp_path / "m.gguf", model, "llama", qtype=Q.Q4_1,
                            overrides={"token_embd.weight": (embedding, Q.Q8_0)})
    quantized = torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False)
    assert type(quantized.lm_head) is Int8Linear and type(quantized.model.layers[0].mlp.up_proj) is Int4Linear
    bits_by_module = {"lm_head": 8, "model.embed_tokens": 8}
    assert quantized.config.quantization_config["bits_by_module"] == bits_by_module
    quantized.save_pretrained(tmp_path / "saved")
    stored = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert stored["quantization_config"]["bits_by_module"] == bits_by_module and not stored["tie_word_embeddings"]
    reloaded = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    for name, layer in [*quantized_layers(quantized).items(), ("model.embed_tokens", quantized.model.embed_tokens)]:
        again = reloaded.get_submodule(name)
        assert type(again) is type(layer) and torch.equal(again.dequantize(), layer.dequantize()), name
    with torch.no_grad():
        assert torch.equal(reloaded(IDS).logits, quantized(IDS).logits)


def test_quantized_embedding_follows_dtype_casts_and_refuses_resizing(tmp_path):
    path = write_model_gguf(tmp_path / "m.gguf", reference_model(tie=True), "llama", qtype=Q.Q4_1)
    model = torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False)
    embedding = model.model.embed_tokens
    table = embedding.dequantize()
    model.to(torch.bfloat16)
    assert embedding.dtype is torch.bfloat16 and embedding.weight.dtype is torch.uint8
    assert embedding(IDS).dtype is torch.bfloat16
    torch.testing.assert_close(embedding(IDS).float(), table[IDS].to(torch.bfloat16).float(), rtol=1e-2, atol=1e-3)
    model.to("cpu")  # a device move keeps the dtype
    assert embedding.dtype is torch.bfloat16
    with pytest.raises(UnsupportedArgumentError, match="dequantize=True to resize"):
        model.resize_token_embeddings(300)


def test_refusals(tmp_path):
    model = reference_model(tie=False)
    path = write_model_gguf(tmp_path / "m.gguf", model, "llama", qtype=Q.Q8_0)
    with pytest.raises(UnsupportedArgumentError, match="may only choose the activations"):
        torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize=False,
                                                         quantization_config={"bits": 4})
    with pytest.raises(UnsupportedArgumentError, match="True or False"):
        torchformers.AutoModelForCausalLM.from_pretrained(path, dequantize="no")
    torchformers.AutoModelForCausalLM.from_pretrained(path).save_pretrained(tmp_path / "float")
    with pytest.raises(UnsupportedArgumentError, match="applies to GGUF files"):
        torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "float", dequantize=False)
    # A file with float matrices only has nothing to keep quantized.
    float_path = write_model_gguf(tmp_path / "f.gguf", model, "llama", qtype=Q.F16)
    with pytest.raises(UnsupportedArgumentError, match=r"stores its matrices as \['F16'\].*dequantize=True"):
        torchformers.AutoModelForCausalLM.from_pretrained(float_path, dequantize=False)


# -- the real SmolLM2 file --------------------------------------------------------------------------
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2():
    directory = packaged_model_dir("SmolLM2-135M-Instruct-Q4_1-GGUF")
    tokenizer = torchformers.AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)
    dequantized = torchformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE)
    quantized = torchformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE, dequantize=False)
    return tokenizer, dequantized, quantized


def test_smollm2_runs_quantized_close_to_the_dequantized_model(smollm2):
    tokenizer, dequantized, quantized = smollm2
    layers = quantized_layers(quantized)
    assert len(layers) == 30 * 7 + 1
    assert type(quantized.lm_head) is Int8Linear  # the Q8_0 embedding's blocks
    assert type(quantized.model.embed_tokens) is QuantizedEmbedding  # 30 MB instead of 113 MB in float32
    assert all(type(layer) is Int4Linear for name, layer in layers.items() if name != "lm_head")
    messages = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).input_ids
    steps = 48
    with torch.no_grad():
        tokens = dequantized.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        expected = dequantized(tokens).logits[0, prompt.shape[1] - 1:-1]
        logits = quantized(tokens).logits[0, prompt.shape[1] - 1:-1]
        # The quantized model decodes too (its own greedy tokens).
        own = quantized.generate(prompt, max_new_tokens=4, do_sample=False)
    assert own.shape[1] > prompt.shape[1]
    # Teacher-forced on the dequantized model's greedy tokens: the same next token almost everywhere.
    agreement = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement >= 0.9
    assert (logits - expected).abs().max().item() < 2.0


# -- grouped int8 (Q8_0) on the int4 kernel ---------------------------------------------------------
@pytest.mark.parametrize("group_size", [32, 64])
def test_grouped_int8_runs_as_two_int4_planes_holding_the_codes_exactly(group_size):
    generator = torch.Generator().manual_seed(5)
    codes = torch.randint(-128, 128, (48, 128), dtype=torch.int8, generator=generator)
    codes[0, :4] = torch.tensor([-128, 127, 0, -1], dtype=torch.int8)  # the ends of the range
    scale = (torch.rand(48, 128 // group_size, generator=generator) * 0.05).bfloat16()
    layer = Int8Linear.from_codes(codes, scale)
    assert layer.kernel == "cpu" and sorted(layer._buffers) == ["packed", "scale_and_zero"]
    state = layer.state_dict()
    assert torch.equal(state["weight"], codes) and torch.equal(state["weight_scale"], scale)
    x = torch.randn(3, 128, generator=generator)
    # The kernel sees bfloat16 inputs and writes bfloat16 outputs; the weights are exact.
    expected = torch.nn.functional.linear(x.bfloat16().float(), layer.dequantize())
    torch.testing.assert_close(layer(x), expected, atol=1e-3, rtol=2**-8)
    fresh = Int8Linear(128, 48, group_size, bias=False, device="meta")
    fresh.load_state_dict(state, assign=True)
    assert torch.equal(fresh(x), layer(x))


def test_large_layers_convert_to_and_from_the_kernel_layout_in_row_blocks(monkeypatch):
    from torchformers.quantization import linear

    monkeypatch.setattr(linear, "_LAYOUT_CHUNK", 64 * 64)
    linear._independent_rows.cache_clear()
    try:
        codes = torch.randint(0, 16, (64 * 5 + 16, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
        assert linear._row_blocks("cpu", codes.shape[0], 64) == 64
        packed = linear._to_kernel_layout("cpu", codes)
        assert torch.equal(packed, torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1))
        assert torch.equal(linear._codes_from_layout("cpu", packed, *codes.shape), codes)
    finally:
        linear._independent_rows.cache_clear()
