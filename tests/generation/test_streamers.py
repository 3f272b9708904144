"""Streamers: the streamed text is the final text, piece by piece as the reference streams it."""

from __future__ import annotations

import threading

import pytest
import torch
from _checkpoints import prompt
from transformers import TextStreamer as ReferenceTextStreamer

from torchformers import TextIteratorStreamer, TextStreamer
from torchformers.errors import GenerationError


class Collecting(TextStreamer):
    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.pieces: list[str] = []

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.pieces.append(text)


class ReferenceCollecting(ReferenceTextStreamer):
    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.pieces: list[str] = []

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.pieces.append(text)


@pytest.mark.parametrize("skip_prompt", [False, True])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_text_streamer_streams_the_final_text_like_the_reference(checkpoint, byte_level_tokenizers, family,
                                                                 skip_prompt):
    _, reference, ours = checkpoint(family)
    tokenizer, reference_tokenizer = byte_level_tokenizers
    ids = prompt(seed=3)
    streamer = Collecting(tokenizer, skip_prompt=skip_prompt)
    out = ours.generate(ids, max_new_tokens=25, streamer=streamer)
    expected = tokenizer.decode(out[0, ids.shape[1]:] if skip_prompt else out[0])
    assert "".join(streamer.pieces) == expected
    assert len([piece for piece in streamer.pieces if piece]) > 1  # streamed, not all at the end
    reference_streamer = ReferenceCollecting(reference_tokenizer, skip_prompt=skip_prompt)
    reference.generate(ids, max_new_tokens=25, do_sample=False, streamer=reference_streamer)
    assert streamer.pieces == reference_streamer.pieces


def test_assisted_decoding_streams_the_final_text(checkpoint, byte_level_tokenizers):
    _, _, ours = checkpoint("llama")
    tokenizer, _ = byte_level_tokenizers
    ids = torch.cat([prompt(length=4, seed=5)] * 3, dim=1)
    streamer = Collecting(tokenizer, skip_prompt=True)
    out = ours.generate(ids, max_new_tokens=20, prompt_lookup_num_tokens=3, streamer=streamer)
    assert "".join(streamer.pieces) == tokenizer.decode(out[0, ids.shape[1]:])


def test_text_iterator_streamer_from_a_thread(checkpoint, byte_level_tokenizers):
    _, _, ours = checkpoint("llama")
    tokenizer, _ = byte_level_tokenizers
    ids = prompt(seed=4)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=30, skip_special_tokens=True)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=ours.generate(ids, max_new_tokens=20,
                                                                               streamer=streamer)))
    thread.start()
    text = "".join(streamer)
    thread.join(timeout=30)
    assert text == tokenizer.decode(result["out"][0, ids.shape[1]:], skip_special_tokens=True)


def test_text_streamer_prints(checkpoint, byte_level_tokenizers, capsys):
    _, _, ours = checkpoint("llama")
    tokenizer, _ = byte_level_tokenizers
    out = ours.generate(prompt(), max_new_tokens=10, streamer=TextStreamer(tokenizer))
    assert capsys.readouterr().out == tokenizer.decode(out[0]) + "\n"


def test_streamers_take_one_sequence(byte_level_tokenizers):
    tokenizer, _ = byte_level_tokenizers
    with pytest.raises(GenerationError, match="one sequence"):
        TextStreamer(tokenizer).put(torch.ones(2, 3, dtype=torch.long))
