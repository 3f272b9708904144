"""Time greedy decoding with torchformers and with the reference library on the same checkpoints.

Shapes: llama-135m (SmolLM-135M) at batch 1 and 8 and gpt2-124m at batch 1, float32, 32
random prompt tokens, 128 new tokens (``min_new_tokens=128`` so no run stops early), as in
``../shared/reference/hf_bench.py``. Each measurement runs in a fresh child process that
loads the model, warms up with an 8-token generation and times one 128-token generation;
the libraries alternate (which one goes first flips every round) and the table shows
medians. Both libraries must produce the same tokens, so they do equal work.

The batch-1 rows also show tokens/s as a share of the memory-bandwidth limit: every decode
step reads all weights once, so tokens/s cannot exceed (read bandwidth) / (weight bytes).
The bandwidth is measured here by summing a 1 GiB float32 tensor (a pure streaming read).

``--compiled`` adds torchformers with compiled decode steps (``cache_implementation="static"``
and ``compile_config=CompileConfig()``): its children warm up once per batch size, which
compiles (a minute or two per shape on two cores, reported as ``compile s``), then time the
same 128-token generation.

Usage: python benchmarks/bench_generate.py [--reps 3] [--models-dir DIR] [--threads N] [--compiled] [--json]
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

from bench_common import add_models_dir_argument, add_threads_and_json_arguments

LIBRARIES = ("torchformers", "transformers")
COMPILED = "torchformers-compiled"
REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE_MODELS = REPO_ROOT.parent / "shared" / "reference" / "make_models.py"
# make_models.py's configs, used when that script is not around.
LLAMA_135M_CONFIG: dict[str, Any] = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
    rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
)
CASES = (("llama-135m", 1), ("llama-135m", 8), ("gpt2-124m", 1))
PROMPT_TOKENS = 32
NEW_TOKENS = 128
GOALS = {("llama-135m", 1): 2.5, ("llama-135m", 8): 2.0, ("gpt2-124m", 1): 2.0}
RESULT_PREFIX = "BENCH_GENERATE_RESULT "

# Runs in the child: load, warm up, then time each batch size once.
CHILD_CODE = f"""\
import json, sys, time
library, path, batches = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3].split(",")]
import torch
if library.startswith("torchformers"):
    import torchformers as lib
else:
    import transformers as lib
    lib.logging.set_verbosity_error()
options = {{}}
if library == {COMPILED!r}:
    options = dict(cache_implementation="static", compile_config=lib.CompileConfig())
model = lib.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
vocab = model.config.vocab_size
results = {{"threads": torch.get_num_threads()}}
with torch.no_grad():
    torch.manual_seed(0)
    start = time.perf_counter()
    # Compiled steps are compiled for each batch size (a batch of 1 is a special shape): warm up each.
    for batch in (batches if options else [1]):
        model.generate(torch.randint(0, vocab, (batch, {PROMPT_TOKENS})), max_new_tokens=8, do_sample=False,
                       **options)
    results["warm_up_seconds"] = time.perf_counter() - start
    for batch in batches:
        torch.manual_seed(batch)
        ids = torch.randint(0, vocab, (batch, {PROMPT_TOKENS}))
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens={NEW_TOKENS},
                             min_new_tokens={NEW_TOKENS}, do_sample=False, **options)
        seconds = time.perf_counter() - start
        results[str(batch)] = {{"seconds": seconds, "tokens_per_s": batch * {NEW_TOKENS} / seconds,
                               "tokens": out[:, {PROMPT_TOKENS}:].tolist()}}
print({RESULT_PREFIX!r} + json.dumps(results), flush=True)
"""

BANDWIDTH_CODE = """\
import json, time, torch
data = torch.ones(256 * 1024 * 1024)  # 1 GiB of float32
data.sum()
times = []
for _ in range(5):
    start = time.perf_counter()
    data.sum()
    times.append(time.perf_counter() - start)
