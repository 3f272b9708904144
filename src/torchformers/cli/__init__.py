"""The ``torchformers`` command (also ``python -m torchformers``)."""

from __future__ import annotations

import argparse
import os
import sys

from .options import SAMPLING_TEMPERATURE, SAMPLING_TOP_P, add_model_arguments, add_sampling_arguments

_CHAT_HELP = f"""\
Type a message and the answer streams back. The history goes through the model's chat
template, so the model sees the whole conversation. Commands: /reset starts over, /exit
(or Ctrl-D, or the end of piped input) leaves. Ctrl-C stops the answer being written and
returns to the prompt; that question and its partial answer are left out of the history.

Decoding samples by default, as `transformers chat` does: with the model's own temperature
and top-p when its generation_config.json asks for sampling, else with temperature {SAMPLING_TEMPERATURE}
and top-p {SAMPLING_TOP_P}. --temperature 0 decodes greedily (the same answer every time);
--seed makes sampling repeatable."""

_GENERATE_HELP = f"""\
Prints only the generated text, as it forms. Decoding does what model.generate() does
with the model's own generation_config.json: greedy unless that file asks for sampling.
--temperature above 0 or --top-p turns sampling on (temperature {SAMPLING_TEMPERATURE} and top-p {SAMPLING_TOP_P}
where neither a flag nor the model sets them); --temperature 0 is always greedy."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchformers", description="Pretrained transformers in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    chat = commands.add_parser("chat", help="chat with a model in the terminal (default: SmolLM2-135M-Instruct)",
                               description=_CHAT_HELP, formatter_class=formatter)
    add_model_arguments(chat, optional=True)
    add_sampling_arguments(chat)
    chat.add_argument("--system", default=None, help="a system prompt that opens the conversation")

    generate = commands.add_parser("generate", help="answer one prompt and print only the generated text",
                                   description=_GENERATE_HELP, formatter_class=formatter)
    add_model_arguments(generate, optional=False)
    generate.add_argument("prompt", help="the prompt; - reads it from stdin")
    add_sampling_arguments(generate)
    generate.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                          help="wrap the prompt in the chat template as a user message (default: when the "
                               "tokenizer has a template); --no-chat continues the raw text")
    generate.add_argument("--system", default=None, help="a system prompt (with the chat template only)")

    commands.add_parser("env", help="print the versions, devices and threads torchformers runs with")

    demo = commands.add_parser(
        "demo",
        help="build (once) a tiny character-level Llama, load it back and print a greedy continuation",
    )
    demo.add_argument("prompt", nargs="?", default="The quick brown", help="text to continue")
    demo.add_argument("--max-new-tokens", type=int, default=40)
    demo.add_argument("--model-dir", default=None, help="where the demo model is kept (default: the cache)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "chat":
        from .chat import run_chat

        return run_chat(args)
    if args.command == "generate":
        from .generate import run_generate

        return run_generate(args)
    if args.command == "demo":
        from .demo import run_demo

        print(run_demo(args.prompt, max_new_tokens=args.max_new_tokens, model_dir=args.model_dir))
        return 0
    from .env import describe_environment

    print(describe_environment())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    Errors a user can fix (a wrong path, a model that cannot be fetched, a bad file) print one
    line on stderr and give status 1, without a traceback; Ctrl-C outside a chat answer gives 130.
    """
    from ..errors import TorchformersError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (TorchformersError, OSError) as error:
        if isinstance(error, BrokenPipeError):
            return _reader_went_away()
        print(f"torchformers: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntorchformers: interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    # The reader of a pipe (`| head`) stopped early. Point stdout at devnull so the interpreter's
    # final flush does not print a second error, and exit 1 as Python's documentation advises.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (replaced in-process)
        pass
    return 1
