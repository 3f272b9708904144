"""Training throughput: Trainer steps per second on a BERT-base-shaped classifier, batches of 8 x 128.

The reference library's Trainer (with its BertForSequenceClassification) and torchformers' Trainer (with
its own) train in the same process from the same random weights (``BertConfig()``, i.e. BERT-base, seeded
with 0) on the same rows, with the same arguments: AdamW (fused), linear schedule, gradient clipping,
dropout on, float32. The libraries alternate which goes first each round. A callback times every
optimizer step from ``on_step_begin`` to ``on_step_end``; the first step of each run is a warm-up and
is not counted. The table gives the median (and best) steps per second and the ratio
torchformers / reference (goal: 1.1x), the median process CPU time per step (and its ratio, which a
busy machine disturbs less than wall time), and the loss of each library's first step.

Usage: python benchmarks/bench_trainer.py [--steps 3] [--rounds 2] [--threads N] [--json]
CPU training of a 110M-parameter model is slow: each step takes seconds. Timings are for people,
never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch

BATCH, LENGTH = 8, 128
GOAL = 1.1
LIBRARIES = ("reference", "torchformers")


def build_models() -> dict[str, torch.nn.Module]:
    import transformers

    import torchformers

    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2))
    ours = torchformers.BertForSequenceClassification.from_config(torchformers.BertConfig(num_labels=2))
    ours.load_state_dict(reference.state_dict())
    return {"reference": reference, "torchformers": ours}


def rows(count: int, vocab_size: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, vocab_size, (count, LENGTH), generator=generator)
    labels = torch.randint(0, 2, (count,), generator=generator)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": labels[i]}
            for i in range(count)]


def step_timer(callback_base: type) -> Any:
    class StepTimer(callback_base):
        def __init__(self) -> None:
            self.durations: list[tuple[float, float]] = []  # (wall, process CPU) seconds per step
            self.started = (0.0, 0.0)
            self.losses: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append((time.perf_counter() - self.started[0], time.process_time() - self.started[1]))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    return StepTimer()


def run(library: str, model: torch.nn.Module, data: list[dict], steps: int) -> tuple[list[tuple[float, float]], float]:
    """Train ``steps + 1`` optimizer steps; return the timed steps' durations and the first step's loss."""
    if library == "reference":
        import transformers as lib
    else:
        import torchformers as lib
    timer = step_timer(lib.TrainerCallback)
    with tempfile.TemporaryDirectory() as output_dir:
        args = lib.TrainingArguments(
            output_dir=output_dir, max_steps=steps + 1, per_device_train_batch_size=BATCH, learning_rate=2e-5,
            warmup_steps=1, save_strategy="no", logging_steps=1, disable_tqdm=True, report_to="none",
            dataloader_pin_memory=False,
        )
        trainer = lib.Trainer(model, args, train_dataset=data, callbacks=[timer])
        trainer.remove_callback(lib.PrinterCallback)
        trainer.train()
    return timer.durations[1:], timer.losses[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per library, alternating which goes first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    models = build_models()
    data = rows(BATCH * (options.steps + 1), models["torchformers"].config.vocab_size)
    durations: dict[str, list[tuple[float, float]]] = {name: [] for name in LIBRARIES}
    first_losses: dict[str, float] = {}
    for round_index in range(options.rounds):
        order = LIBRARIES if round_index % 2 == 0 else LIBRARIES[::-1]
        for library in order:
            timed, loss = run(library, models[library], data, options.steps)
            durations[library].extend(timed)
            first_losses.setdefault(library, loss)
            print(f"round {round_index + 1} {library:>12}: " + " ".join(f"{wall:.2f}s" for wall, _ in timed),
                  flush=True)
    results = {
        name: {"median_steps_per_s": 1 / statistics.median(wall for wall, _ in times),
               "best_steps_per_s": 1 / min(wall for wall, _ in times),
               "median_cpu_s_per_step": statistics.median(cpu for _, cpu in times),
               "first_step_loss": first_losses[name]}
        for name, times in durations.items()
    }
    ours, reference = results["torchformers"], results["reference"]
    ratio = ours["median_steps_per_s"] / reference["median_steps_per_s"]
    cpu_ratio = reference["median_cpu_s_per_step"] / ours["median_cpu_s_per_step"]
    if options.json:
        print(json.dumps({"batch": BATCH, "length": LENGTH, "threads": torch.get_num_threads(), "results": results,
                          "ratio": ratio, "cpu_time_ratio": cpu_ratio, "goal": GOAL}, indent=2))
        return 0
    print(f"\nBERT-base classifier training, batch {BATCH} x {LENGTH}, float32, {torch.get_num_threads()} threads")
    print(f"{'library':>14} {'steps/s (median)':>17} {'(best)':>8} {'CPU s/step':>11} {'first loss':>11}")
    for name, result in results.items():
        print(f"{name:>14} {result['median_steps_per_s']:>17.3f} {result['best_steps_per_s']:>8.3f} "
              f"{result['median_cpu_s_per_step']:>11.2f} {result['first_step_loss']:>11.4f}")
    print(f"ratio torchformers / reference: {ratio:.2f}x steps/s (goal {GOAL}x); {cpu_ratio:.2f}x in CPU time per "
          "step (steadier on a busy machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