print(json.dumps({"read_gb_s": data.numel() * 4 / min(times) / 1e9, "threads": torch.get_num_threads()}))
"""

BUILD_CODE = """\
import json, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
llama_kwargs, out_dir, names = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
# make_models.py seeds once and builds llama-135m, then gpt2-124m: replaying that order gives its weights.
torch.manual_seed(0)
llama = LlamaForCausalLM(LlamaConfig(**llama_kwargs)).eval()
if "llama-135m" in names:
    llama.save_pretrained(f"{out_dir}/llama-135m")
del llama
if "gpt2-124m" in names:
    GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(f"{out_dir}/gpt2-124m")
"""



def llama_config_kwargs() -> dict[str, Any]:
    """The llama-135m config of make_models.py (read from its source, not run), else the inline copy."""
    if MAKE_MODELS.is_file():
        for node in ast.walk(ast.parse(MAKE_MODELS.read_text())):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "llama-135m" and isinstance(value, ast.Tuple):
                        call = value.elts[1]
                        if isinstance(call, ast.Call):
                            return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    return dict(LLAMA_135M_CONFIG)


def ensure_models(models_dir: Path) -> dict[str, Path]:
    """Build the checkpoints with the reference library once; later runs reuse them."""
    paths = {name: models_dir / name for name in ("llama-135m", "gpt2-124m")}
    missing = [name for name, path in paths.items() if not (path / "model.safetensors").is_file()]
    if missing:
        print(f"building {missing} in {models_dir} ...", file=sys.stderr)
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=".build-"))
        try:
            subprocess.run([sys.executable, "-c", BUILD_CODE, json.dumps(llama_config_kwargs()), str(tmp),
                            ",".join(missing)], check=True)
            for name in missing:
                shutil.rmtree(paths[name], ignore_errors=True)
                os.replace(tmp / name, paths[name])  # a half-written model never looks cached
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_child(library: str, path: Path, batches: list[int], threads: int | None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_CODE, library, str(path), ",".join(map(str, batches))],
        capture_output=True, text=True, env=child_env(threads),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{library} child failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def measure_bandwidth(threads: int | None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", BANDWIDTH_CODE], capture_output=True, text=True,
                          env=child_env(threads), check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def weight_bytes(path: Path) -> int:
    """Bytes a decode step reads: every stored tensor once (tied weights are stored once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
            tensor = handle.get_slice(name)
            shape = tensor.get_shape()
            count = 1
            for size in shape:
                count *= size
            total += count * 4  # float32 in the benchmark
    return total


def build_kernels() -> None:
    """Build torchformers' batch decode kernel into its cache before timing: the first batch generation
    on a machine builds it (once), which is not decoding time."""
    from torchformers.nn import rows_product

    start = time.perf_counter()
    available = rows_product.available()
    print(f"batch decode kernel: {'ready' if available else 'not available here (oneDNN packing)'} "
          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)


def benchmark(paths: dict[str, Path], reps: int, threads: int | None, compiled: bool = False) -> dict[str, Any]:
    libraries = (*LIBRARIES, COMPILED) if compiled else LIBRARIES
    warm_up: dict[str, list[float]] = {}
    per_model: dict[str, list[int]] = {}
    for model, batch in CASES:
        per_model.setdefault(model, []).append(batch)
    runs: dict[tuple[str, str, int], list[float]] = {}
    tokens: dict[tuple[str, str, int], list] = {}
    for rep in range(reps):
        for model, batches in per_model.items():
            order = libraries if rep % 2 == 0 else libraries[::-1]
            for library in order:
                result = run_child(library, paths[model], batches, threads)
                if library == COMPILED:
                    warm_up.setdefault(model, []).append(result["warm_up_seconds"])
                for batch in batches:
                    runs.setdefault((library, model, batch), []).append(result[str(batch)]["tokens_per_s"])
                    tokens[(library, model, batch)] = result[str(batch)]["tokens"]
                print(f"  round {rep + 1}: {library:12} {model} "
                      + " ".join(f"bs{b} {result[str(b)]['tokens_per_s']:.1f} tok/s" for b in batches),
                      file=sys.stderr, flush=True)
    bandwidth = measure_bandwidth(threads)
    rows = []
    for model, batch in CASES:
        ours = statistics.median(runs[("torchformers", model, batch)])
        theirs = statistics.median(runs[("transformers", model, batch)])
        row = {
            "model": model, "batch": batch, "torchformers_tok_s": ours, "transformers_tok_s": theirs,
            "speedup": ours / theirs, "goal": GOALS[(model, batch)],
            "same_tokens": tokens[("torchformers", model, batch)] == tokens[("transformers", model, batch)],
            "torchformers_runs": runs[("torchformers", model, batch)],
            "transformers_runs": runs[("transformers", model, batch)],
        }
        if compiled:
            fastest = statistics.median(runs[(COMPILED, model, batch)])
            row.update(compiled_tok_s=fastest, compiled_speedup=fastest / theirs,
                       compiled_same_tokens=tokens[(COMPILED, model, batch)] == tokens[("transformers", model, batch)],
                       compiled_warm_up_s=statistics.median(warm_up[model]), compiled_runs=runs[(COMPILED, model, batch)])
        if batch == 1:
            limit = bandwidth["read_gb_s"] * 1e9 / weight_bytes(paths[model])
            row.update(bandwidth_limit_tok_s=limit, torchformers_share=ours / limit, transformers_share=theirs / limit)
        rows.append(row)
    return {"reps": reps, "threads": bandwidth["threads"], "read_gb_s": bandwidth["read_gb_s"],
            "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "rows": rows}


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"greedy decode, float32, {results['prompt_tokens']} prompt + {results['new_tokens']} new tokens, "
        f"{results['threads']} threads, median of {results['reps']} runs per library; "
        f"read bandwidth {results['read_gb_s']:.1f} GB/s",
        f"{'':18}{'torchformers':>14}{'transformers':>14}{'speedup':>9}{'goal':>7}{'bw limit':>10}"
        f"{'tf share':>10}{'ref share':>10}  same tokens",
    ]
    for row in results["rows"]:
        limit = f"{row['bandwidth_limit_tok_s']:.1f}" if "bandwidth_limit_tok_s" in row else "-"
        shares = (f"{row['torchformers_share']:.0%}", f"{row['transformers_share']:.0%}") \
            if "torchformers_share" in row else ("-", "-")
        lines.append(
            f"{row['model'] + ' bs' + str(row['batch']):18}{row['torchformers_tok_s']:>10.1f} t/s"
            f"{row['transformers_tok_s']:>10.1f} t/s{row['speedup']:>8.2f}x{row['goal']:>6.1f}x{limit:>10}"
            f"{shares[0]:>10}{shares[1]:>10}  {'yes' if row['same_tokens'] else 'NO'}"
        )
    lines.append("speedup: torchformers / transformers tokens/s; bw limit: read bandwidth / weight bytes (batch 1)")
    compiled_rows = [row for row in results["rows"] if "compiled_tok_s" in row]
    if compiled_rows:
        lines.append("torchformers with compiled decode steps (static cache, CompileConfig()):")
        lines.append(f"{'':18}{'compiled':>14}{'transformers':>14}{'speedup':>9}{'warm-up s':>11}  same tokens")
        for row in compiled_rows:
            lines.append(
                f"{row['model'] + ' bs' + str(row['batch']):18}{row['compiled_tok_s']:>10.1f} t/s"
                f"{row['transformers_tok_s']:>10.1f} t/s{row['compiled_speedup']:>8.2f}x"
                f"{row['compiled_warm_up_s']:>11.0f}  {'yes' if row['compiled_same_tokens'] else 'NO'}"
            )
        lines.append("warm-up s: the model's warm-up generations, which compile (once per batch size)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--reps", type=int, default=3, help="timed child processes per library and model (default 3)")
    parser.add_argument("--compiled", action="store_true",
                        help="also time torchformers with compiled decode steps (static cache, CompileConfig())")
    add_threads_and_json_arguments(parser, "OMP/MKL threads in the children (default: torch's)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    paths = ensure_models(args.models_dir)
    build_kernels()
    results = benchmark(paths, args.reps, args.threads, args.compiled)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    if not all(row["same_tokens"] and row.get("compiled_same_tokens", True) for row in results["rows"]):
        print("error: the libraries generated different tokens; the timings do not compare equal work.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
