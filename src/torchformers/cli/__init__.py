"""The ``torchformers`` command."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchformers", description="Pretrained transformers in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="build (once) a tiny character-level Llama, load it back and print a greedy continuation",
    )
    demo.add_argument("prompt", nargs="?", default="The quick brown", help="text to continue")
    demo.add_argument("--max-new-tokens", type=int, default=40)
    demo.add_argument("--model-dir", default=None, help="where the demo model is kept (default: the cache)")
    commands.add_parser("env", help="print the versions torchformers runs with")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        print(run_demo(args.prompt, max_new_tokens=args.max_new_tokens, model_dir=args.model_dir))
        return 0
    from .env import describe_environment

    print(describe_environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
