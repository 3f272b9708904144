"""The flags ``chat`` and ``generate`` share, and the ``generate`` keywords they turn into.

No torch import here, so ``torchformers --help`` answers at once."""

from __future__ import annotations

import argparse
from typing import Any

# Used when sampling and neither a flag nor the model's generation_config.json gives a value:
# plain temperature 1.0 makes small models ramble, and these are common chat defaults.
SAMPLING_TEMPERATURE = 0.7
SAMPLING_TOP_P = 0.9
DEFAULT_MAX_NEW_TOKENS = 256


def _number(text: str, kind: type, check: Any, requirement: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not check(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, not {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda value: value >= 0, "a number, 0 or more")


def _probability(text: str) -> float:
    return _number(text, float, lambda value: 0 < value <= 1, "a number in (0, 1]")


def _positive_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 1, "a whole number, 1 or more")


def add_model_arguments(parser: argparse.ArgumentParser, *, optional: bool) -> None:
    """MODEL (optional for ``chat``, where it defaults to SmolLM2), ``--gguf-file`` and ``--device``."""
    where = "a model directory, a .gguf file, or a hub id"
    if optional:
        parser.add_argument("model", nargs="?", default=None,
                            help=f"{where} (default: SmolLM2-135M-Instruct Q4_1 GGUF, fetched once into the cache)")
    else:
        parser.add_argument("model", help=where)
    parser.add_argument("--gguf-file", default=None, metavar="NAME",
                        help="the GGUF file to load from MODEL when MODEL is a directory or hub id holding several")
    parser.add_argument("--device", default=None, metavar="DEVICE", help="cpu, cuda, cuda:1, mps... (default: cuda when available)")


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The decoding flags of ``chat`` and ``generate``."""
    parser.add_argument("--temperature", type=_non_negative_float, default=None, metavar="T",
                        help="sampling temperature; 0 decodes greedily (the most likely token each step)")
    parser.add_argument("--top-p", type=_probability, default=None, metavar="P",
                        help="nucleus sampling: sample among the most likely tokens whose probabilities add up to P")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help=f"the most tokens one answer may have (default: {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed the random generators, for repeatable sampling")


def generation_options(args: argparse.Namespace, generation_config: Any, *, sample_by_default: bool) -> dict[str, Any]:
    """Keyword arguments of ``generate`` from the flags and the model's own generation config.

    ``--temperature 0`` is greedy. Otherwise decoding samples when a sampling flag is given, when the
    model's generation config asks for sampling, or when ``sample_by_default`` (``chat``); the
    temperature and top-p then come from the flags, else the model's config when it samples, else
    0.7 and 0.9. Without any of these, decoding is greedy.
    """
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    model_samples = bool(getattr(generation_config, "do_sample", False))
    asked = args.temperature is not None or args.top_p is not None
    if args.temperature == 0 or not (asked or model_samples or sample_by_default):
        options["do_sample"] = False
        return options
    options["do_sample"] = True
    options["temperature"] = args.temperature if args.temperature is not None else (
        generation_config.temperature if model_samples else SAMPLING_TEMPERATURE)
    options["top_p"] = args.top_p if args.top_p is not None else (
        generation_config.top_p if model_samples else SAMPLING_TOP_P)
    return options
