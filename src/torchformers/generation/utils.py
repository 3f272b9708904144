"""GenerationMixin: ``generate()`` for causal language models.

This first version decodes greedily (the reference library's default strategy) with a KV
cache and left-padded batches. Other strategies raise UnsupportedArgumentError naming the
option rather than being ignored.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..errors import UnsupportedArgumentError
from ..nn.cache import DynamicCache
from .config import GenerationConfig

_GREEDY_DEFAULTS = {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "repetition_penalty": 1.0,
                    "no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
                    "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                    "sequence_bias": None, "stop_strings": None, "max_time": None, "prompt_lookup_num_tokens": None,
                    "return_dict_in_generate": False, "output_scores": False, "output_logits": False,
                    "min_new_tokens": None, "min_length": 0}


class GenerationMixin:
    """Adds ``generate`` to a causal LM whose forward takes ``past_key_values`` and ``logits_to_keep``."""

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Greedy decoding: returns the prompt followed by the generated tokens.

        Stops after ``max_new_tokens`` (or at ``max_length`` total tokens) or once every
        sequence has produced an ``eos_token_id``; finished sequences are padded with
        ``pad_token_id`` (or the first eos id) as in the reference library.
        """
        input_ids = kwargs.pop("input_ids", inputs)
        attention_mask = kwargs.pop("attention_mask", None)
        config = copy.deepcopy(generation_config or self.generation_config or GenerationConfig())
        unused = config.update(**kwargs)
        if unused:
            raise UnsupportedArgumentError(f"generate() got unsupported arguments {sorted(unused)}.")
        changed = [k for k, v in _GREEDY_DEFAULTS.items() if getattr(config, k) != v]
        if changed:
            raise UnsupportedArgumentError(
                f"generate(): {changed} are not supported by this version's decoder, which is greedy only."
            )
        if input_ids is None:
            raise UnsupportedArgumentError("generate() needs input_ids.")
        device = self.device
        input_ids = input_ids.to(device)
        batch, prompt_length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(device)
        max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - prompt_length
        eos = config.eos_token_id
        eos_ids = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), device=device)
        pad = config.pad_token_id if config.pad_token_id is not None else (int(eos_ids[0]) if len(eos_ids) else 0)

        cache = DynamicCache()
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens = input_ids
        step_input = input_ids
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        for _ in range(max(max_new, 0)):
            logits = self(
                input_ids=step_input, attention_mask=attention_mask,
                position_ids=position_ids[:, -step_input.shape[1]:],
                past_key_values=cache, use_cache=True, logits_to_keep=1, return_dict=True,
            ).logits[:, -1]
            next_tokens = logits.argmax(-1)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
            if len(eos_ids):
                finished |= torch.isin(next_tokens, eos_ids)
                if bool(finished.all()):
                    break
            step_input = next_tokens[:, None]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=-1)
            position_ids = position_ids[:, -1:] + 1
        return tokens
