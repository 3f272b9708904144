"""What the benchmark scripts share: the cache of checkpoints they build and their common flags.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they
import this module by its plain name.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_models_dir() -> Path:
    """$TORCHFORMERS_BENCH_DIR, else ~/.cache/torchformers/bench-models: the checkpoints are built once."""
    env = os.environ.get("TORCHFORMERS_BENCH_DIR")
    return Path(env) if env else Path.home() / ".cache" / "torchformers" / "bench-models"


def add_models_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=default_models_dir(),
                        help="where the benchmark checkpoints are built and cached "
                             "(default: $TORCHFORMERS_BENCH_DIR or ~/.cache/torchformers/bench-models)")


def add_threads_and_json_arguments(parser: argparse.ArgumentParser, threads_help: str) -> None:
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


# Child-process code (a benchmark child's source is a string): ``weight_bytes(model)``, the bytes of
# the model's parameters and buffers, each storage once, plus what layers made for decoding (the
# copied scales of int4 groups, in the ``_in_group`` dict a group's layers share). Measure after generating.
WEIGHT_BYTES_CODE = """
def weight_bytes(model):
    # Tensors an int4 group made (its joined codes and copied scales), beside the model's own.
    groups = {id(group): group for module in model.modules() if (group := module.__dict__.get("_in_group"))}
    made = [tensor for group in groups.values() for name, tensor in group.items() if name != "made_from"]
    storages = {}
    for tensor in [*model.parameters(), *model.buffers(), *made]:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values())
"""
