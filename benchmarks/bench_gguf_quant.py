"""Greedy decoding of SmolLM2-135M-Instruct (Q4_1 GGUF) kept quantized, against llama.cpp on the same file.

Each measurement is a fresh process on the same file and the same prompt tokens (the chat
template applied by torchformers' tokenizer): llama.cpp through ``llama-cpp-python`` (the
``bench`` extra; ``n_threads`` = the thread count, greedy sampling), and torchformers loaded
with ``from_pretrained(dir, gguf_file=..., dequantize=False)``: Q4_1 layers as int4 (groups
of 32) and the tied output layer as int8 from the Q8_0 embedding. Variants:

- ``int4 fp32``: float32 activations (the default dtype of GGUF loads), cast to bfloat16
  around each quantized product;
- ``int4 bf16``: ``dtype=torch.bfloat16``, so the whole model runs in bfloat16;
- ``dequantized``: the file dequantized to float32, as the reference library loads it;
- ``int4 compiled`` and ``int4 bf16 compiled``: the int4 variants decoding through compiled
  steps (``cache_implementation="static"`` with ``compile_config=CompileConfig()``); the
  warm-up call compiles, and its time is reported in the ``warm-up`` column;
- ``int4 compiled unguarded``: ``int4 compiled`` with ``CompileConfig(mode=None,
  options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe})``: each
  compiled step skips checking the ~7,000 guards dynamo sets on the model's modules (about
  1.3 ms of a 12 ms step here). Unsafe by torch's own name: only for a model that does not
  change between calls (no new weights, adapters, casts or moves), since nothing would
  notice that the compiled step no longer fits it;
- ``int4 compiled fingerprint`` and ``int4 int8-act compiled fingerprint``: compiled with
  ``CompileConfig(model_guards="fingerprint")``: the module guards are dropped as in the
  unguarded variant, and a fingerprint of the model is compared once per ``generate()`` call
  instead (a changed model gets a new compiled step);
- ``int4 int8-act`` and its compiled variants: ``quantization_config={"activations": "int8"}``:
  each product quantizes its input rows to int8 in blocks of 32 and multiplies integer codes
  (torchformers' C kernel with AVX-512 VNNI), as llama.cpp does.

Decode speed is tokens per second at batch 1 over the steps after the first new token (each
token is timestamped as it arrives), with no early stop. The table shows medians and the
best run, the ratio of the median to llama.cpp's, and the weight memory (llama.cpp's own
count of its model bytes; for torchformers the parameters and buffers the model holds).

Quality: one more process decodes greedily with the dequantized model, then feeds those tokens
to the quantized one (teacher forcing) and reports how often its top-1 token agrees, and the
largest logit difference; and how many of each runner's greedy tokens equal the dequantized
model's before they first differ.

Usage: python benchmarks/bench_gguf_quant.py [--reps 3] [--threads 2] [--new-tokens 128]
       [--agreement-tokens 300] [--variants "int4 fp32,int4 compiled"] [--json]
Timings are for people, never for pass/fail tests. On a shared machine, run it when it is
quiet: two threads that share two cores with another process wait on each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench_common import WEIGHT_BYTES_CODE

PACKAGED_NAME = "SmolLM2-135M-Instruct-Q4_1-GGUF"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
LLAMA_CPP = "llama.cpp"
# name -> from_pretrained keywords (dtype by name), and under "generate" extra generate() keywords
# (a "compile_config" dict becomes a CompileConfig).
_COMPILED = {"cache_implementation": "static", "compile_config": {}}
# The same, with dynamo's guards on the model's modules dropped (named here, looked up in torch.compiler).
_COMPILED_UNGUARDED = {"cache_implementation": "static",
                       "compile_config": {"mode": None,
                                          "options": {"guard_filter_fn": "skip_guard_on_all_nn_modules_unsafe"}}}
# The model's guards replaced by a fingerprint checked once per generate() call (safe between calls).
_COMPILED_FINGERPRINT = {"cache_implementation": "static", "compile_config": {"model_guards": "fingerprint"}}
VARIANTS: dict[str, dict[str, Any]] = {
    "int4 fp32": {"dequantize": False},
    "int4 bf16": {"dequantize": False, "dtype": "bfloat16"},
    "dequantized": {},
    "int4 compiled": {"dequantize": False, "generate": _COMPILED},
    "int4 bf16 compiled": {"dequantize": False, "dtype": "bfloat16", "generate": _COMPILED},
    "int4 compiled unguarded": {"dequantize": False, "generate": _COMPILED_UNGUARDED},
    "int4 int8-act": {"dequantize": False, "quantization_config": {"activations": "int8"}},
    "int4 int8-act compiled": {"dequantize": False, "quantization_config": {"activations": "int8"},
                               "generate": _COMPILED},
    "int4 int8-act compiled unguarded": {"dequantize": False, "quantization_config": {"activations": "int8"},
                                         "generate": _COMPILED_UNGUARDED},
    "int4 compiled fingerprint": {"dequantize": False, "generate": _COMPILED_FINGERPRINT},
    "int4 int8-act compiled fingerprint": {"dequantize": False, "quantization_config": {"activations": "int8"},
                                           "generate": _COMPILED_FINGERPRINT},
}
DEFAULT_VARIANTS = ("int4 fp32", "int4 bf16", "int4 int8-act", "dequantized")
RESULT_PREFIX = "BENCH_GGUF_QUANT_RESULT "

# Shared by the children: the prompt's token ids, from torchformers' tokenizer.
PROMPT_CODE = f"""\
import json, sys, time
directory, threads, new_tokens, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
import torchformers
tokenizer = torchformers.AutoTokenizer.from_pretrained(directory, gguf_file={GGUF_FILE!r})
prompt = tokenizer.apply_chat_template([{{"role": "user", "content": {PROMPT!r}}}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True).input_ids
"""

LLAMA_CPP_CODE = PROMPT_CODE + f"""\
import os
import llama_cpp
llm = llama_cpp.Llama(os.path.join(directory, {GGUF_FILE!r}), n_threads=threads, n_threads_batch=threads,
                      n_ctx=prompt.shape[1] + new_tokens + 16, verbose=False)
ids = prompt[0].tolist()

def decode(count):
    times, tokens = [], []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        times.append(time.perf_counter())
        tokens.append(token)
        if len(tokens) == count:
            return times, tokens

started = time.perf_counter()
decode(8)  # warm-up
warm_up_s = time.perf_counter() - started
times, tokens = decode(new_tokens)
print({RESULT_PREFIX!r} + json.dumps({{
    "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0]), "tokens": tokens, "threads": threads,
    "weight_bytes": llama_cpp.llama_model_size(llm.model), "warm_up_s": warm_up_s}}), flush=True)
"""

TORCHFORMERS_CODE = PROMPT_CODE + WEIGHT_BYTES_CODE + f"""\
import torch
torch.set_num_threads(threads)
if "dtype" in spec:
    spec["dtype"] = getattr(torch, spec["dtype"])
options = spec.pop("generate", {{}})
if "compile_config" in options:
    guard_filter = options["compile_config"].get("options", {{}}).get("guard_filter_fn")
    if guard_filter is not None:
        options["compile_config"]["options"]["guard_filter_fn"] = getattr(torch.compiler, guard_filter)
    options["compile_config"] = torchformers.CompileConfig(**options["compile_config"])
model = torchformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file={GGUF_FILE!r}, **spec)

