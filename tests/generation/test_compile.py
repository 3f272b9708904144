"""Compiled decoding (``compile_config`` with a static cache): the same tokens as eager decoding,
compiled once and reused, and clear errors for settings it cannot honour."""

from __future__ import annotations

import shutil

import pytest
import torch
from _checkpoints import PAD, left_padded, prompt
from torch._dynamo.utils import counters

import torchformers
import torchformers.generation.utils as generation_utils
import torchformers.nn.linear as linear_module
from torchformers import CompileConfig, GenerationConfig
from torchformers.errors import ConfigError, GenerationError
from torchformers.generation import search


@pytest.mark.skipif(not any(shutil.which(name) for name in ("g++", "c++", "clang++")),
                    reason="torch.compile's inductor backend needs a C++ compiler, and this machine has none")
def test_compiled_decoding_gives_the_eager_tokens_and_compiles_once(checkpoint, monkeypatch):
    # Inductor, as users get it: about 15 s for this two-layer model on two CPU cores.
    _, _, model = checkpoint("llama")
    ids, mask = left_padded(prompt(batch=2, length=7, seed=5), (0, 2))
    settings = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=PAD,
                    cache_implementation="static")
    eager = model.generate(ids, **settings)
    compiled = model.generate(ids, **settings, compile_config=CompileConfig())
    assert torch.equal(compiled, eager)

    # A second call with other lengths reuses the compiled step (symbolic lengths: no new graph),
    # and its decode steps do go through it.
    compiled_call = generation_utils._COMPILED_CALLS[(False, True, "inductor", "reduce-overhead", "None")]
    calls = []
    monkeypatch.setitem(generation_utils._COMPILED_CALLS, (False, True, "inductor", "reduce-overhead", "None"),
                        lambda model, inputs: calls.append(1) or compiled_call(model, inputs))
    graphs = counters["stats"]["unique_graphs"]
    other_ids, other_mask = left_padded(prompt(batch=2, length=10, seed=6), (0, 3))
    other = dict(attention_mask=other_mask, max_new_tokens=20, do_sample=False, pad_token_id=PAD)
    longer = model.generate(other_ids, **other, cache_implementation="static", compile_config=CompileConfig())
    assert len(calls) == 19  # every step after the prompt's
    assert counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(longer, model.generate(other_ids, **other))


def test_compiled_decoding_traces_every_family(checkpoint):
    # The "eager" backend traces with dynamo (what fails on untraceable code) without compiling kernels.
    for family in ("llama", "gpt2"):
        _, _, model = checkpoint(family)
        ids = prompt(batch=1, length=6, seed=2)
        compiled = model.generate(ids, max_new_tokens=10, do_sample=False, cache_implementation="static",
                                  compile_config=CompileConfig(backend="eager", fullgraph=True))
        assert torch.equal(compiled, model.generate(ids, max_new_tokens=10, do_sample=False))



@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_compiled_batch_steps_multiply_by_the_packed_weights(checkpoint, family, monkeypatch, packing_route):
    # Long batch generations pack their weights (PACK_WHEN_STEPS_LEFT), compiled or not; compiled steps
    # reach the copies through torchformers::decode_rows_linear, which finds them by weight.
    monkeypatch.setattr(search, "PACK_WHEN_STEPS_LEFT", 10)
    _, reference, model = checkpoint(family)
    ids, mask = left_padded(prompt(batch=3, length=7, seed=12), (0, 2, 4))
    settings = dict(attention_mask=mask, max_new_tokens=14, do_sample=False, pad_token_id=PAD)
    packed = []
    of = linear_module.PackedWeight.of
    monkeypatch.setattr(linear_module.PackedWeight, "of",
                        lambda matrices, rows: packed.append(rows) or of(matrices, rows))
    compiled = model.generate(ids, **settings, cache_implementation="static",
                              compile_config=CompileConfig(backend="eager"))
    assert torch.equal(compiled, reference.generate(ids, **settings))
    layers = [module for module in model.modules() if getattr(module, "packs_for_decoding", False)]
    assert packed == [3] * len(layers)  # each weight once, on its own (compiled steps do not group)
    assert not linear_module._PACKINGS_BY_WEIGHT  # the copies go with the block


