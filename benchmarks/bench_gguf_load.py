"""Time loading SmolLM2-135M-Instruct (Q4_1 GGUF) with torchformers and with the reference library.

Each measurement is a fresh Python process (the OS file cache is warm after the first): it
imports the library, loads the model from the GGUF file (``from_pretrained(dir,
gguf_file=...)``, float32, as both libraries default to), then its tokenizer, and greedily
answers a chat prompt. Loading the model is "ready to generate"; the ratio printed is the
reference's load time over torchformers'. Decoding speed is tokens per second at batch 1
over the steps after the first new token (a streamer timestamps each token), with
``min_new_tokens`` so no run stops early. Both libraries must produce the same tokens.

Usage: python benchmarks/bench_gguf_load.py [--reps 1] [--new-tokens 64] [--threads N] [--json]
Timings are for people, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

LIBRARIES = ("torchformers", "transformers")
PACKAGED_NAME = "SmolLM2-135M-Instruct-Q4_1-GGUF"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "What is the capital of France?"
GOAL_LOAD_SPEEDUP = 5.0
RESULT_PREFIX = "BENCH_GGUF_RESULT "

CHILD_CODE = f"""\
import time
t0 = time.perf_counter()
import json, sys
library, directory, new_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import torch
if threads:
    torch.set_num_threads(threads)
if library == "torchformers":
    import torchformers as lib
else:
    import transformers as lib
model_class, tokenizer_class = lib.AutoModelForCausalLM, lib.AutoTokenizer  # both import lazily
t_import = time.perf_counter()
model = model_class.from_pretrained(directory, gguf_file={GGUF_FILE!r})
t_model = time.perf_counter()
tokenizer = tokenizer_class.from_pretrained(directory, gguf_file={GGUF_FILE!r})
t_tokenizer = time.perf_counter()

class Stamps:
    def __init__(self):
        self.times = []
    def put(self, value):
        self.times.append(time.perf_counter())
    def end(self):
        pass

inputs = tokenizer.apply_chat_template([{{"role": "user", "content": {PROMPT!r}}}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)
with torch.inference_mode():
    model.generate(**inputs, max_new_tokens=8, do_sample=False)  # warm-up
    stamps = Stamps()
    start = time.perf_counter()
    output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            streamer=stamps)
    total = time.perf_counter() - start
new = output[0, inputs["input_ids"].shape[1]:].tolist()
token_times = stamps.times[1:]  # the first put() is the prompt
print({RESULT_PREFIX!r} + json.dumps({{
    "import_s": t_import - t0,
    "model_load_s": t_model - t_import,
    "tokenizer_load_s": t_tokenizer - t_model,
    "ready_s": t_tokenizer - t0,
    "decode_tokens_per_s": (len(token_times) - 1) / (token_times[-1] - token_times[0]),
    "generate_tokens_per_s": len(new) / total,
    "threads": torch.get_num_threads(),
    "tokens": new,
    "answer": tokenizer.decode(new, skip_special_tokens=True),
}}), flush=True)
"""


def run_child(library: str, directory: str, new_tokens: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, "-c", CHILD_CODE, library, directory, str(new_tokens), str(threads)],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{library} child failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def benchmark(reps: int, new_tokens: int, threads: int) -> dict[str, Any]:
    from torchformers.packaged import packaged_model_dir

    directory = packaged_model_dir(PACKAGED_NAME)
    runs: dict[str, list[dict[str, Any]]] = {library: [] for library in LIBRARIES}
    for library in LIBRARIES:  # warm the OS file cache; not timed
        run_child(library, directory, 8, threads)
    for rep in range(reps):
        # Alternate which library goes first so drifting machine load hits both alike.
        for library in LIBRARIES if rep % 2 == 0 else LIBRARIES[::-1]:
            runs[library].append(run_child(library, directory, new_tokens, threads))
    metrics = ("import_s", "model_load_s", "tokenizer_load_s", "ready_s", "decode_tokens_per_s",
               "generate_tokens_per_s")
    summary = {library: {key: statistics.median(run[key] for run in runs[library]) for key in metrics}
               for library in LIBRARIES}
    ours, reference = summary["torchformers"], summary["transformers"]
    same_tokens = all(run["tokens"] == runs["transformers"][0]["tokens"] for runs_ in runs.values() for run in runs_)
    return {
        "file": os.path.join(directory, GGUF_FILE), "reps": reps, "new_tokens": new_tokens,
        "threads": runs["torchformers"][0]["threads"], "summary": summary, "same_tokens": same_tokens,
        "answer": runs["torchformers"][0]["answer"],
        # reference / torchformers: above 1, torchformers is faster
        "load_speedup": reference["model_load_s"] / ours["model_load_s"],
        "ready_speedup": reference["ready_s"] / ours["ready_s"],
        "goal_load_speedup": GOAL_LOAD_SPEEDUP,
    }


def print_table(result: dict[str, Any]) -> None:
    ours, reference = result["summary"]["torchformers"], result["summary"]["transformers"]
    print(f"{result['file']}  (medians of {result['reps']} run(s), {result['threads']} threads, float32)")
    print(f"{'':34}{'torchformers':>14}{'reference':>14}{'ratio':>9}")
    rows = [("import (s)", "import_s"), ("load model from GGUF (s)", "model_load_s"),
            ("load tokenizer from GGUF (s)", "tokenizer_load_s"), ("process start -> ready (s)", "ready_s")]
    for label, key in rows:
        print(f"{label:34}{ours[key]:14.3f}{reference[key]:14.3f}{reference[key] / ours[key]:8.1f}x")
    for label, key in (("decode tokens/s, batch 1", "decode_tokens_per_s"),
                       ("generate tokens/s (with prefill)", "generate_tokens_per_s")):
        print(f"{label:34}{ours[key]:14.1f}{reference[key]:14.1f}{ours[key] / reference[key]:8.2f}x")
    print(f"model load speedup {result['load_speedup']:.1f}x (goal {GOAL_LOAD_SPEEDUP:.0f}x); "
          f"same greedy tokens: {result['same_tokens']}; answer: {result['answer']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1, help="timed processes per library (the reference takes ~20 s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated in the timed decode")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    result = benchmark(args.reps, args.new_tokens, args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if not result["same_tokens"]:
        sys.exit("the two libraries generated different tokens")


if __name__ == "__main__":
    main()
