"""``torchformers chat``: talk with a model in the terminal.

Each turn renders the whole history through the tokenizer's chat template and streams the
answer as it forms. A turn stopped with Ctrl-C is dropped with its question, so the history
only ever holds complete exchanges.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import TokenizerError, TorchformersError
from .decoding import generate_answer
from .options import generation_options

COMMANDS = {
    "/reset": "forget the conversation and start again",
    "/exit": "leave (Ctrl-D does too)",
    "/help": "show these commands",
}


class ChatSession:
    """The conversation so far (``messages``) and how to answer the next message."""

    def __init__(self, model: Any, tokenizer: Any, options: dict[str, Any], system_prompt: str | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise TokenizerError(
                "This model's tokenizer has no chat template, so it cannot chat; use "
                "`torchformers generate --no-chat MODEL PROMPT` to continue plain text."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        self.system_prompt = system_prompt
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    def answer(self, text: str) -> str:
        """Stream the model's answer to ``text`` and keep both in the history; on Ctrl-C or an error
        the question is taken back out and the exception propagates."""
        self.messages.append({"role": "user", "content": text})
        try:
            inputs = self.tokenizer.apply_chat_template(
                self.messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
            reply = generate_answer(self.model, self.tokenizer, dict(inputs), self.options).strip()
        except BaseException:
            self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": reply})
        return reply


def _read_line(prompt: str) -> str | None:
    """The next line of input, or None at the end of input."""
    try:
        return input(prompt)
    except EOFError:
        return None


def run_chat(args: argparse.Namespace) -> int:
    from ..seeding import set_seed
    from .loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, gguf_file=args.gguf_file, device=args.device)
    if args.seed is not None:
        set_seed(args.seed)
    options = generation_options(args, model.generation_config, sample_by_default=True)
    session = ChatSession(model, tokenizer, options, system_prompt=args.system)
    interactive = sys.stdin.isatty()
    prompt = ">>> " if interactive else ""
    if interactive:
        try:
            import readline  # noqa: F401  (importing it gives input() line editing and history)
        except ImportError:  # not on every platform
            pass
        print("Type a message; /reset starts over, /exit or Ctrl-D leaves, Ctrl-C stops an answer, /help.",
              file=sys.stderr)
    while True:
        try:
            line = _read_line(prompt)
        except KeyboardInterrupt:
            print("\n(use /exit or Ctrl-D to leave)", file=sys.stderr)
            continue
        if line is None:
            if interactive:
                print()
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return 0
        if text == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if text == "/help":
            print("\n".join(f"{command:8} {meaning}" for command, meaning in COMMANDS.items()), file=sys.stderr)
            continue
        try:
            session.answer(text)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            print("(answer stopped; it is left out of the conversation)", file=sys.stderr)
        except TorchformersError as error:
            print(f"torchformers: error: {error}", file=sys.stderr)
