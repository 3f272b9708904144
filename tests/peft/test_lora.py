"""LoRA parity with the ``peft`` library: the same base and adapter weights give the same outputs,
adapters saved by either library load in the other, merging agrees, and bad input is refused."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import torchformers
from torchformers.errors import ConfigError, UnsupportedArgumentError, WeightsMismatchError
from torchformers.peft import (
    LoraConfig,
    LoraLinear,
    PeftModel,
    PeftModelForCausalLM,
    TaskType,
    get_peft_model,
)

ATOL = 1e-5
VOCAB = 64
# family -> (reference model class name, config, task, target_modules)
FAMILIES = {
    "llama": ("LlamaForCausalLM", transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2), "CAUSAL_LM", ["q_proj", "v_proj", "down_proj"]),
    "gpt2": ("GPT2LMHeadModel", transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=1, eos_token_id=2),
        "CAUSAL_LM", ["c_attn", "c_proj"]),
    "bert": ("BertForSequenceClassification", transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_labels=3), "SEQ_CLS", "all-linear"),
}


def randomized(model: torch.nn.Module, seed: int, only_trainable: bool = False) -> torch.nn.Module:
    """Parameters (all, or the trainable ones: adapters and trained head copies) overwritten with
    seeded noise; norm weights around one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if only_trainable and not param.requires_grad:
                continue
            is_norm = "norm" in name.lower() or ".ln_" in name
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if is_norm and name.endswith("weight") else 0.0))
    return model


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """family -> directory of a seeded reference checkpoint."""
    directories = {}
    for family, (class_name, config, _, _) in FAMILIES.items():
        directory = tmp_path_factory.mktemp(family)
        torch.manual_seed(0)
        randomized(getattr(transformers, class_name)(config), seed=0).save_pretrained(directory)
        directories[family] = directory
    return directories


def reference_base(bases, family):
    class_name = FAMILIES[family][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, class_name).from_pretrained(bases[family]).eval()


def our_base(bases, family):
    class_name = FAMILIES[family][0]
    return getattr(torchformers, class_name).from_pretrained(bases[family]).eval()


def peft_config(library, family, **overrides):
    _, _, task, targets = FAMILIES[family]
    settings = {"r": 4, "lora_alpha": 8, "target_modules": targets, "task_type": task, "init_lora_weights": False}
    settings.update(overrides)
    return library.LoraConfig(**settings)


def inputs(family):
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def logits(model, family):
    with torch.no_grad():
        return model(**inputs(family)).logits