def test_compile_options_reach_torch_compile(checkpoint):
    # A guard filter (CompileConfig's docstring suggests torch's nn-module one) is handed to dynamo,
    # which calls it with the guards of the decode step's graph.
    _, _, model = checkpoint("llama")
    ids = prompt(batch=1, length=6, seed=3)
    seen = []

    def keep_all(entries):
        seen.append(len(entries))
        return [True] * len(entries)

    settings = CompileConfig(backend="eager", mode=None, options={"guard_filter_fn": keep_all})
    compiled = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static",
                              compile_config=settings)
    assert seen and seen[0] > 0
    assert torch.equal(compiled, model.generate(ids, max_new_tokens=6, do_sample=False))

def test_compile_settings_that_cannot_apply_raise(checkpoint, monkeypatch):
    _, _, model = checkpoint("llama")
    ids = prompt(batch=1, length=6, seed=2)
    with pytest.raises(GenerationError, match="static cache"):
        model.generate(ids, max_new_tokens=3, compile_config=CompileConfig())
    with pytest.raises(GenerationError, match="mode or options"):
        model.generate(ids, max_new_tokens=3, cache_implementation="static",
                       compile_config=CompileConfig(options={"max_autotune": True}))
    # disable_compile wins: decoding stays eager, torch.compile is never called.
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled despite disable_compile"))
    model.generate(ids, max_new_tokens=3, cache_implementation="static", compile_config=CompileConfig(),
                   disable_compile=True)
    # On the CPU a static cache alone does not compile (the reference compiles only on accelerators).
    model.generate(ids, max_new_tokens=3, cache_implementation="static")


def test_compile_config_round_trips_through_generation_config(tmp_path):
    config = GenerationConfig(compile_config=CompileConfig(dynamic=False, mode=None, options={"trace.enabled": False}))
    config.save_pretrained(tmp_path)
    loaded = GenerationConfig.from_pretrained(tmp_path)
    assert loaded.compile_config == config.compile_config
    assert GenerationConfig(compile_config={"fullgraph": True}).compile_config == CompileConfig(fullgraph=True)
    with pytest.raises(ConfigError, match="unknown keys"):
        GenerationConfig(compile_config={"fulgraph": True})
    with pytest.raises(ConfigError, match="compile_config"):
        GenerationConfig(compile_config="inductor")


# -- CompileConfig(model_guards="fingerprint") ------------------------------------------------------
FINGERPRINT = CompileConfig(backend="eager", model_guards="fingerprint")  # dynamo tracing, no kernels to build


def _fresh(checkpoint, family="llama"):
    directory, _, _ = checkpoint(family)
    return torchformers.AutoModelForCausalLM.from_pretrained(directory)


def _fingerprinted(model, ids, **settings):
    return model.generate(ids, max_new_tokens=8, do_sample=False, cache_implementation="static",
                          compile_config=FINGERPRINT, **settings)


def _steps(model):
    return list(model.__dict__.get("_fingerprinted_steps", {}).values())


