from __future__ import annotations

import torch

import torchformers


def test_env_names_versions_devices_and_threads(run_cli):
    result = run_cli(["env"])
    assert result.status == 0
    lines = result.out.splitlines()
    assert lines[0] == f"torchformers {torchformers.__version__}"
    for package in ("python", "torch", "tokenizers", "safetensors", "huggingface_hub"):
        assert any(line.startswith(package + " ") for line in lines), package
    assert f"torch {torch.__version__}" in lines
    assert f"torch threads {torch.get_num_threads()}" in result.out
    assert any(line.startswith("cuda") for line in lines)