def reference_adapter(bases, family, directory, seed=1, **overrides):
    """A peft adapter with seeded random weights on the reference base, saved to ``directory``."""
    model = peft.get_peft_model(reference_base(bases, family), peft_config(peft, family, **overrides))
    randomized(model, seed, only_trainable=True)
    model.save_pretrained(directory)
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_with_the_same_outputs(bases, family, tmp_path):
    reference = reference_adapter(bases, family, tmp_path)
    ours = PeftModel.from_pretrained(our_base(bases, family), tmp_path)
    assert type(ours).__name__ == type(reference).__name__
    expected = logits(reference, family)
    torch.testing.assert_close(logits(ours, family), expected, atol=ATOL, rtol=0)
    with reference.disable_adapter(), ours.disable_adapter():
        without_adapter = logits(reference, family)
        torch.testing.assert_close(logits(ours, family), without_adapter, atol=ATOL, rtol=0)
    assert (expected - without_adapter).abs().max() > 1e-2  # the adapter does change the outputs
    assert not any(p.requires_grad for p in ours.parameters())  # loaded for inference, as peft does
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in reference.named_parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_our_adapter_loads_in_peft_and_merges_the_same(bases, family, tmp_path):
    ours = get_peft_model(our_base(bases, family), peft_config(torchformers.peft, family, use_rslora=True))
    randomized(ours, seed=3, only_trainable=True).eval()
    (tmp_path / "ours").mkdir()
    ours.save_pretrained(tmp_path / "ours")
    reference = peft.PeftModel.from_pretrained(reference_base(bases, family), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(reference, family), logits(ours, family), atol=ATOL, rtol=0)

    # The same file layout as peft's own save of the same adapter.
    reference.save_pretrained(tmp_path / "theirs")
    our_tensors = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    their_tensors = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert sorted(our_tensors) == sorted(their_tensors)
    for key, tensor in our_tensors.items():
        torch.testing.assert_close(tensor, their_tensors[key], atol=0, rtol=0)
    ours_config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    theirs_config = json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "target_modules", "modules_to_save", "bias", "task_type", "use_rslora", "peft_type"):
        expected = theirs_config[key]
        if isinstance(expected, list):  # peft repeats the task heads in modules_to_save on reloading
            assert set(ours_config[key]) == set(expected), key
        else:
            assert ours_config[key] == expected, key

    merged, reference_merged = ours.merge_and_unload(), reference.merge_and_unload()
    assert type(merged).__name__ == type(reference_merged).__name__
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, family), logits(reference_merged, family), atol=ATOL, rtol=0)
    reference_state = reference_merged.state_dict()
    for key, tensor in merged.state_dict().items():
        if key in reference_state:
            torch.testing.assert_close(tensor, reference_state[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_dora_adapters_match_peft_both_ways(bases, family, tmp_path):
    # peft's DoRA adapter, with random magnitudes too, gives the same outputs here; ours saves the same keys.
    reference = reference_adapter(bases, family, tmp_path / "theirs", use_dora=True)
    ours = PeftModel.from_pretrained(our_base(bases, family), tmp_path / "theirs")
    expected = logits(reference, family)
    torch.testing.assert_close(logits(ours, family), expected, atol=ATOL, rtol=0)
    with reference.disable_adapter():
        assert (expected - logits(reference, family)).abs().max() > 1e-2
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in reference.named_parameters())
    ours.save_pretrained(tmp_path / "ours")
    our_tensors = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    their_tensors = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert sorted(our_tensors) == sorted(their_tensors) and any("lora_magnitude_vector" in k for k in our_tensors)
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["use_dora"] is True
    reloaded = peft.PeftModel.from_pretrained(reference_base(bases, family), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(reloaded, family), expected, atol=ATOL, rtol=0)

    merged, reference_merged = ours.merge_and_unload(), reference.merge_and_unload()
    torch.testing.assert_close(logits(merged, family), logits(reference_merged, family), atol=ATOL, rtol=0)
    reference_state = reference_merged.state_dict()
    for key, tensor in merged.state_dict().items():
        if key in reference_state:
            torch.testing.assert_close(tensor, reference_state[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_dora_trains_with_peft_gradients(bases, dropout):
    # A fresh DoRA adapter starts as the base model (magnitudes are the rows' lengths); after a
    # step on the same weights, the adapter's gradients (magnitudes included) are peft's.
    models = []
    for library, base in ((peft, reference_base(bases, "llama")), (torchformers.peft, our_base(bases, "llama"))):
        torch.manual_seed(0)
        model = library.get_peft_model(base, peft_config(library, "llama", use_dora=True, lora_dropout=dropout,
                                                         init_lora_weights=True))
        models.append(model)
    reference, ours = models
    for model in models:
        with model.disable_adapter():
            base_logits = logits(model, "llama")
        torch.testing.assert_close(logits(model, "llama"), base_logits, atol=ATOL, rtol=0)
        randomized(model, seed=5, only_trainable=True).train()
    grads = []
    for model in models:
        torch.manual_seed(7)  # the same dropout masks: both drop the layer input once, in the same order
        batch = inputs("llama")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert sorted(grads[0]) == sorted(grads[1]) and any("lora_magnitude_vector" in n for n in grads[1])
    for name, grad in grads[1].items():
        torch.testing.assert_close(grad, grads[0][name], atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    # After an optimizer step the kept row lengths are recomputed: outputs still equal peft's.
    for model in models:
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
        model.eval()
    layer = ours.get_base_model().model.layers[0].self_attn.q_proj
    before = layer._dora_cache["default"][1]
    torch.testing.assert_close(logits(ours, "llama"), logits(reference, "llama"), atol=ATOL, rtol=0)
    assert layer._dora_cache["default"][1] is not before
    kept = layer._dora_cache["default"][1]
    logits(ours, "llama")
    assert layer._dora_cache["default"][1] is kept  # unchanged weights: the lengths are reused


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_weight_based_inits_match_peft(bases, family, init, tmp_path):
    # PiSSA and OLoRA move the weight's main rank-r part into the adapter: the same factors and
    # residual weights as peft's, outputs unchanged at the start, and each library loads the other's
    # trained adapter onto the original base model.
    models = []
    for library, base in ((peft, reference_base(bases, family)), (torchformers.peft, our_base(bases, family))):
        torch.manual_seed(0)  # pissa_niter_<n> draws its random projection
        models.append(library.get_peft_model(base, peft_config(library, family, init_lora_weights=init)))
    reference, ours = models
    their_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param, their_params[name], atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(logits(ours, family), logits(our_base(bases, family), family), atol=1e-4, rtol=0)
    randomized(ours, seed=3, only_trainable=True).eval()
    ours.save_pretrained(tmp_path / "ours")
    # Loading runs the init again to rebuild the residual weights (pissa_niter_<n> from the same seed).
    torch.manual_seed(0)
    reloaded = peft.PeftModel.from_pretrained(reference_base(bases, family), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(reloaded, family), logits(ours, family), atol=1e-4, rtol=0)
    torch.manual_seed(0)
    ours_again = PeftModel.from_pretrained(our_base(bases, family), tmp_path / "ours")
    torch.testing.assert_close(logits(ours_again, family), logits(ours, family), atol=1e-4, rtol=0)


def test_weight_based_inits_need_a_float_weight(bases):
    from torchformers.quantization import quantize

    base = quantize(our_base(bases, "llama"), {"bits": 8})
    with pytest.raises(UnsupportedArgumentError, match="pissa.*floating-point"):
        get_peft_model(base, LoraConfig(target_modules=["q_proj"], init_lora_weights="pissa"))


EMBEDDINGS = {"llama": "embed_tokens", "gpt2": "wte", "bert": "word_embeddings"}


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_adapters_match_peft_both_ways(bases, family, tmp_path):
    targets = [FAMILIES[family][3][0] if isinstance(FAMILIES[family][3], list) else "query", EMBEDDINGS[family]]
    reference = reference_adapter(bases, family, tmp_path / "theirs", target_modules=targets)
    ours = PeftModel.from_pretrained(our_base(bases, family), tmp_path / "theirs")
    assert isinstance(ours.get_base_model().get_input_embeddings(), torchformers.peft.LoraEmbedding)
    expected = logits(reference, family)
    torch.testing.assert_close(logits(ours, family), expected, atol=ATOL, rtol=0)
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in reference.named_parameters())
    ours.save_pretrained(tmp_path / "ours")
    our_tensors = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    their_tensors = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert sorted(our_tensors) == sorted(their_tensors) and any("lora_embedding_A" in k for k in our_tensors)
    reloaded = peft.PeftModel.from_pretrained(reference_base(bases, family), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(reloaded, family), expected, atol=ATOL, rtol=0)
    # Only the embedding adapter: it changes the outputs by itself.
    with reference.disable_adapter():
        plain = logits(reference, family)
    assert (expected - plain).abs().max() > 1e-2

    merged, reference_merged = ours.merge_and_unload(), reference.merge_and_unload()
    torch.testing.assert_close(logits(merged, family), logits(reference_merged, family), atol=ATOL, rtol=0)
    assert type(merged.get_input_embeddings()) is torch.nn.Embedding


def test_a_fresh_embedding_adapter_starts_as_a_no_op_and_trains(bases):
    model = get_peft_model(our_base(bases, "llama"), LoraConfig(target_modules=["embed_tokens", "q_proj"]))
    layer = model.get_base_model().get_input_embeddings()
    with model.disable_adapter():
        plain = logits(model, "llama")
    torch.testing.assert_close(logits(model, "llama"), plain, atol=0, rtol=0)
    batch = inputs("llama")
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert layer.lora_embedding_A["default"].grad.abs().sum() > 0
    assert not layer.base_layer.weight.requires_grad
    all_linear = get_peft_model(our_base(bases, "llama"), LoraConfig(target_modules="all-linear"))
    assert type(all_linear.get_base_model().get_input_embeddings()) is torch.nn.Embedding


def test_dora_on_an_embedding_is_refused_before_the_model_changes(bases):
    base = our_base(bases, "llama")
    with pytest.raises(UnsupportedArgumentError, match="use_dora=True on the embedding"):
        get_peft_model(base, LoraConfig(target_modules=["q_proj", "embed_tokens"], use_dora=True))
    assert not any(isinstance(m, torchformers.peft.LoraLayer) for m in base.modules())


def test_greedy_generation_with_an_adapter_matches_peft(bases, tmp_path):
    reference = reference_adapter(bases, "llama", tmp_path)
    ours = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path)
    prompt = inputs("llama")["input_ids"][:1]
    expected = reference.generate(input_ids=prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours.generate(input_ids=prompt, max_new_tokens=8, do_sample=False), expected)


def test_named_adapters_switch_and_disable_like_peft(bases, tmp_path):
    reference_adapter(bases, "llama", tmp_path / "first", seed=1)
    reference_adapter(bases, "llama", tmp_path / "second", seed=2, target_modules=["k_proj", "up_proj"], r=2)
    reference = peft.PeftModel.from_pretrained(reference_base(bases, "llama"), tmp_path / "first")
    reference.load_adapter(tmp_path / "second", adapter_name="second")
    ours = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path / "first")
    ours.load_adapter(tmp_path / "second", adapter_name="second")
    assert ours.active_adapter == reference.active_adapter == "default"
    first = logits(ours, "llama")
    torch.testing.assert_close(first, logits(reference, "llama"), atol=ATOL, rtol=0)
    for model in (ours, reference):
        model.set_adapter("second")
    second = logits(ours, "llama")
    torch.testing.assert_close(second, logits(reference, "llama"), atol=ATOL, rtol=0)
    assert (first - second).abs().max() > 1e-2
    with ours.disable_adapter():
        torch.testing.assert_close(logits(ours, "llama"), logits(our_base(bases, "llama"), "llama"), atol=0, rtol=0)
    torch.testing.assert_close(logits(ours, "llama"), second, atol=0, rtol=0)

    # Saving several adapters: "default" at the top, the others in subdirectories named after them.
    ours.save_pretrained(tmp_path / "both")
    assert (tmp_path / "both" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "both" / "second" / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path / "both" / "second", adapter_name="second")
    torch.testing.assert_close(logits(reloaded, "llama"), second, atol=0, rtol=0)


def test_only_adapters_train_and_the_loss_falls(bases):
    model = get_peft_model(our_base(bases, "llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                lora_dropout=0.1, task_type=TaskType.CAUSAL_LM))
    assert isinstance(model, PeftModelForCausalLM)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all(".lora_A.default." in name or ".lora_B.default." in name for name in trainable)
    assert not any(isinstance(m, LoraLinear) for m in model.get_base_model().lm_head.modules())  # output layer skipped
    batch = inputs("llama")
    batch["labels"] = batch["input_ids"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**batch).loss
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_print_trainable_parameters_counts_like_peft(bases):
    printed = []
    for library, base in ((peft, reference_base(bases, "llama")), (torchformers.peft, our_base(bases, "llama"))):
        model = library.get_peft_model(base, peft_config(library, "llama", modules_to_save=["lm_head"]))
        with contextlib.redirect_stdout(io.StringIO()) as output:
            model.print_trainable_parameters()
        printed.append(output.getvalue())
    assert printed[0] == printed[1]
    assert printed[1].startswith("trainable params: ")


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_are_saved_like_peft(bases, bias, tmp_path):
    settings = {"bias": bias, "target_modules": ["query", "value"], "task_type": None}
    theirs = peft.get_peft_model(reference_base(bases, "bert"), peft_config(peft, "bert", **settings))
    ours = get_peft_model(our_base(bases, "bert"), peft_config(torchformers.peft, "bert", **settings))
    assert sorted(n for n, p in ours.named_parameters() if p.requires_grad) == sorted(
        n for n, p in theirs.named_parameters() if p.requires_grad)
    theirs.save_pretrained(tmp_path / "theirs")
    ours.save_pretrained(tmp_path / "ours")
    assert sorted(load_file(tmp_path / "ours" / "adapter_model.safetensors")) == sorted(
        load_file(tmp_path / "theirs" / "adapter_model.safetensors"))


# -- bad input -----------------------------------------------------------------------------------


def test_target_modules_that_match_nothing_are_refused(bases):
    model = our_base(bases, "llama")
    with pytest.raises(ConfigError, match="matches no module.*q_proj"):
        get_peft_model(model, LoraConfig(target_modules=["query_key_value"]))
    with pytest.raises(ConfigError, match="matches no module"):
        get_peft_model(model, LoraConfig(target_modules=r".*\.attention\.dense"))
    assert not any(isinstance(m, LoraLinear) for m in model.modules())


def test_a_target_that_is_neither_linear_nor_an_embedding_is_refused(bases):
    with pytest.raises(UnsupportedArgumentError, match="input_layernorm.*RMSNorm.*modules_to_save"):
        get_peft_model(our_base(bases, "llama"), LoraConfig(target_modules=["input_layernorm"]))


def test_an_adapter_for_another_base_is_refused(bases, tmp_path):
    reference_adapter(bases, "llama", tmp_path)
    wider = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)
    other = torchformers.LlamaForCausalLM.from_config(torchformers.LlamaConfig(**wider.to_diff_dict()))
    with pytest.raises(WeightsMismatchError, match=r"adapter_model\.safetensors: tensor '.*lora_.*' has shape .* needs .*another base model"):
        PeftModel.from_pretrained(other, tmp_path)
    # Tensors for layers the config does not target: an adapter saved for another architecture.
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    tensors = {key.replace("self_attn", "attn"): value for key, value in tensors.items()}
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    with pytest.raises(WeightsMismatchError, match="has no place"):
        PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path)


def test_missing_adapter_weights_are_refused(bases, tmp_path):
    reference_adapter(bases, "llama", tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    save_file({k: v for k, v in tensors.items() if "layers.1." not in k}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(WeightsMismatchError, match="lacks .* LoRA weights"):
        PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lora_bias", True, "lora_bias=True is not supported"),
    ("init_lora_weights", "loftq", "init_lora_weights='loftq' is not supported"),
    ("some_future_option", [1], "some_future_option=.* does not implement"),
    ("peft_type", "IA3", "LoRA adapters only"),
])
def test_peft_features_torchformers_lacks_are_refused(bases, tmp_path, key, value, message):
    reference_adapter(bases, "llama", tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config[key] = value
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArgumentError, match=message):
        PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path)


