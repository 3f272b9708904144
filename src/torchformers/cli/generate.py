"""``torchformers generate``: one answer to one prompt, for scripts and pipes."""

from __future__ import annotations

import argparse
import sys

from ..errors import TokenizerError
from .decoding import generate_answer
from .options import generation_options


def run_generate(args: argparse.Namespace) -> int:
    from ..seeding import set_seed
    from .loading import load_model_and_tokenizer

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    model, tokenizer = load_model_and_tokenizer(args.model, gguf_file=args.gguf_file, device=args.device)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    use_template = has_template if args.chat is None else args.chat
    if use_template and not has_template:
        raise TokenizerError(f"{args.model}: the tokenizer has no chat template, so --chat cannot apply one.")
    if use_template:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        # A message's surrounding whitespace means nothing, and `echo ... |` always ends in a newline.
        messages.append({"role": "user", "content": prompt.strip()})
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    else:
        if args.system:
            raise TokenizerError("--system needs the chat template; drop --no-chat or --system.")
        inputs = tokenizer(prompt, return_tensors="pt")
    if args.seed is not None:
        set_seed(args.seed)
    options = generation_options(args, model.generation_config, sample_by_default=False)
    generate_answer(model, tokenizer, dict(inputs), options)
    return 0
