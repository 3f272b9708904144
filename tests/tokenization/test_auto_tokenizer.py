"""AutoTokenizer's class choice and loading paths, and save_pretrained round trips with the reference library."""

from __future__ import annotations

import json
import shutil

import pytest
from tokenizer_cases import VARIED_TEXTS

import torchformers
from torchformers import (
    AutoTokenizer,
    BertTokenizer,
    BertTokenizerFast,
    GPT2Tokenizer,
    GPT2TokenizerFast,
    LlamaTokenizer,
    LlamaTokenizerFast,
    PreTrainedTokenizerFast,
    T5Tokenizer,
    T5TokenizerFast,
)
from torchformers.errors import RemoteCodeError, TokenizerError, TokenizerFileError, UnsupportedArgumentError


def same_outputs(ours, theirs, compare) -> None:
    for text in VARIED_TEXTS:
        assert compare(ours, theirs, text, "a pair") is None


def test_class_choice(minilm_dir, minilm_slow_dir, bpe_dir, llama_dir, t5_dir):
    assert type(AutoTokenizer.from_pretrained(minilm_dir)) is BertTokenizerFast
    assert type(AutoTokenizer.from_pretrained(minilm_dir, use_fast=False)) is BertTokenizer
    assert type(AutoTokenizer.from_pretrained(minilm_slow_dir)) is BertTokenizer
    assert type(AutoTokenizer.from_pretrained(bpe_dir)) is GPT2Tokenizer
    assert type(AutoTokenizer.from_pretrained(llama_dir)) is LlamaTokenizer
    assert type(AutoTokenizer.from_pretrained(t5_dir)) is T5Tokenizer
    assert type(GPT2TokenizerFast.from_pretrained(bpe_dir)) is GPT2TokenizerFast
    assert type(LlamaTokenizerFast.from_pretrained(llama_dir)) is LlamaTokenizerFast
    assert type(T5TokenizerFast.from_pretrained(t5_dir)) is T5TokenizerFast
    assert torchformers.AutoTokenizer is AutoTokenizer


def test_model_type_and_tokenizer_json_fallbacks(minilm_dir, tmp_path):
    by_model_type = tmp_path / "by-model-type"
    by_model_type.mkdir()
    for name in ("tokenizer.json", "config.json", "vocab.txt"):
        shutil.copy(f"{minilm_dir}/{name}", by_model_type / name)
    assert type(AutoTokenizer.from_pretrained(by_model_type)) is BertTokenizerFast
    assert type(AutoTokenizer.from_pretrained(by_model_type, use_fast=False)) is BertTokenizer
    generic = tmp_path / "generic"
    generic.mkdir()
    shutil.copy(f"{minilm_dir}/tokenizer.json", generic / "tokenizer.json")
    (generic / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "SomeNewTokenizer"}))
    assert type(AutoTokenizer.from_pretrained(generic)) is PreTrainedTokenizerFast
    assert type(AutoTokenizer.from_pretrained(generic / "tokenizer.json")) is PreTrainedTokenizerFast
    (generic / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="SomeNewTokenizer"):
        AutoTokenizer.from_pretrained(generic)


def test_hub_cache(minilm_dir, fake_hub_cache, monkeypatch, reference, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
        shutil.copy(f"{minilm_dir}/{name}", files / name)
    snapshot = fake_hub_cache("org/minilm", files, "0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained("org/minilm", cache_dir=fake_hub_cache.cache_dir)
    assert type(tokenizer) is BertTokenizerFast and tokenizer.name_or_path == "org/minilm"
    assert tokenizer("Hello")["input_ids"] == reference.from_pretrained(snapshot)("Hello")["input_ids"]
    slow = AutoTokenizer.from_pretrained("org/minilm", cache_dir=fake_hub_cache.cache_dir, use_fast=False)
    assert type(slow) is BertTokenizer


def test_refusals_and_bad_files(minilm_dir, tmp_path):
    with pytest.raises(RemoteCodeError):
        AutoTokenizer.from_pretrained(minilm_dir, trust_remote_code=True)
    with pytest.raises(RemoteCodeError):
        BertTokenizerFast.from_pretrained(minilm_dir, trust_remote_code=True)
    with pytest.raises(UnsupportedArgumentError, match="do_lower_cas"):
        BertTokenizerFast.from_pretrained(minilm_dir, do_lower_cas=False)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer",')
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    with pytest.raises(TokenizerFileError, match="tokenizer.json"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(TokenizerFileError, match="vocab.txt"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"auto_map": {"AutoTokenizer": ["x.Tok", null]}}')
    with pytest.raises(RemoteCodeError):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(OSError):
        AutoTokenizer()


@pytest.mark.parametrize("fixture,classes", [
    ("minilm_dir", (BertTokenizerFast, BertTokenizer)),
    ("bpe_dir", (GPT2TokenizerFast, GPT2Tokenizer)),
    ("llama_dir", (LlamaTokenizerFast, LlamaTokenizer)),
    ("t5_dir", (T5TokenizerFast, T5Tokenizer)),
])
def test_save_pretrained_round_trips(fixture, classes, request, tmp_path, reference, compare):
    source = request.getfixturevalue(fixture)
    original = reference.from_pretrained(source)
    for index, cls in enumerate(classes):
        ours = cls.from_pretrained(source, model_max_length=77)
        ours.add_tokens(["brandnewtoken"])
        ours.add_special_tokens({"additional_special_tokens": ["<special_x>"]})
        saved = tmp_path / f"ours-{index}"
        files = ours.save_pretrained(saved)
        assert all(__import__("os").path.isfile(f) for f in files)
        theirs = reference.from_pretrained(saved)
        assert theirs.model_max_length == 77
        same_outputs(ours, theirs, compare)
        assert compare(ours, theirs, "x brandnewtoken<special_x> y") is None
        assert compare(cls.from_pretrained(saved), theirs, "x brandnewtoken<special_x> y") is None
        assert compare(AutoTokenizer.from_pretrained(saved), theirs, VARIED_TEXTS[3]) is None
    saved = tmp_path / "theirs"
    original.save_pretrained(saved)
    for cls in classes:
        if cls in (LlamaTokenizer, T5Tokenizer):  # the reference saves no tokenizer.model to read
            with pytest.raises(TokenizerError, match="tokenizer.json cannot stand in"):
                cls.from_pretrained(saved)
            continue
        same_outputs(cls.from_pretrained(saved), original, compare)
    same_outputs(AutoTokenizer.from_pretrained(saved), original, compare)


def test_inconsistent_added_tokens_with_tokenizer_json(minilm_dir, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{minilm_dir}/{name}", tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"7592": {"content": "[NEW]", "special": True}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="disagree"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_tokenizers_import_neither_torch_nor_the_reference(minilm_dir):
    import subprocess
    import sys

    code = (
        "import sys, torchformers\n"
        f"tok = torchformers.AutoTokenizer.from_pretrained({str(minilm_dir)!r})\n"
        "assert tok('hi')['input_ids'] == [101, 7632, 102]\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
