"""Time greedy decoding of the llama-135m shape in float32 and with int8 and int4 weights.

The checkpoint is the one ``bench_generate.py`` builds (random weights, the config of
``../shared/reference/make_models.py``). Each measurement runs in a fresh child process
that loads it with ``quantization_config`` (activations stay float32), warms up with an
8-token generation and times one greedy generation of 128 new tokens after 32 random
prompt tokens at batch 1. Variants alternate their order each round; the table shows
medians, tokens/s and weight memory (bytes of the parameters and buffers the model holds)
with their ratios to float32, and how many of the 128 greedy tokens equal float32's.

Variants: ``int8`` and ``int4`` (group 64) quantize every linear layer but the output
layer, as the default ``WeightOnlyConfig`` does; ``int4+head`` quantizes the tied output
layer too (``modules_to_not_convert=[]``), which unties it from the float32 embedding: more
memory, less to read per step.

Usage: python benchmarks/bench_quant.py [--reps 3] [--models-dir DIR] [--threads N] [--json]
Timings are for people, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import WEIGHT_BYTES_CODE, add_models_dir_argument, add_threads_and_json_arguments  # noqa: E402
from bench_generate import child_env, ensure_models  # noqa: E402

VARIANTS: dict[str, dict[str, Any] | None] = {
    "float32": None,
    "int8": {"bits": 8},
    "int4": {"bits": 4, "group_size": 64},
    "int4+head": {"bits": 4, "group_size": 64, "modules_to_not_convert": []},
}
PROMPT_TOKENS = 32
NEW_TOKENS = 128
RESULT_PREFIX = "BENCH_QUANT_RESULT "

CHILD_CODE = WEIGHT_BYTES_CODE + f"""\
import json, sys, time
path, quantization = sys.argv[1], json.loads(sys.argv[2])
import torch
import torchformers
model = torchformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=quantization)
vocab = model.config.vocab_size
with torch.no_grad():
    torch.manual_seed(0)
    model.generate(torch.randint(0, vocab, (1, {PROMPT_TOKENS})), max_new_tokens=8, do_sample=False)
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (1, {PROMPT_TOKENS}))
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens={NEW_TOKENS},
                         min_new_tokens={NEW_TOKENS}, do_sample=False)
    seconds = time.perf_counter() - start
print({RESULT_PREFIX!r} + json.dumps({{"tokens_per_s": {NEW_TOKENS} / seconds, "weight_bytes": weight_bytes(model),
                                      "tokens": out[0, {PROMPT_TOKENS}:].tolist(),
                                      "threads": torch.get_num_threads()}}), flush=True)
"""


def run_child(path: Path, quantization: dict[str, Any] | None, threads: int | None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD_CODE, str(path), json.dumps(quantization)],
                          capture_output=True, text=True, env=child_env(threads))
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"child failed (exit {proc.returncode}) for {quantization}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def benchmark(path: Path, reps: int, threads: int | None) -> dict[str, Any]:
    speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    results: dict[str, dict[str, Any]] = {}
    for rep in range(reps):
        order = list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            result = run_child(path, VARIANTS[name], threads)
            speeds[name].append(result["tokens_per_s"])
            results[name] = result
            print(f"  round {rep + 1}: {name:10} {result['tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
    baseline = results["float32"]
    base_speed = statistics.median(speeds["float32"])
    rows = []
    for name in VARIANTS:
        speed = statistics.median(speeds[name])
        same = sum(a == b for a, b in zip(results[name]["tokens"], baseline["tokens"], strict=True))
        rows.append({"variant": name, "config": VARIANTS[name], "tokens_per_s": speed, "runs": speeds[name],
                     "speed_ratio": speed / base_speed, "weight_mb": results[name]["weight_bytes"] / 2**20,
                     "memory_ratio": results[name]["weight_bytes"] / baseline["weight_bytes"],
                     "same_tokens": same})
    return {"reps": reps, "threads": baseline["threads"], "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": NEW_TOKENS, "rows": rows}


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"llama-135m greedy decode, batch 1, float32 activations, {results['prompt_tokens']} prompt + "
        f"{results['new_tokens']} new tokens, {results['threads']} threads, median of {results['reps']} runs",
        f"{'':12}{'tokens/s':>10}{'vs fp32':>9}{'weights':>11}{'vs fp32':>9}  tokens equal to fp32's",
    ]
    for row in results["rows"]:
        lines.append(f"{row['variant']:12}{row['tokens_per_s']:>10.1f}{row['speed_ratio']:>8.2f}x"
                     f"{row['weight_mb']:>8.0f} MB{row['memory_ratio']:>8.2f}x  "
                     f"{row['same_tokens']}/{results['new_tokens']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--reps", type=int, default=3, help="timed child processes per variant (default 3)")
    add_threads_and_json_arguments(parser, "OMP/MKL threads in the children (default: torch's)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    path = ensure_models(args.models_dir)["llama-135m"]
    results = benchmark(path, args.reps, args.threads)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
