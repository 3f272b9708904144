"""Streaming an answer of ``chat`` and ``generate`` to stdout as it forms."""

from __future__ import annotations

import sys
from typing import Any

import torch

from ..generation.streamers import TextStreamer


class AnswerPrinter(TextStreamer):
    """Writes the generated text (not the prompt, no special tokens) to stdout as whole words form.

    ``sys.stdout`` is looked up at each write, so a caller that swaps it (tests, redirection) is followed.
    """

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        sys.stdout.write(text + ("\n" if stream_end else ""))
        sys.stdout.flush()


def generate_answer(model: Any, tokenizer: Any, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> str:
    """Generate after the prompt ``inputs``, printing the answer as it forms, and return its text."""
    # Only the ids and the mask: a tokenizer may add inputs (token_type_ids) that a causal LM does not take.
    inputs = {key: inputs[key].to(model.device) for key in ("input_ids", "attention_mask") if key in inputs}
    output = model.generate(**inputs, **options, streamer=AnswerPrinter(tokenizer))
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
