"""Encoder throughput: a BERT-base-shaped checkpoint, forward passes on batches of 32 x 128 tokens.

Three models run in the same process on the same checkpoint and inputs, in alternating
order after a warm-up pass each: the reference library in float32, torchformers in
float32, and torchformers loaded with ``dtype=torch.bfloat16``. Every pass is timed on its
own (``torch.inference_mode``); the table gives the median (and best) sequences per second
and the ratios to the reference's float32 throughput. torchformers' float32 output must
equal the reference's (max abs diff of the last hidden states < 1e-4, else exit status 1);
for bfloat16 the cosine of each sequence's mean-pooled embedding to the float32 one is
reported.

Usage: python benchmarks/bench_encoder.py [--reps 5] [--threads N] [--models-dir DIR] [--json]
Timings are for people, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import add_models_dir_argument, add_threads_and_json_arguments

MODEL_NAME = "bert-110m"
REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE_MODELS = REPO_ROOT.parent / "shared" / "reference" / "make_models.py"
BATCH, LENGTH = 32, 128
GOAL_FP32 = 1.1
GOAL_BF16 = 2.0
TOLERANCE = 1e-4
RUNS = ("reference fp32", "torchformers fp32", "torchformers bf16")

BUILD_CODE = """\
import json, sys, torch
from transformers import BertConfig, BertModel
config_kwargs, out = json.loads(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
BertModel(BertConfig(**config_kwargs)).eval().save_pretrained(out)
"""



def bert_config_kwargs() -> tuple[dict[str, Any], str]:
    """The bert-110m config of make_models.py (read from its source, not run): BertConfig()'s
    defaults, i.e. BERT-base. Weights are seeded with 0 here; make_models.py draws them after
    building two other models, so the values differ but the shape and the work are the same."""
    if MAKE_MODELS.is_file():
        for node in ast.walk(ast.parse(MAKE_MODELS.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == MODEL_NAME and isinstance(value, ast.Tuple):
                    call = value.elts[1]
                    if isinstance(call, ast.Call):
                        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}, str(MAKE_MODELS)
    return {}, "BertConfig() defaults (make_models.py not found)"


def ensure_model(models_dir: Path) -> Path:
    """Build the checkpoint with the reference library once; later runs reuse it."""
    path = models_dir / MODEL_NAME
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    kwargs, source = bert_config_kwargs()
    print(f"building {path} (config from {source}) ...", file=sys.stderr)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=models_dir, prefix=f".{MODEL_NAME}-")
    try:
        subprocess.run([sys.executable, "-c", BUILD_CODE, json.dumps(kwargs), tmp], check=True)
        shutil.rmtree(path, ignore_errors=True)  # an incomplete earlier build
        os.replace(tmp, path)  # a half-written model never looks cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_models(path: Path) -> dict[str, torch.nn.Module]:
    import transformers

    import torchformers

    transformers.logging.set_verbosity_error()
    return {
        RUNS[0]: transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval(),
        RUNS[1]: torchformers.AutoModel.from_pretrained(path, dtype=torch.float32),
        RUNS[2]: torchformers.AutoModel.from_pretrained(path, dtype=torch.bfloat16),
    }


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].float()
    return (hidden.float() * weights).sum(1) / weights.sum(1)


def benchmark(path: Path, reps: int, warmup: int) -> dict[str, Any]:
    models = load_models(path)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(0, models[RUNS[0]].config.vocab_size, (BATCH, LENGTH), generator=generator),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
    }
    times: dict[str, list[float]] = {run: [] for run in RUNS}
    with torch.inference_mode():
        outputs = {run: model(**inputs).last_hidden_state for run, model in models.items()}
        for _ in range(max(warmup - 1, 0)):
            for model in models.values():
                model(**inputs)
        for rep in range(reps):
            # Rotate the order so drifting machine noise hits every run alike.
            order = RUNS[rep % 3:] + RUNS[:rep % 3]
            for run in order:
                start = time.perf_counter()
                models[run](**inputs)
                times[run].append(time.perf_counter() - start)
    reference = outputs[RUNS[0]]
    fp32_diff = float((outputs[RUNS[1]] - reference).abs().max())
    pooled_fp32 = mean_pooled(reference, inputs["attention_mask"])
    pooled_bf16 = mean_pooled(outputs[RUNS[2]], inputs["attention_mask"])
    cosine = torch.nn.functional.cosine_similarity(pooled_bf16, pooled_fp32, dim=-1)
    summary = {
        run: {"median_s": statistics.median(t), "min_s": min(t), "seq_per_s": BATCH / statistics.median(t),
              "best_seq_per_s": BATCH / min(t)}
        for run, t in times.items()
    }
    base = summary[RUNS[0]]
    ratios = {run: {"median": base["median_s"] / s["median_s"], "best": base["min_s"] / s["min_s"]}
              for run, s in summary.items()}
    return {
        "model": str(path), "batch": BATCH, "length": LENGTH, "reps": reps, "threads": torch.get_num_threads(),
        "times_s": times, "summary": summary, "ratios_to_reference_fp32": ratios,
        "fp32_last_hidden_max_abs_diff": fp32_diff,
        "bf16_last_hidden_max_abs_diff": float((outputs[RUNS[2]].float() - reference).abs().max()),
        "bf16_embedding_cosine_min": float(cosine.min()), "bf16_embedding_cosine_mean": float(cosine.mean()),
        "goal_fp32_ratio": GOAL_FP32, "goal_bf16_ratio": GOAL_BF16,
    }


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['model']}  batch {results['batch']} x {results['length']} tokens, forward only, "
        f"{results['threads']} threads, {results['reps']} timed passes per run, median (best)",
        f"{'':22}{'s / batch':>18}{'seq / s':>18}{'vs reference fp32':>20}",
    ]
    for run in RUNS:
        s, r = results["summary"][run], results["ratios_to_reference_fp32"][run]
        lines.append(
            f"{run:22}{s['median_s']:>9.3f} ({s['min_s']:.3f}){s['seq_per_s']:>11.2f} ({s['best_seq_per_s']:.2f})"
            f"{r['median']:>12.2f}x ({r['best']:.2f}x)"
        )
    lines.append(f"fp32 last hidden state max abs diff to reference: {results['fp32_last_hidden_max_abs_diff']:.2e} "
                 f"(must be < {TOLERANCE:g})")
    lines.append(f"bf16 mean-pooled embedding cosine to reference fp32: min {results['bf16_embedding_cosine_min']:.6f}, "
                 f"mean {results['bf16_embedding_cosine_mean']:.6f} (last hidden max abs diff "
                 f"{results['bf16_last_hidden_max_abs_diff']:.3f})")
    ratios = results["ratios_to_reference_fp32"]
    fp32, bf16 = ratios[RUNS[1]], ratios[RUNS[2]]
    lines.append(f"torchformers fp32: {fp32['median']:.2f}x (best {fp32['best']:.2f}x) the reference "
                 f"(goal >= {GOAL_FP32}x); torchformers bf16: {bf16['median']:.2f}x (best {bf16['best']:.2f}x) the "
                 f"reference's fp32 (goal >= {GOAL_BF16}x)")
    lines.append("best-of ratios are the steadier figure when other processes share the CPU")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--reps", type=int, default=5, help="timed passes per run (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per run first (default 1)")
    add_threads_and_json_arguments(parser, "torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = benchmark(ensure_model(args.models_dir), args.reps, max(args.warmup, 1))
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    if results["fp32_last_hidden_max_abs_diff"] >= TOLERANCE:
        print("error: the float32 outputs differ; the timings do not compare equal work.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
