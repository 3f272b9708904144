"""Time loading a llama-135m-shaped checkpoint with torchformers and with the reference library.

Each measurement is a fresh Python process, so imports and loading are cold in the
interpreter (the OS file cache is warmed by one untimed run of each library first). The
child process stamps the time at the very top of its code, before any import, and reports
the import, load and forward times, the peak RSS and where it saved the logits of one
forward pass on a fixed 8-token input; the parent also times the whole process. Both
libraries load the same files in float32 and must give the same logits (max abs diff
< 1e-4), so the two sides do equal work.

Usage: python benchmarks/bench_load.py [--reps 5] [--models-dir DIR] [--json]
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

import numpy as np
from bench_common import add_models_dir_argument, add_threads_and_json_arguments

LIBRARIES = ("torchformers", "transformers")
MODEL_NAME = "llama-135m"
REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE_MODELS = REPO_ROOT.parent / "shared" / "reference" / "make_models.py"
# SmolLM-135M shape; the same config as make_models.py, used when that script is not around.
LLAMA_135M_CONFIG: dict[str, Any] = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
    rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
)
INPUT_IDS = [1, 17, 345, 4096, 12345, 30000, 49151, 0]
LOGITS_TOLERANCE = 1e-4
GOAL_LOAD_SPEEDUP = 2.5
GOAL_MEMORY_RATIO = 1.0
RESULT_PREFIX = "BENCH_LOAD_RESULT "

# Runs in the child. t0 comes before every import: the figure is "process start to model
# loaded and one forward done" as the user's script sees it.
CHILD_CODE = f"""\
import time
t0 = time.perf_counter()
import json, resource, sys
library, path, logits_path = sys.argv[1:4]
import torch
t_torch = time.perf_counter()
if library == "torchformers":
    import torchformers as lib
else:
    import transformers as lib
# Both libraries import lazily: touching the class is what imports the modeling code.
auto_class = lib.AutoModelForCausalLM
t_import = time.perf_counter()
model = auto_class.from_pretrained(path, dtype=torch.float32)
t_load = time.perf_counter()
with torch.inference_mode():
    logits = model(torch.tensor([{INPUT_IDS!r}])).logits
t_forward = time.perf_counter()
peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy
numpy.save(logits_path, logits.float().numpy())
print({RESULT_PREFIX!r} + json.dumps({{
    "import_torch_s": t_torch - t0,
    "import_library_s": t_import - t_torch,
    "import_s": t_import - t0,
    "load_s": t_load - t_import,
    "forward_s": t_forward - t_load,
    "child_total_s": t_forward - t0,
    "peak_rss_mb": peak_rss_kib / 1024,
    "threads": torch.get_num_threads(),
    "logits_sum": float(logits.double().sum()),
}}), flush=True)
"""

BUILD_CODE = """\
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
config_kwargs, out = json.loads(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(**config_kwargs)).eval().save_pretrained(out)
"""



def llama_config_kwargs() -> tuple[dict[str, Any], str]:
    """The llama-135m config of make_models.py (read from its source, not run), else the inline copy.

    make_models.py seeds once and builds llama-135m first, so seeding 0 and building only
    that model gives the same weights without building gpt2 and bert.
    """
    if MAKE_MODELS.is_file():
        for node in ast.walk(ast.parse(MAKE_MODELS.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == MODEL_NAME and isinstance(value, ast.Tuple):
                    call = value.elts[1]
                    if isinstance(call, ast.Call):
                        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
                        return kwargs, str(MAKE_MODELS)
    return dict(LLAMA_135M_CONFIG), "inline copy of make_models.py's config"


def ensure_model(models_dir: Path) -> Path:
    """Build the checkpoint with the reference library once; later runs reuse it."""
    path = models_dir / MODEL_NAME
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    kwargs, source = llama_config_kwargs()
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


def run_child(library: str, model_path: Path, logits_path: Path, threads: int | None) -> dict[str, Any]:
    """One fresh process: import, load, forward. Returns the child's figures plus process wall time."""
    # A local directory needs no network; offline mode keeps either library from trying.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_CODE, library, str(model_path), str(logits_path)],
        capture_output=True, text=True, env=env,
    )
    process_wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{library} child failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_wall_s"] = process_wall
    return result