import types
stamps = []  # a streamer's put() gets the prompt, then each new token
streamer = types.SimpleNamespace(put=lambda value: stamps.append(time.perf_counter()), end=lambda: None)
with torch.inference_mode():
    started = time.perf_counter()
    model.generate(prompt, max_new_tokens=8, do_sample=False, **options)  # warm-up (and compilation)
    warm_up_s = time.perf_counter() - started
    output = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            streamer=streamer, **options)
times = stamps[1:]
print({RESULT_PREFIX!r} + json.dumps({{
    "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
    "tokens": output[0, prompt.shape[1]:].tolist(), "threads": torch.get_num_threads(),
    "weight_bytes": weight_bytes(model), "warm_up_s": warm_up_s}}), flush=True)
"""

AGREEMENT_CODE = PROMPT_CODE + f"""\
import torch
torch.set_num_threads(threads)
load = torchformers.AutoModelForCausalLM.from_pretrained
dequantized = load(directory, gguf_file={GGUF_FILE!r})
results = {{}}
with torch.inference_mode():
    tokens = dequantized.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    start = prompt.shape[1] - 1
    expected = dequantized(tokens).logits[0, start:-1]
    for name, extra in (("int4 fp32", {{}}), ("int4 bf16", {{"dtype": torch.bfloat16}}),
                        ("int4 int8-act", {{"quantization_config": {{"activations": "int8"}}}})):
        quantized = load(directory, gguf_file={GGUF_FILE!r}, dequantize=False, **extra)
        logits = quantized(tokens).logits[0, start:-1].float()
        results[name] = {{"top1_agreement": (logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
                          "max_logit_diff": (logits - expected).abs().max().item(),
                          "logit_scale": expected.abs().max().item()}}
print({RESULT_PREFIX!r} + json.dumps({{"steps": new_tokens, "reference_tokens": tokens[0, prompt.shape[1]:].tolist(),
                                       "variants": results}}), flush=True)
"""


def run_child(code: str, directory: str, threads: int, new_tokens: int, spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code, directory, str(threads), str(new_tokens), json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"child failed (exit {proc.returncode}) for {spec}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_runner(name: str, directory: str, threads: int, new_tokens: int) -> dict[str, Any]:
    if name == LLAMA_CPP:
        return run_child(LLAMA_CPP_CODE, directory, threads, new_tokens, {})
    return run_child(TORCHFORMERS_CODE, directory, threads, new_tokens, VARIANTS[name])


def same_prefix(tokens: list[int], expected: list[int]) -> int:
    """How many tokens agree before the first difference."""
    return next((i for i, (a, b) in enumerate(zip(tokens, expected, strict=False)) if a != b),
                min(len(tokens), len(expected)))


def benchmark(reps: int, threads: int, new_tokens: int, agreement_tokens: int, variants: list[str]) -> dict[str, Any]:
    from torchformers.packaged import packaged_model_dir

    directory = packaged_model_dir(PACKAGED_NAME)
    runners = [LLAMA_CPP, *variants]
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    last: dict[str, dict[str, Any]] = {}
    for rep in range(reps):
        # Alternate the order so drifting machine load hits every runner alike.
        for name in runners if rep % 2 == 0 else runners[::-1]:
            result = run_runner(name, directory, threads, new_tokens)
            speeds[name].append(result["decode_tokens_per_s"])
            last[name] = result
            print(f"  round {rep + 1}: {name:12} {result['decode_tokens_per_s']:6.1f} tok/s", file=sys.stderr,
                  flush=True)
    agreement = run_child(AGREEMENT_CODE, directory, threads, agreement_tokens, {}) if agreement_tokens else None
    reference = agreement["reference_tokens"] if agreement else last.get("dequantized", {}).get("tokens")
    base = statistics.median(speeds[LLAMA_CPP])
    rows = []
    for name in runners:
        median = statistics.median(speeds[name])
        rows.append({"runner": name, "median_tokens_per_s": median, "best_tokens_per_s": max(speeds[name]),
                     "runs": speeds[name], "vs_llama_cpp": median / base, "weight_mb": last[name]["weight_bytes"] / 2**20,
                     "warm_up_s": last[name]["warm_up_s"],
                     "same_greedy_prefix": same_prefix(last[name]["tokens"], reference) if reference else None})
    return {"file": os.path.join(directory, GGUF_FILE), "reps": reps, "threads": threads, "new_tokens": new_tokens,
            "rows": rows, "agreement": agreement}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['file']}: greedy decode, batch 1, {result['new_tokens']} new tokens, {result['threads']} "
             f"threads, {result['reps']} process(es) per runner",
             f"{'':26}{'median tok/s':>13}{'best':>8}{'vs llama.cpp':>14}{'weights':>10}{'warm-up':>9}  greedy "
             "tokens equal to the dequantized model's (before the first difference)"]
    for row in result["rows"]:
        prefix = "" if row["same_greedy_prefix"] is None else str(row["same_greedy_prefix"])
        lines.append(f"{row['runner']:26}{row['median_tokens_per_s']:13.1f}{row['best_tokens_per_s']:8.1f}"
                     f"{row['vs_llama_cpp']:13.2f}x{row['weight_mb']:7.0f} MB{row['warm_up_s']:8.1f}s  {prefix}")
    agreement = result["agreement"]
    if agreement:
        lines.append(f"teacher-forced on {agreement['steps']} greedy tokens of the dequantized float32 model:")
        for name, values in agreement["variants"].items():
            lines.append(f"  {name:12} top-1 agreement {values['top1_agreement']:.1%}, max |logit difference| "
                         f"{values['max_logit_diff']:.3f} (largest |logit| {values['logit_scale']:.1f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed processes per runner (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated in each timed decode")
    parser.add_argument("--agreement-tokens", type=int, default=300,
                        help="greedy steps for the agreement measure (0 skips it)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"torchformers variants, comma-separated, of: {', '.join(VARIANTS)} "
                             f"(default: {', '.join(DEFAULT_VARIANTS)}; the compiled ones take minutes to compile)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if args.reps < 1 or args.threads < 1 or unknown:
        parser.error(f"--reps and --threads must be at least 1; unknown variants: {unknown}")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        parser.error("llama.cpp is not installed: pip install -e '.[bench]' (builds llama-cpp-python from source)")
    result = benchmark(args.reps, args.threads, args.new_tokens, args.agreement_tokens, variants)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
