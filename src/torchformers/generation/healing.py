"""Token healing (``generate(..., token_healing=True, tokenizer=...)``), as the reference library does it.

A prompt that ends in the middle of a word ends on a token the model rarely saw there: "The
link is http" stops on "http", where the text was most often tokenized with "https" or "http:".
Healing re-tokenizes each prompt (decoded without special tokens, stripped), drops its last
token, and lets the model choose it again among the vocabulary tokens that extend its text,
each given a bias of +10 (+11 for the original, so healing changes only what it should). The
choice is one greedy step of :meth:`generate` with that ``sequence_bias``.

Steps the reference takes that look accidental are kept, so the same prompt heals the same way:
the prefix search walks the vocabulary's characters as far as they match and offers every token
below that point with the whole prefix in front; spaces in the tail are written as the
tokenizer's space token before the search (for GPT-2's tokenizers, which have none, as the first
character of the unknown token: such tails find nothing to heal with); a prompt's BOS becomes
padding, and a padded one-token prompt is regenerated from BOS. One difference: generation then
reads the healed prompts' padding from the pad token, where the reference keeps the caller's
attention mask, which no longer fits when re-tokenizing changed a prompt's length.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import GenerationError

# Ends a word in the nested dicts of :func:`_extensions` ("" is never a character).
_END = ""


def heal_tokens(model: Any, input_ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """``input_ids`` re-tokenized, each row's last token regenerated among its extensions (see the module)."""
    if tokenizer is None:
        raise GenerationError("generate(): token_healing=True needs the model's tokenizer; pass tokenizer=... too.")
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    if pad is None:
        raise GenerationError("generate(): token healing pads the re-tokenized prompts and needs a pad token; set "
                              "tokenizer.pad_token (for instance to tokenizer.eos_token).")
    vocabulary = _vocabulary_trie(tokenizer.get_vocab())
    prompts = [text.strip() for text in tokenizer.batch_decode(input_ids, skip_special_tokens=True)]
    healed = tokenizer(prompts, return_tensors="pt", padding=True).input_ids.to(input_ids.device)
    if bos is not None:
        healed = torch.where(healed == bos, pad, healed)  # healing is not conditioned on BOS
    if healed.numel() == 0:
        return healed
    tail_ids = healed[:, -1].tolist()
    space_id = tokenizer.convert_tokens_to_ids(" ")
    space_token = tokenizer.convert_ids_to_tokens(space_id)[0] if space_id is not None else None
    for row, tail_id in enumerate(tail_ids):
        ids = healed[row]
        if bool((ids == pad).all()):
            continue
        tail = tokenizer.decode(tail_id)
        if space_token is not None:
            tail = tail.replace(" ", space_token)
        bias = {(tokenizer.convert_tokens_to_ids(token),): 10.0 for token in _extensions(vocabulary, tail)}
        if len(bias) == 1:
            continue  # nothing else to choose from
        if (tail_id,) not in bias:
            raise GenerationError(f"generate(): token healing cannot heal token {tail_id} ({tail!r}): its text is not "
                                  "a vocabulary entry of the tokenizer.")
        bias[(tail_id,)] += 1.0
        trimmed = ids[:-1]
        if trimmed.numel() == 0:
            continue
        if int((ids != pad).sum()) == 1 and bos is not None:
            trimmed[-1] = bos  # a one-token prompt is chosen again from BOS (the padding before it, without one)
        healed[row] = model.generate(trimmed[None], max_new_tokens=1, pad_token_id=pad, sequence_bias=bias)[0]
    return healed


def _vocabulary_trie(vocabulary: dict[str, int]) -> dict:
    """The vocabulary's tokens as nested dicts of characters, ``_END`` marking a token's last one."""
    root: dict = {}
    for token in vocabulary:
        if not token:
            continue
        node = root
        for character in token:
            node = node.setdefault(character, {})
        node[_END] = 1
    return root


def _extensions(root: dict, prefix: str) -> list[str]:
    """``prefix`` followed by each token ending below the deepest node the prefix's characters reach
    (the search stops at the first character that does not match, as the reference's does)."""
    node = root
    for character in prefix:
        if character not in node:
            break
        node = node[character]
    return [prefix + ending for ending in _endings(node)]


def _endings(node: dict) -> list[str]:
    """The ways to finish a token from ``node``, in insertion order ("" first if one ends here)."""
    endings = [_END] if _END in node else []
    for character, child in node.items():
        if character != _END:
            endings.extend(character + ending for ending in _endings(child))
    return endings