def max_logits_diff(logits_files: dict[str, list[Path]]) -> float:
    """Largest |difference| between any run's logits and torchformers' first run."""
    reference = np.load(logits_files[LIBRARIES[0]][0])
    return max(
        float(np.abs(np.load(path) - reference).max()) for paths in logits_files.values() for path in paths
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    metrics = [key for key, value in runs[0].items() if isinstance(value, float) and key != "logits_sum"]
    return {
        key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs)}
        for key in metrics
    }


def benchmark(model_path: Path, reps: int, warmup: int, threads: int | None) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in LIBRARIES}
    logits_files: dict[str, list[Path]] = {lib: [] for lib in LIBRARIES}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        for rep in range(-warmup, reps):
            # Alternate which library goes first so drifting machine noise hits both alike.
            order = LIBRARIES if rep % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                logits_path = Path(tmp) / f"{library}-{rep + warmup}.npy"
                result = run_child(library, model_path, logits_path, threads)
                if rep >= 0:
                    runs[library].append(result)
                    logits_files[library].append(logits_path)
        diff = max_logits_diff(logits_files)
    summary = {lib: summarize(runs[lib]) for lib in LIBRARIES}
    tf, ref = (summary[lib] for lib in LIBRARIES)
    ratios = {key: ref[key]["median"] / tf[key]["median"] for key in tf if key != "peak_rss_mb"}
    ratios["peak_rss_mb"] = tf["peak_rss_mb"]["median"] / ref["peak_rss_mb"]["median"]
    return {
        "model": str(model_path), "reps": reps, "threads": runs[LIBRARIES[0]][0]["threads"], "dtype": "float32", "input_ids": INPUT_IDS,
        "logits_max_abs_diff": diff, "runs": runs, "summary": summary,
        # time ratios are reference / torchformers (>1: torchformers faster);
        # the memory ratio is torchformers / reference (<1: torchformers smaller)
        "ratios": ratios,
        "load_speedup": ratios["child_total_s"], "goal_load_speedup": GOAL_LOAD_SPEEDUP,
        "peak_memory_ratio": ratios["peak_rss_mb"], "goal_peak_memory_ratio": GOAL_MEMORY_RATIO,
    }


def format_table(results: dict[str, Any]) -> str:
    rows = [
        ("import torch s", "import_torch_s"),
        ("import library s", "import_library_s"),
        ("load s", "load_s"),
        ("forward s", "forward_s"),
        ("start -> forward done s", "child_total_s"),
        ("process wall s", "process_wall_s"),
        ("peak RSS MB", "peak_rss_mb"),
    ]
    tf, ref = (results["summary"][lib] for lib in LIBRARIES)
    lines = [
        f"{results['model']}  float32, {results['threads']} threads, {results['reps']} reps per library, "
        "median (min)",
        f"{'':26}{'torchformers':>18}{'transformers':>18}{'ratio':>9}",
    ]
    for label, key in rows:
        cells = [f"{s[key]['median']:.3f} ({s[key]['min']:.3f})" for s in (tf, ref)]
        lines.append(f"{label:26}{cells[0]:>18}{cells[1]:>18}{results['ratios'][key]:>8.2f}x")
    lines.append("ratio: transformers / torchformers for times, torchformers / transformers for memory")
    lines.append(f"logits max abs diff: {results['logits_max_abs_diff']:.2e} (must be < {LOGITS_TOLERANCE:g})")
    lines.append(
        f"load speedup: {results['load_speedup']:.1f}x (start -> forward done; goal >= {GOAL_LOAD_SPEEDUP}x), "
        f"peak memory ratio: {results['peak_memory_ratio']:.2f} (goal <= {GOAL_MEMORY_RATIO})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--reps", type=int, default=5, help="timed processes per library (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first, to warm the OS file cache (default 1)")
    add_threads_and_json_arguments(parser, "OMP/MKL threads in the children (default: torch's choice); 1 steadies "
                             "the figures on a busy machine")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    results = benchmark(ensure_model(args.models_dir), args.reps, max(args.warmup, 0), args.threads)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    if results["logits_max_abs_diff"] >= LOGITS_TOLERANCE:
        print("error: the libraries' logits differ; the timings do not compare equal work.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