def test_a_second_all_linear_adapter_covers_the_layers_the_first_adapted(bases):
    model = get_peft_model(our_base(bases, "llama"), LoraConfig(target_modules=["q_proj"]))
    model.add_adapter("wide", LoraConfig(target_modules="all-linear"))
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert len(layers) == 2 * 7 and all("wide" in layer.lora_A for layer in layers)
    assert model.active_adapter == "default"
    assert all(".default." in name for name, param in model.named_parameters() if param.requires_grad)


@pytest.mark.parametrize("save_embedding_layers", [True, False])
def test_save_embedding_layers_writes_the_keys_peft_writes(bases, save_embedding_layers, tmp_path):
    reference = reference_adapter(bases, "llama", tmp_path / "made")
    ours = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path / "made")
    for model, name in ((reference, "theirs"), (ours, "ours")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(tmp_path / name, save_embedding_layers=save_embedding_layers)
    our_tensors = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    their_tensors = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert sorted(our_tensors) == sorted(their_tensors)
    assert any("embed_tokens" in key for key in our_tensors) == save_embedding_layers
    for key, tensor in our_tensors.items():
        torch.testing.assert_close(tensor, their_tensors[key], atol=0, rtol=0)


def test_peft_state_dict_helpers_round_trip(bases, tmp_path):
    from torchformers.peft import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    reference_adapter(bases, "llama", tmp_path)
    saved = load_peft_weights(tmp_path)
    assert sorted(saved) == sorted(load_file(tmp_path / "adapter_model.safetensors"))
    fresh = get_peft_model(our_base(bases, "llama"), peft_config(torchformers.peft, "llama"))
    result = set_peft_model_state_dict(fresh, saved)
    assert result.missing_keys == [] and result.unexpected_keys == []
    loaded = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path)
    torch.testing.assert_close(logits(fresh.eval(), "llama"), logits(loaded, "llama"), atol=0, rtol=0)
    state = get_peft_model_state_dict(fresh)
    assert sorted(state) == sorted(saved)
    for key, tensor in state.items():
        torch.testing.assert_close(tensor, saved[key], atol=0, rtol=0)
    with pytest.raises(WeightsMismatchError, match="no place"):
        set_peft_model_state_dict(fresh, {"base_model.model.nowhere.lora_A.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="PeftModel"):
        get_peft_model_state_dict(our_base(bases, "llama"))


def test_adapter_modules_with_hooks_still_run_their_hooks(bases):
    # Without dropout the adapter's two products run as plain kernels; a hook on lora_A turns that off.
    model = get_peft_model(our_base(bases, "llama"), peft_config(torchformers.peft, "llama")).eval()
    randomized(model, seed=4, only_trainable=True)
    fused = logits(model, "llama")
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    calls = []
    handle = layer.lora_A["default"].register_forward_hook(lambda module, args, output: calls.append(output.shape))
    torch.testing.assert_close(logits(model, "llama"), fused, atol=1e-6, rtol=0)
    handle.remove()
    assert calls


@pytest.mark.parametrize(("combination_type", "ranks", "options"), [
    ("linear", (4, 4), {}), ("cat", (4, 2), {}), ("svd", (4, 2), {}), ("svd", (4, 2), {"svd_clamp": 0.9}),
    ("ties", (4, 4), {"density": 0.5}), ("ties", (4, 4), {"density": 0.3, "majority_sign_method": "frequency"}),
    ("dare_linear", (4, 4), {"density": 0.5}), ("dare_ties", (4, 4), {"density": 0.6}),
    ("magnitude_prune", (4, 4), {"density": 0.4}), ("ties_svd", (4, 2), {"density": 0.5}),
    ("dare_linear_svd", (4, 2), {"density": 0.5}), ("dare_ties_svd", (4, 2), {"density": 0.7}),
    ("magnitude_prune_svd", (4, 2), {"density": 0.5}),
])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_weighted_adapter_combinations_match_peft(bases, family, combination_type, ranks, options, tmp_path):
    targets = {"llama": ["q_proj", "v_proj", "embed_tokens"], "gpt2": ["c_attn", "c_proj"]}[family]
    for seed, rank in enumerate(ranks):
        reference_adapter(bases, family, tmp_path / str(seed), seed=seed + 1, r=rank, target_modules=targets[seed:])
    models = []
    for library, base in ((peft, reference_base(bases, family)), (torchformers.peft, our_base(bases, family))):
        model = library.PeftModel.from_pretrained(base, tmp_path / "0", adapter_name="first")
        model.load_adapter(tmp_path / "1", adapter_name="second")
        torch.manual_seed(3)  # the dare merges draw their pruning masks: the same draws in the same order
        model.add_weighted_adapter(["first", "second"], [0.7, -1.3], "mixed", combination_type=combination_type,
                                   **options)
        model.set_adapter("mixed")
        models.append(model.eval())
    reference, ours = models
    assert not any(p.requires_grad for n, p in ours.named_parameters() if ".mixed" in n)
    torch.testing.assert_close(logits(ours, family), logits(reference, family), atol=1e-4, rtol=0)
    their_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        # Singular vectors may differ in sign (the product may not), so the svd forms compare logits only.
        if ".mixed" in name and not combination_type.endswith("svd"):
            torch.testing.assert_close(param, their_params[name], atol=1e-6, rtol=1e-5)
    if "density" in options:  # the pruning took effect: the merge differs from the unpruned one
        plain = "linear" if not combination_type.endswith("svd") else "svd"
        ours.add_weighted_adapter(["first", "second"], [0.7, -1.3], "plain", combination_type=plain)
        ours.set_adapter("plain")
        assert (logits(ours, family) - logits(reference, family)).abs().max() > 1e-3


def test_weighted_adapters_refuse_what_they_cannot_combine(bases):
    model = get_peft_model(our_base(bases, "llama"), LoraConfig(r=4, target_modules=["q_proj"]))
    model.add_adapter("wide", LoraConfig(r=8, target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="one rank"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="linear")
    with pytest.raises(ConfigError, match="'ties' needs adapters of one rank"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="ties", density=0.5)
    with pytest.raises(ConfigError, match="pass a density between 0 and 1"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="dare_ties_svd")
    with pytest.raises(ConfigError, match="majority_sign_method must be"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="ties_svd",
                                   density=0.5, majority_sign_method="median")
    with pytest.raises(UnsupportedArgumentError, match="not supported"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="tsvd")
    with pytest.raises(UnsupportedArgumentError, match="CUDA solver"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", svd_driver="gesvdj")
    with pytest.raises(ConfigError, match="svd_clamp applies to the svd combinations"):
        model.add_weighted_adapter(["default", "wide"], [1.0, 1.0], "mixed", combination_type="cat", svd_clamp=0.9)
    with pytest.raises(ConfigError, match="no adapter named"):
        model.add_weighted_adapter(["default", "nope"], [1.0, 1.0], "mixed")
    assert "mixed" not in model.peft_config


@pytest.mark.parametrize("dora", [False, True])
def test_merge_adapter_and_unmerge_adapter_match_peft(bases, dora, tmp_path):
    reference_adapter(bases, "gpt2", tmp_path, use_dora=dora)
    reference = peft.PeftModel.from_pretrained(reference_base(bases, "gpt2"), tmp_path).eval()
    ours = PeftModel.from_pretrained(our_base(bases, "gpt2"), tmp_path)
    adapted = logits(ours, "gpt2")
    weight = ours.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight.detach().clone()
    reference.merge_adapter()
    ours.merge_adapter()
    assert isinstance(ours.get_base_model().transformer.h[0].attn.c_attn, LoraLinear)
    torch.testing.assert_close(logits(ours, "gpt2"), logits(reference, "gpt2"), atol=ATOL, rtol=0)
    torch.testing.assert_close(logits(ours, "gpt2"), adapted, atol=ATOL, rtol=0)
    reference.unmerge_adapter()
    ours.unmerge_adapter()
    restored = ours.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight
    their_restored = reference.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight
    torch.testing.assert_close(restored, their_restored, atol=1e-6, rtol=0)
    # Rounding: DoRA's unmerge divides by the row factors (peft's formula), plain LoRA's subtracts.
    torch.testing.assert_close(restored, weight, atol=1e-4 if dora else 1e-6, rtol=0)
    torch.testing.assert_close(logits(ours, "gpt2"), logits(reference, "gpt2"), atol=ATOL, rtol=0)
    # Switching adapters off while merged takes them back out first, as peft does.
    ours.merge_adapter()
    ours.disable_adapter_layers()
    with reference.disable_adapter():
        plain = logits(reference, "gpt2")
    torch.testing.assert_close(logits(ours, "gpt2"), plain, atol=ATOL, rtol=0)
    ours.enable_adapter_layers()
    torch.testing.assert_close(logits(ours, "gpt2"), adapted, atol=ATOL, rtol=0)


def test_set_requires_grad_picks_the_adapters_that_train(bases):
    model = get_peft_model(our_base(bases, "llama"), LoraConfig(target_modules=["q_proj"]))
    model.add_adapter("other", LoraConfig(target_modules=["q_proj"]))
    trainable = lambda: sorted({n.split(".lora_")[1].split(".")[1] for n, p in model.named_parameters()  # noqa: E731
                                if p.requires_grad})
    assert trainable() == ["default"]
    model.set_requires_grad("other")
    assert trainable() == ["default", "other"]
    model.set_requires_grad(["default", "other"], requires_grad=False)
    assert trainable() == []
    with pytest.raises(ConfigError, match="no adapter named"):
        model.set_requires_grad("nope")


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_trained_pissa_adapter_converts_to_plain_lora_for_the_original_model(bases, init, tmp_path):
    model = get_peft_model(our_base(bases, "llama"), peft_config(torchformers.peft, "llama", init_lora_weights=init))
    model.save_pretrained(tmp_path / "start")
    randomized(model, seed=6, only_trainable=True).eval()  # stands for training
    trained = logits(model, "llama")
    model.save_pretrained(tmp_path / "plain", path_initial_model_for_weight_conversion=tmp_path / "start")
    config = json.loads((tmp_path / "plain" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 16, True)
    # The converted adapter needs no rewritten weights: on the original model it gives the trained outputs.
    reference = peft.PeftModel.from_pretrained(reference_base(bases, "llama"), tmp_path / "plain").eval()
    torch.testing.assert_close(logits(reference, "llama"), trained, atol=1e-4, rtol=0)
    ours = PeftModel.from_pretrained(our_base(bases, "llama"), tmp_path / "plain")
    torch.testing.assert_close(logits(ours, "llama"), trained, atol=1e-4, rtol=0)
