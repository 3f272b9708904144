"""torchformers works without the reference library, and ``import torchformers`` is lazy."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torchformers

SOURCE = Path(torchformers.__file__).parent

# Makes any import of the reference library fail, as on a machine without it installed.
BLOCK_REFERENCE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockReference(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "transformers" or name.startswith("transformers."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockReference())
    """
)


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_blocker_blocks(tmp_path):
    result = run_python(BLOCK_REFERENCE + "import transformers\n", tmp_path)
    assert result.returncode != 0 and "transformers is blocked" in result.stderr


def test_build_save_load_and_run_a_llama_without_the_reference(tmp_path):
    code = BLOCK_REFERENCE + textwrap.dedent(
        """
        import sys
        import torch
        import torchformers
        from torchformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)
        model = LlamaForCausalLM.from_config(config).eval()
        model.save_pretrained("tiny")
        model.save_pretrained("tiny-sharded", max_shard_size="20KB")
        assert type(AutoConfig.from_pretrained("tiny")) is LlamaConfig
        ids = torch.tensor([[1, 2, 3, 4]])
        for directory in ("tiny", "tiny-sharded"):
            loaded = AutoModelForCausalLM.from_pretrained(directory)
            with torch.no_grad():
                assert torch.equal(loaded(ids).logits, model(ids).logits)
        generated = loaded.generate(ids, max_new_tokens=3)
        assert generated.shape == (1, 7)
        assert not any(m == "transformers" or m.startswith("transformers.") for m in sys.modules)
        print("ok")
        """
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant):
            modules.add(str(node.args[0].value))
    return modules


def test_no_source_file_imports_the_reference():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(path.relative_to(SOURCE)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "transformers")
        for path in files
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_scan_finds_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import transformers.models\nfrom transformers import X\nimportlib.import_module('transformers')\n")
    assert imported_modules(sample) == {"transformers.models", "transformers"}


def test_import_torchformers_does_not_import_torch(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import torchformers
        heavy = sorted(m for m in ("torch", "safetensors", "huggingface_hub", "numpy", "transformers") if m in sys.modules)
        print(",".join(heavy) or "none")
        print(torchformers.__version__)
        import torchformers.errors
        print("torch" in sys.modules)
        torchformers.AutoConfig
        print("torch" in sys.modules)
        """
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["none", torchformers.__version__, "False", "True"]


def test_pipelines_work_without_the_reference(tmp_path, minilm_dir):
    code = BLOCK_REFERENCE + textwrap.dedent(
        f"""
        import importlib, shutil, sys
        import torch
        import torchformers
        from torchformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, pipeline
        from torchformers.pipelines import SUPPORTED_TASKS

        for task in SUPPORTED_TASKS.values():
            importlib.import_module("torchformers.pipelines." + task.module)
        torch.manual_seed(0)
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=64)
        for name, model_class in (("cls", BertForSequenceClassification), ("mlm", BertForMaskedLM)):
            model_class.from_config(config).save_pretrained(name)
            for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
                shutil.copy({minilm_dir!r} + "/" + file, name)
        labels = pipeline("text-classification", model="cls", device="cpu")(["good", "bad movie"], batch_size=2)
        assert [set(answer) for answer in labels] == [{{"label", "score"}}] * 2
        assert len(pipeline(model="mlm", device="cpu")("Paris is the [MASK] of France.")) == 5
        assert not any(m == "transformers" or m.startswith("transformers.") for m in sys.modules)
        print("ok")
        """
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_training_adapters_and_quantization_work_without_the_reference_or_peft(tmp_path):
    block_both = BLOCK_REFERENCE.replace(
        'name == "transformers" or name.startswith("transformers.")',
        'name.split(".")[0] in ("transformers", "peft")',
    )
    code = block_both + textwrap.dedent(
        """
        import sys
        import torch
        from torchformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
        from torchformers.peft import LoraConfig, get_peft_model
        from torchformers.quantization import WeightOnlyConfig, quantize

        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)
        model = get_peft_model(LlamaForCausalLM.from_config(config),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        rows = [{"input_ids": torch.arange(i, i + 8) % 64, "labels": torch.arange(i, i + 8) % 64} for i in range(8)]
        args = TrainingArguments(output_dir="out", max_steps=2, per_device_train_batch_size=4, report_to="none",
                                 disable_tqdm=True, save_strategy="no", learning_rate=1e-2)
        result = Trainer(model, args, train_dataset=rows).train()
        model.save_pretrained("adapter")
        quantized = quantize(LlamaForCausalLM.from_config(config).eval(), WeightOnlyConfig(bits=4, group_size=32))
        tokens = quantized.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
        assert result.global_step == 2 and tokens.shape == (1, 6)
        assert not any(m.split(".")[0] in ("transformers", "peft") for m in sys.modules)
        print("ok")
        """
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
