"""Helpers of the generation tests: tiny seeded checkpoint recipes and prompts.

Weights are drawn with a large scale (std 1), so next-token logits are peaked (median top-1
margin above one logit) and greedy choices never hinge on float rounding: token-identical
comparisons with the reference library are meaningful, not lucky.
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 128
BOS, EOS, PAD = 1, 2, 0
LLAMA = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, bos_token_id=BOS, eos_token_id=EOS,
             pad_token_id=PAD, tie_word_embeddings=False)
GPT2 = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=BOS, eos_token_id=EOS)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LLAMA, 0),
    # A second, different Llama of the same vocabulary: an assistant whose drafts are often wrong.
    "llama-assistant": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                        {**LLAMA, "num_hidden_layers": 1}, 1),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel, GPT2, 3),
}


def scale_weights_(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded N(0, 1) noise; norms stay near one, and biases and
    learned position tables stay small (large ones make a random GPT-2 repeat one token)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name or ".ln_" in name:
                param.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith(("bias", "wpe.weight")):
                param.copy_(0.1 * noise)
            else:
                param.copy_(noise)


def prompt(batch: int = 1, length: int = 6, seed: int = 0) -> torch.Tensor:
    """Random prompt token ids that avoid the special tokens."""
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def left_padded(ids: torch.Tensor, pad_lengths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` with the first ``pad_lengths[row]`` tokens of each row turned into left padding, and the mask."""
    mask = torch.ones_like(ids)
    for row, count in enumerate(pad_lengths):
        mask[row, :count] = 0
    return ids.masked_fill(mask == 0, PAD), mask
