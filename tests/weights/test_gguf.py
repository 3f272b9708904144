"""Our GGUF reader, the config and tensor mapping of the Llama family, and loading GGUF models,
checked against the `gguf` package's reader and the reference library on tiny files written here."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf_writers import random_k_blocks, write_gguf, write_model_gguf

import torchformers
from torchformers.errors import CheckpointError, ConfigError, FileResolutionError, UnknownModelTypeError
from torchformers.weights.gguf import GGUFFile, gguf_config_dict, state_dict_key

ATOL = 1e-4
TINY = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5}
# (architecture written in the file, reference model_type, extra config)
FAMILIES = {
    "llama": ("llama", "llama", {"rope_theta": 5000.0}),
    "qwen2": ("qwen2", "qwen2", {}),
    "qwen3": ("qwen3", "qwen3", {"head_dim": 128}),  # real Qwen3 files use 128, the reference's default
}


def reference_model(model_type: str, seed: int = 0, **overrides):
    config = transformers.AutoConfig.for_model(model_type, **{**TINY, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if "norm" in name else 0.0))
    return model


def minimal_metadata(architecture: str = "llama") -> dict:
    return {f"{architecture}.{key}": value for key, value in {
        "context_length": 64, "embedding_length": 32, "block_count": 1, "feed_forward_length": 64,
        "attention.head_count": 2, "attention.layer_norm_rms_epsilon": 1e-5, "vocab_size": 10,
    }.items()}


# -- the reader --------------------------------------------------------------------------------
def test_metadata_of_every_value_type_matches_the_gguf_package(tmp_path):
    metadata = {
        "t.u8": (200, V.UINT8), "t.i8": (-5, V.INT8), "t.u16": (60000, V.UINT16), "t.i16": (-3000, V.INT16),
        "t.u32": (4_000_000_000, V.UINT32), "t.i32": (-7, V.INT32), "t.f32": (0.1, V.FLOAT32),
        "t.bool": (True, V.BOOL), "t.str": ("héllo ✓", V.STRING), "t.u64": (2**63 + 5, V.UINT64),
        "t.i64": (-(2**40), V.INT64), "t.f64": (1e-300, V.FLOAT64),
        "t.ints": ([1, -2, 3], V.ARRAY, V.INT32), "t.floats": ([0.5, 1.5], V.ARRAY, V.FLOAT32),
        "t.strings": (["a", "", "ü b"], V.ARRAY, V.STRING), "t.bools": ([True, False], V.ARRAY, V.BOOL),
        "t.u64s": ([2**64 - 1], V.ARRAY, V.UINT64),
    }
    path = write_gguf(tmp_path / "m.gguf", "llama", metadata)
    ours = GGUFFile(path)
    theirs = gguf.GGUFReader(path)
    assert ours.version == 3
    for key, field in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        assert ours.metadata[key] == field.contents(), key
    assert set(ours.metadata) == {k for k in theirs.fields if not k.startswith("GGUF.")}


@pytest.mark.parametrize("alignment", [None, 64])
def test_tensor_infos_and_bytes_match_the_gguf_package(tmp_path, alignment):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": (rng.standard_normal((2, 64)), Q.F16),
        "q8": (rng.standard_normal((4, 64)), Q.Q8_0),
        "q4k": (random_k_blocks(Q.Q4_K, 2).reshape(2, -1), Q.Q4_K),
        "vector": rng.standard_normal(7).astype(np.float32),
    }
    path = write_gguf(tmp_path / "t.gguf", "llama", {}, tensors, alignment=alignment)
    ours = GGUFFile(path)
    theirs = gguf.GGUFReader(path)
    assert ours.alignment == (alignment or 32)
    assert ours.data_offset == theirs.data_offset
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        assert info.shape == tuple(reversed(tensor.shape.tolist())), tensor.name
        assert info.type_id == tensor.tensor_type and info.nbytes == tensor.n_bytes, tensor.name
        assert info.offset % ours.alignment == 0
        assert np.array_equal(ours.raw(tensor.name).numpy().reshape(-1), tensor.data.view(np.uint8).reshape(-1))
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.array_equal(ours.tensor(tensor.name).numpy(), expected.reshape(info.shape)), tensor.name


def test_f32_tensors_are_private_views_of_the_file(tmp_path):
    path = write_gguf(tmp_path / "t.gguf", "llama", {}, {"w": np.ones(4, dtype=np.float32)})
    weight = GGUFFile(path).tensor("w")
    weight.mul_(3)  # a copy-on-write map: in-place training never writes the file
    assert np.array_equal(gguf.GGUFReader(path).tensors[0].data, np.ones(4, dtype=np.float32))


def test_models_loaded_from_one_file_share_no_memory(tmp_path):
    model = reference_model("llama")
    write_model_gguf(tmp_path / "m.gguf", model, "llama")
    first = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m.gguf")
    second = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m.gguf")
    with torch.no_grad():
        first.model.norm.weight.zero_()  # F32 in the file: a view of the memory map
    assert torch.equal(second.model.norm.weight, model.model.norm.weight)


def test_truncated_files_name_the_file_and_what_was_cut(tmp_path):
    metadata = {**minimal_metadata(), "tokenizer.ggml.tokens": ["a", "b", "c"]}
    path = write_gguf(tmp_path / "full.gguf", "llama", metadata, {"w": np.ones((4, 32), dtype=np.float32)})
    data = path.read_bytes()
    tensor_info = data.index(struct.pack("<Q", 1) + b"w")
    for cut, reading in [(10, "the header"), (60, "metadata"), (tensor_info + 12, "the tensor info of 'w'"),
                         (len(data) - 1, "tensor 'w' ends at byte")]:
        cut_path = tmp_path / f"cut{cut}.gguf"
        cut_path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated") as error:
            GGUFFile(cut_path)
        assert str(cut_path) in str(error.value) and reading in str(error.value)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        GGUFFile(tmp_path / "empty.gguf")


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text('{"error": "not found"}')
    with pytest.raises(CheckpointError, match=r"not a GGUF file: it starts with b'\{\"er'") as error:
        torchformers.AutoModelForCausalLM.from_pretrained(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("version", "message"), [(1, "GGUF version 1"), (4, "GGUF version 4"),
                                                  (3 << 24, "big-endian")])
def test_unsupported_versions_are_refused(tmp_path, version, message):
    path = write_gguf(tmp_path / "v.gguf", "llama", minimal_metadata())
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", version)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=message):
        GGUFFile(path)


def test_a_misaligned_tensor_offset_is_reported_as_corrupt(tmp_path):
    path = write_gguf(tmp_path / "a.gguf", "llama", {}, {"w": np.ones(4, dtype=np.float32)})
    data = bytearray(path.read_bytes())
    info = GGUFFile(path).tensors["w"]
    # The offset is the last field of the tensor info, just before the padding that ends the header.
    position = data.index(b"w") + 1 + 4 + 8 + 4
    data[position:position + 8] = struct.pack("<Q", 3)
    path.write_bytes(bytes(data))
    assert info.offset % 32 == 0
    with pytest.raises(CheckpointError, match="not a multiple of the alignment"):
        GGUFFile(path)


# -- config and names ----------------------------------------------------------------------------
def test_metadata_lacking_a_required_key_names_it(tmp_path):
    metadata = minimal_metadata()
    del metadata["llama.block_count"]
    path = write_gguf(tmp_path / "m.gguf", "llama", metadata)
    with pytest.raises(ConfigError, match="'llama.block_count'") as error:
        torchformers.AutoConfig.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert str(path) in str(error.value)


def test_an_unsupported_architecture_is_named(tmp_path):
    write_gguf(tmp_path / "b.gguf", "bert", minimal_metadata("bert"))
    with pytest.raises(UnknownModelTypeError, match=r"'bert' model.*\['llama', 'mistral', 'qwen2', 'qwen3'\]"):
        torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b.gguf")


def test_an_unsupported_tensor_type_is_named_before_loading(tmp_path):
    model = reference_model("llama")
    iq4 = np.zeros((TINY["intermediate_size"], TINY["hidden_size"] // 32 * 18), dtype=np.uint8)
    write_model_gguf(tmp_path / "m.gguf", model, "llama", overrides={"blk.1.ffn_up.weight": (iq4, Q.IQ4_NL)})
    with pytest.raises(CheckpointError, match=r"'blk.1.ffn_up.weight' is stored as IQ4_NL \(ggml type 20\)"):
        torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m.gguf")


def test_state_dict_keys_of_llama_cpp_names():
    assert state_dict_key("token_embd.weight") == "model.embed_tokens.weight"
    assert state_dict_key("output.weight") == "lm_head.weight"
    assert state_dict_key("output_norm.weight") == "model.norm.weight"
    assert state_dict_key("blk.11.attn_q.bias") == "model.layers.11.self_attn.q_proj.bias"
    assert state_dict_key("blk.0.attn_k_norm.weight") == "model.layers.0.self_attn.k_norm.weight"
    assert state_dict_key("blk.3.ffn_down.weight") == "model.layers.3.mlp.down_proj.weight"
    assert state_dict_key("rope_freqs.weight") is None
    assert state_dict_key("blk.0.attn_qkv.weight") is None


@pytest.mark.parametrize("family", [*sorted(FAMILIES), "mistral"])
def test_config_matches_the_reference(tmp_path, family):
    # llama.cpp writes Mistral as a llama file; the reference tells it apart by general.name == "mistral".
    architecture, model_type, extra = FAMILIES.get(family, ("llama", "mistral", {}))
    model = reference_model(model_type, **extra)
    write_model_gguf(tmp_path / "m.gguf", model, architecture, name=family)
    ours = torchformers.AutoConfig.from_pretrained(tmp_path, gguf_file="m.gguf")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert ours.model_type == theirs.model_type == model_type
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "rope_parameters", "sliding_window"):
        if key in theirs.to_dict():  # the reference's Qwen2 has no head_dim attribute; ours derives one
            assert getattr(ours, key) == getattr(theirs, key), key


def assert_same_model(ours, theirs, vocab_size: int = TINY["vocab_size"]) -> None:
    """Identical weights (bit for bit), logits within ATOL and the same generation token ids."""
    assert ours.dtype == theirs.dtype == torch.float32
    expected = theirs.state_dict()
    loaded = ours.state_dict()
    assert set(loaded) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key
    ids = torch.randint(3, vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=ATOL, rtol=0)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(ours.generation_config, key) == getattr(theirs.generation_config, key), key


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_weights_and_logits_match_the_reference(tmp_path, family):
    architecture, model_type, extra = FAMILIES[family]
    model = reference_model(model_type, tie_word_embeddings=family != "qwen2", **extra)
    write_model_gguf(tmp_path / "m.gguf", model, architecture, qtype=Q.Q8_0)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf").eval()
    ours = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert type(ours).__name__ == type(theirs).__name__
    assert_same_model(ours, theirs)


def test_a_llama_file_named_mistral_loads_as_mistral(tmp_path):
    # The reference reads its config as Mistral but cannot load its weights (gguf-py has no
    # "mistral" architecture), so the weights are checked against the same file named otherwise.
    model = reference_model("llama")
    write_model_gguf(tmp_path / "m.gguf", model, "llama", name="mistral")
    write_model_gguf(tmp_path / "llama.gguf", model, "llama")
    ours = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert type(ours).__name__ == "MistralForCausalLM"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="llama.gguf").eval()
    assert_same_model(ours, theirs)


@pytest.mark.parametrize("k_type", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_types_load_like_the_reference(tmp_path, k_type):
    # K blocks hold 256 values, so the MLP rows are 256 wide; their bytes are random (gguf cannot write K types).
    model = reference_model("llama", hidden_size=256, intermediate_size=256, num_hidden_layers=1)
    write_model_gguf(tmp_path / "m.gguf", model, "llama", k_type=k_type)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf").eval()
    ours = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert_same_model(ours, theirs)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_every_simple_type_loads_like_the_reference(tmp_path, qtype):
    model = reference_model("qwen2", num_hidden_layers=1)
    write_model_gguf(tmp_path / "m.gguf", model, "qwen2", qtype=qtype)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    ours = torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m.gguf")
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor.float()), key


def test_untied_output_and_dtype_and_direct_class(tmp_path):
    model = reference_model("llama", tie_word_embeddings=False)
    write_model_gguf(tmp_path / "m.gguf", model, "llama", qtype=Q.F32)
    config = gguf_config_dict(GGUFFile(tmp_path / "m.gguf"))
    assert config["tie_word_embeddings"] is False
    ours = torchformers.LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and ours.config.dtype == torch.bfloat16
    assert ours.lm_head.weight.data_ptr() != ours.model.embed_tokens.weight.data_ptr()
    assert torch.equal(ours.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))
    base = torchformers.AutoModel.from_pretrained(tmp_path / "m.gguf")
    assert torch.equal(base.norm.weight, model.model.norm.weight)


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileResolutionError, match="nothere.gguf"):
        torchformers.AutoModelForCausalLM.from_pretrained(tmp_path / "nothere.gguf")
    with pytest.raises(FileResolutionError, match="other.gguf"):
        torchformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="other.gguf")


def test_a_gguf_file_in_the_hub_cache(tmp_path, fake_hub_cache):
    model = reference_model("qwen2")
    source = tmp_path / "source"
    source.mkdir()
    write_model_gguf(source / "m.gguf", model, "qwen2")
    fake_hub_cache("org/tiny-gguf", source, commit="a" * 40)
    options = {"gguf_file": "m.gguf", "cache_dir": fake_hub_cache.cache_dir, "local_files_only": True}
    config = torchformers.AutoConfig.from_pretrained("org/tiny-gguf", **options)
    ours = torchformers.AutoModelForCausalLM.from_pretrained("org/tiny-gguf", **options)
    assert config.model_type == "qwen2" and config.hidden_size == TINY["hidden_size"]
    assert torch.equal(ours.model.norm.weight, model.model.norm.weight)
    with pytest.raises(FileResolutionError, match="other.gguf"):
        torchformers.AutoConfig.from_pretrained("org/tiny-gguf", **{**options, "gguf_file": "other.gguf"})