def test_fingerprinted_steps_give_the_eager_tokens_and_are_reused(checkpoint, monkeypatch):
    model = _fresh(checkpoint)
    compiles, filtered = [], []
    original, drop = torch.compile, generation_utils._drop_model_guards
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compiles.append(dict(k["options"])) or original(*a, **k))
    monkeypatch.setattr(generation_utils, "_drop_model_guards",
                        lambda entries: filtered.append((entries, drop(entries))) or filtered[-1][1])
    single = prompt(batch=1, length=10, seed=9)
    assert torch.equal(_fingerprinted(model, single), model.generate(single, max_new_tokens=8, do_sample=False))
    assert len(compiles) == 1
    # One sequence's step is one graph: the guards on the model's modules (most of them) are dropped.
    dropped = [entry.name for entries, keep in filtered for entry, kept in zip(entries, keep, strict=True)
               if not kept]
    kept = [entry.name for entries, keep in filtered for entry, kept in zip(entries, keep, strict=True) if kept]
    assert len(dropped) > len(kept) and all(name.startswith("model") for name in dropped)
    # A padded batch breaks the graph at its mask: the frames compiled apart (a decoder layer's
    # forward, shared by both layers) keep their guards, and the tokens stay right.
    ids, mask = left_padded(prompt(batch=2, length=7, seed=8), (0, 2))
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    assert torch.equal(_fingerprinted(model, ids, attention_mask=mask, pad_token_id=PAD), eager)
    step = _steps(model)
    assert torch.equal(_fingerprinted(model, single), model.generate(single, max_new_tokens=8, do_sample=False))
    assert len(compiles) == 1 and _steps(model) == step  # the same model, unchanged: the same step


def test_a_model_changed_between_calls_gets_a_new_step(checkpoint):
    model = _fresh(checkpoint)
    ids = prompt(batch=1, length=6, seed=10)
    _fingerprinted(model, ids)
    first = _steps(model)
    # A hook added to a layer (it silences the layer's MLP): a new step, whose tokens follow the hook.
    before = model.generate(ids, max_new_tokens=8, do_sample=False)
    handle = model.model.layers[1].mlp.register_forward_hook(lambda module, args, output: output * 0)
    hooked = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert not torch.equal(hooked, before)
    assert torch.equal(_fingerprinted(model, ids), hooked) and _steps(model) != first
    handle.remove()
    assert torch.equal(_fingerprinted(model, ids), before)
    # A changed attribute the forward reads (the attention scale), then a cast: each recompiles, and
    # the tokens follow the change.
    attention = model.model.layers[0].self_attn
    attention.scaling = attention.scaling * 4
    assert torch.equal(_fingerprinted(model, ids), model.generate(ids, max_new_tokens=8, do_sample=False))
    model.to(torch.float64)
    assert torch.equal(_fingerprinted(model, ids), model.generate(ids, max_new_tokens=8, do_sample=False))
    assert len({id(step) for _, step in _steps(model)}) == 1  # one step kept per setting: the newest


def test_fingerprinted_steps_are_not_shared_between_models(checkpoint):
    first, second = _fresh(checkpoint), _fresh(checkpoint)
    with torch.no_grad():
        for param in second.parameters():
            param.mul_(-1)
    ids = prompt(batch=1, length=6, seed=11)
    assert torch.equal(_fingerprinted(first, ids), first.generate(ids, max_new_tokens=8, do_sample=False))
    assert torch.equal(_fingerprinted(second, ids), second.generate(ids, max_new_tokens=8, do_sample=False))
    # A submodule swapped for another: a new step over the new module.
    second.model.layers[0].mlp = first.model.layers[0].mlp
    assert torch.equal(_fingerprinted(second, ids), second.generate(ids, max_new_tokens=8, do_sample=False))


def test_fingerprint_settings_are_checked_and_saved(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="model_guards"):
        CompileConfig(model_guards="none")
    assert "model_guards" not in CompileConfig().to_dict()  # the reference's fields only, by default
    config = GenerationConfig(compile_config=CompileConfig(mode=None, model_guards="fingerprint"))
    config.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path).compile_config.model_guards == "fingerprint"
    model = _fresh(checkpoint)
    with pytest.raises(GenerationError, match="guard filter"):
        model.generate(prompt(), max_new_tokens=3, cache_implementation="static",
                       compile_config=CompileConfig(mode=None, options={"guard_filter_fn": lambda e: e},
                                                    model_guards="fingerprint"))
