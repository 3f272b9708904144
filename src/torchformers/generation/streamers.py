"""Streamers: receive tokens as ``generate`` produces them.

``generate(streamer=...)`` calls ``streamer.put(prompt_ids)`` once, ``streamer.put(new_ids)``
after every step and ``streamer.end()`` at the end, as the reference library does.
:class:`TextStreamer` prints the text as it forms; :class:`TextIteratorStreamer` hands it to
another thread through a queue (run ``generate`` in a thread and iterate over the streamer).
"""

from __future__ import annotations

from queue import Queue
from typing import Any

import torch

from ..errors import GenerationError


class BaseStreamer:
    """Base class of streamers: ``put(token_ids)`` and ``end()``."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement put(token_ids): generate calls it with each step's tokens.")

    def end(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement end(): generate calls it once decoding stops.")


def _is_cjk(codepoint: int) -> bool:
    # CJK ideographs are words on their own, so they can be shown as soon as they are decoded.
    return (
        0x4E00 <= codepoint <= 0x9FFF or 0x3400 <= codepoint <= 0x4DBF or 0x20000 <= codepoint <= 0x2A6DF
        or 0x2A700 <= codepoint <= 0x2B73F or 0x2B740 <= codepoint <= 0x2B81F or 0x2B820 <= codepoint <= 0x2CEAF
        or 0xF900 <= codepoint <= 0xFAFF or 0x2F800 <= codepoint <= 0x2FA1F
    )


class TextStreamer(BaseStreamer):
    """Print generated text to stdout as whole words become available.

    Tokens are decoded together with the unfinished word before them (decoding token by token
    would break words and multi-byte characters); text is released up to the last space, at
    once after a newline, or right away for CJK characters. ``skip_prompt=True`` leaves out
    the prompt; ``decode_kwargs`` (``skip_special_tokens=True``...) go to ``tokenizer.decode``.
    Streams one sequence: a batch of several raises.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise GenerationError("TextStreamer streams one sequence; the batch has several.")
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.print_len:]
            self.token_cache, self.print_len = [], 0
        elif text and _is_cjk(ord(text[-1])):
            printable = text[self.print_len:]
            self.print_len += len(printable)
        else:
            printable = text[self.print_len: text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self) -> None:
        """Release what is left and mark the end of the stream."""
        printable = ""
        if self.token_cache:
            printable = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)[self.print_len:]
        self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Where finished text goes; prints by default. Override to send it elsewhere."""
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """Queue generated text for another thread: ``for text in streamer: ...``.

    ``timeout`` (seconds) bounds each wait on the queue, so a consumer never hangs on a
    ``generate`` call that died; it raises ``queue.Empty`` instead.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: float | None = None,
                 **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> TextIteratorStreamer:
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value
