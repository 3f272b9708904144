"""Resolving hub ids through a local Hugging Face cache, always offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import huggingface_hub
import pytest
import torch

from torchformers import AutoModelForCausalLM, GenerationConfig, LlamaForCausalLM
from torchformers.errors import FileResolutionError
from torchformers.hub import hub_offline, resolve_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to reach the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def cached_repo(tiny_llama, tiny_llama_dir, fake_hub_cache):
    """The tiny model filed under ``org/tiny`` (no generation_config.json); returns its cache dir."""
    os.remove(tiny_llama_dir / "generation_config.json")
    fake_hub_cache("org/tiny", tiny_llama_dir, COMMIT)
    return fake_hub_cache.cache_dir


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def test_local_files_only_loads_from_the_cache(cached_repo, tiny_llama):
    model = AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=cached_repo, local_files_only=True)
    assert isinstance(model, LlamaForCausalLM)
    assert model.name_or_path == "org/tiny"
    assert_same_weights(model, tiny_llama)


def test_hf_hub_offline_env_is_read_at_call_time(cached_repo, tiny_llama, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    model = AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=cached_repo)
    assert_same_weights(model, tiny_llama)


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_hub_offline_values(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline


def test_revision_picks_the_snapshot(tmp_path, tiny_llama, tiny_llama_kwargs, fake_hub_cache):
    tiny_llama.save_pretrained(tmp_path / "new")
    torch.manual_seed(1)
    from torchformers import LlamaConfig

    old = LlamaForCausalLM.from_config(LlamaConfig(**tiny_llama_kwargs))
    old.save_pretrained(tmp_path / "old")
    fake_hub_cache("org/tiny", tmp_path / "old", OLD_COMMIT, ref=None)
    fake_hub_cache("org/tiny", tmp_path / "new", COMMIT, ref="main")
    cache = fake_hub_cache.cache_dir

    def load(**kwargs):
        return AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=cache, local_files_only=True, **kwargs)

    assert_same_weights(load(), tiny_llama)
    assert_same_weights(load(revision="main"), tiny_llama)
    assert_same_weights(load(revision=COMMIT), tiny_llama)
    assert_same_weights(load(revision=OLD_COMMIT), old)


def test_unknown_revision_is_named(cached_repo):
    with pytest.raises(FileResolutionError, match="at revision 'v9'"):
        AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=cached_repo, local_files_only=True, revision="v9")


@pytest.mark.parametrize("offline_by", ["argument", "env"])
def test_missing_repo_is_named(cached_repo, monkeypatch, offline_by):
    kwargs = {"local_files_only": True} if offline_by == "argument" else {}
    if offline_by == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileResolutionError) as caught:
        AutoModelForCausalLM.from_pretrained("org/missing", cache_dir=cached_repo, **kwargs)
    message = str(caught.value)
    assert "'org/missing'" in message and "config.json" in message
    assert cached_repo in message


def test_missing_generation_config_is_fine(cached_repo, tiny_llama):
    model = AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=cached_repo, local_files_only=True)
    assert model.generation_config.bos_token_id == tiny_llama.config.bos_token_id
    assert model.generation_config.eos_token_id == tiny_llama.config.eos_token_id


def test_cached_no_exist_marker_means_absent(cached_repo):
    # huggingface_hub records files a repository lacks under .no_exist/<commit>/.
    marker = os.path.join(cached_repo, "models--org--tiny", ".no_exist", COMMIT)
    os.makedirs(marker)
    open(os.path.join(marker, "generation_config.json"), "w").close()

    found = resolve_file("org/tiny", "generation_config.json", cache_dir=cached_repo, local_files_only=True,
                         required=False)
    assert found is None
    with pytest.raises(FileResolutionError, match="has no file 'generation_config.json'"):
        resolve_file("org/tiny", "generation_config.json", cache_dir=cached_repo, local_files_only=True)


def test_generation_config_is_read_from_the_cache(tmp_path, tiny_llama, fake_hub_cache):
    tiny_llama.generation_config.max_length = 7
    tiny_llama.save_pretrained(tmp_path / "model")
    fake_hub_cache("org/gen", tmp_path / "model", COMMIT)
    cache = fake_hub_cache.cache_dir

    model = AutoModelForCausalLM.from_pretrained("org/gen", cache_dir=cache, local_files_only=True)
    assert model.generation_config.max_length == 7
    standalone = GenerationConfig.from_pretrained("org/gen", cache_dir=cache, local_files_only=True)
    assert standalone.max_length == 7


def test_sharded_checkpoint_in_the_cache(tmp_path, tiny_llama, fake_hub_cache):
    tiny_llama.save_pretrained(tmp_path / "model", max_shard_size="20KB")
    index = json.loads((tmp_path / "model" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    fake_hub_cache("org/sharded", tmp_path / "model", COMMIT)

    model = AutoModelForCausalLM.from_pretrained("org/sharded", cache_dir=fake_hub_cache.cache_dir,
                                                 local_files_only=True)
    assert_same_weights(model, tiny_llama)


def test_subfolder_in_the_cache(tmp_path, tiny_llama, fake_hub_cache):
    tiny_llama.save_pretrained(tmp_path / "repo" / "llm")
    repo = tmp_path / "repo"
    snapshot = fake_hub_cache("org/multi", repo / "llm", COMMIT)
    # File the model under llm/ inside the snapshot, as a repository with subfolders is cached.
    os.makedirs(os.path.join(snapshot, "llm"))
    for name in os.listdir(repo / "llm"):
        os.replace(os.path.join(snapshot, name), os.path.join(snapshot, "llm", name))
    for name in os.listdir(os.path.join(snapshot, "llm")):  # relink one level deeper
        link = os.path.join(snapshot, "llm", name)
        if os.path.islink(link):
            target = os.readlink(link)
            os.remove(link)
            os.symlink(os.path.join("..", target), link)

    model = AutoModelForCausalLM.from_pretrained("org/multi", subfolder="llm", cache_dir=fake_hub_cache.cache_dir,
                                                 local_files_only=True)
    assert_same_weights(model, tiny_llama)


def test_resolve_file_in_a_local_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    assert resolve_file(tmp_path, "a.json", subfolder="sub") == str(tmp_path / "sub" / "a.json")
    assert resolve_file(tmp_path, "b.json", required=False) is None
    with pytest.raises(FileResolutionError) as caught:
        resolve_file(tmp_path, "b.json")
    assert str(tmp_path) in str(caught.value) and "'b.json'" in str(caught.value)


def test_a_path_that_is_neither_a_directory_nor_a_hub_id(tmp_path):
    missing = str(tmp_path / "does" / "not" / "exist")
    with pytest.raises(FileResolutionError, match="neither a local directory nor a valid hub model id"):
        AutoModelForCausalLM.from_pretrained(missing, local_files_only=True)


def test_hf_hub_cache_env_set_before_start(cached_repo):
    """huggingface_hub reads HF_HUB_CACHE when it is imported, so a process that starts with it set
    (the way users set it) finds models there without cache_dir."""
    code = textwrap.dedent(
        """
        import torchformers
        config = torchformers.AutoConfig.from_pretrained("org/tiny")
        print(type(config).__name__, config.hidden_size)
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": cached_repo, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["LlamaConfig", "32"]
