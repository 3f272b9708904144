"""GenerationMixin: ``generate()`` for causal language models.

``generate`` turns the call into a prepared :class:`GenerationConfig` (the model's defaults,
a passed config and keyword arguments, in the reference library's order of precedence),
checks the prompt and the options, builds the logits processors and stopping criteria,
prepares the KV cache and runs one of the loops in :mod:`.search`. Options it does not
implement raise :class:`UnsupportedArgumentError` naming them; inconsistent inputs raise
:class:`GenerationError`. Nothing is silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import GenerationError, UnsupportedArgumentError
from ..nn.cache import DynamicCache, StaticCache
from ..nn.linear import EAGER_ONLY_CACHES
from ..outputs import ModelOutput
from .config import CompileConfig, GenerationConfig
from .healing import heal_tokens
from .logits import (
    LogitsProcessorList,
    UnbatchedClassifierFreeGuidanceLogitsProcessor,
    build_logits_processors,
    merge_custom,
)
from .search import (
    AssistantCandidates,
    DecodeResult,
    ModelStepper,
    PromptLookupCandidates,
    Recorder,
    assisted_decoding,
    beam_search,
    greedy_or_sample,
)
from .stopping import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

logger = logging.getLogger("torchformers")


@dataclasses.dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """What ``generate(..., return_dict_in_generate=True)`` returns for greedy, sampling and assisted decoding.

    ``scores`` are the processed next-token scores of each step and ``logits`` the raw ones
    (one (batch, vocab) tensor per generated token, when ``output_scores`` / ``output_logits``).
    """

    sequences: torch.LongTensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], ...] | None = None
    past_key_values: Any = None


@dataclasses.dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """What beam search returns with ``return_dict_in_generate=True``.

    ``sequences_scores`` (with ``output_scores``) are the final, length-penalized scores;
    ``scores`` the processed log-probabilities of each step, for every beam;
    ``beam_indices`` the beam (batch * num_beams index) each generated token came from.
    """

    sequences: torch.LongTensor | None = None
    sequences_scores: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    beam_indices: torch.LongTensor | None = None
    attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None
    hidden_states: tuple[tuple[torch.Tensor, ...], ...] | None = None
    past_key_values: Any = None


# Settings of the reference library that select strategies or features torchformers does not
# implement: setting -> (is it switched on?, what it asks for).
_UNSUPPORTED_SETTINGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_beam_groups": (lambda v: v > 1, "group (diverse) beam search"),
    "diversity_penalty": (lambda v: v != 0.0, "group (diverse) beam search"),
    "penalty_alpha": (lambda v: v is not None and v > 0, "contrastive search"),
    "dola_layers": (lambda v: v is not None, "DoLa decoding"),
    "constraints": (lambda v: v is not None, "constrained beam search"),
    "force_words_ids": (lambda v: v is not None, "constrained beam search"),
    "low_memory": (lambda v: bool(v), "sequential (low-memory) beam search"),
    "assistant_early_exit": (lambda v: v is not None, "early-exit self-speculation"),
    "cache_config": (lambda v: v is not None, "cache configuration (quantized caches)"),
    "is_assistant": (lambda v: bool(v), "the reference's internal assistant mode"),
}
_SUPPORTED_CACHES = (None, "dynamic", "static")
_MODEL_INPUTS = ("input_ids", "attention_mask", "past_key_values")
_POSITION_TABLE_NAMES = ("wpe", "position_embeddings", "embed_positions")


class GenerationMixin:
    """Adds ``generate`` to a causal LM whose forward takes ``input_ids``, ``attention_mask``,
    ``position_ids``, ``past_key_values``, ``use_cache`` and (optionally) ``logits_to_keep``."""

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]] | None = None,
        synced_gpus: bool | None = None,
        assistant_model: nn.Module | None = None,
        streamer: Any = None,
        negative_prompt_ids: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        custom_generate: Any = None,
        **kwargs: Any,
    ) -> torch.LongTensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
        """Generate token ids after a prompt: the reference library's ``generate`` for decoder-only models.

        Strategies: greedy decoding and multinomial sampling (``do_sample``, with ``temperature``,
        ``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``), beam
        search and beam sampling (``num_beams``, ``length_penalty``, ``early_stopping``,
        ``num_return_sequences``), and assisted decoding (``assistant_model`` or
        ``prompt_lookup_num_tokens``, greedy only). Any setting of :class:`GenerationConfig` can
        be passed as a keyword; ``input_ids``, ``attention_mask`` (left padding) and
        ``past_key_values`` (a :class:`DynamicCache` or :class:`StaticCache` to fill or to
        continue from) are model inputs; ``tokenizer`` is needed for ``stop_strings`` and
        ``token_healing`` (see :mod:`torchformers.generation.healing`).

        Returns the prompt followed by the generated tokens, (batch * num_return_sequences,
        length), or a :class:`GenerateDecoderOnlyOutput` / :class:`GenerateBeamDecoderOnlyOutput`
        with ``return_dict_in_generate=True``. Sequences that finish early are padded with
        ``pad_token_id`` (the first ``eos_token_id`` when there is none), as in the reference.

        Differences from the reference: assisted decoding is greedy only and needs the same
        tokenizer; an empty prompt (length 0) with a BOS token starts from BOS; a cache that
        already holds the whole prompt has its last position recomputed.
        """
        for name, value, what in (
            ("synced_gpus", synced_gpus, "multi-GPU synchronized generation"),
            ("custom_generate", custom_generate, "custom decoding loops from the Hub"),
        ):
            if value is not None and value is not False:
                raise UnsupportedArgumentError(f"generate(): {name} ({what}) is not supported.")
        tokenizer = kwargs.pop("tokenizer", None)
        model_inputs = {key: kwargs.pop(key) for key in _MODEL_INPUTS if key in kwargs}
        config = _prepare_config(self, generation_config, kwargs)
        mode = config.get_generation_mode(assistant_model)
        _check_options(self, config, mode, assistant_model, streamer)
        guidance = _guidance(self, config, mode, negative_prompt_ids, negative_prompt_attention_mask)

        device = self.device
        input_ids, attention_mask = _prepare_prompt(self, inputs, model_inputs, config, device)
        eos = _token_ids(config.eos_token_id, device)
        pad = config.pad_token_id if config.pad_token_id is not None else (int(eos[0]) if eos is not None else None)
        attention_mask = _prepare_attention_mask(input_ids, attention_mask, config.pad_token_id, eos)

        prompt_ids = input_ids  # one row per input: what the encoder_* settings look at
        expand = max(config.num_beams, config.num_return_sequences)
        if expand > 1:
            input_ids = input_ids.repeat_interleave(expand, dim=0)
            attention_mask = attention_mask.repeat_interleave(expand, dim=0) if attention_mask is not None else None
        if config.token_healing:
            # The healed prompts are re-tokenized: their padding is read from the pad token.
            input_ids = heal_tokens(self, input_ids, tokenizer)
            attention_mask = _prepare_attention_mask(input_ids, None, config.pad_token_id, eos)
        if streamer is not None:
            streamer.put(input_ids.cpu())

        prompt_length = input_ids.shape[1]
        _prepare_lengths(self, config, prompt_length)
        cache, start = _prepare_cache(config, model_inputs.get("past_key_values"), input_ids)

        padding_lengths = (attention_mask != 0).int().argmax(dim=1) if attention_mask is not None else None
        processors = build_logits_processors(
            config, prompt_length=prompt_length, eos_token_ids=eos, padding_lengths=padding_lengths,
            custom=logits_processor or (), prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, device=device,
            encoder_input_ids=prompt_ids, guidance=guidance, vocab_size=self.config.vocab_size,
        )
        criteria = _build_stopping_criteria(self, config, eos, tokenizer, stopping_criteria or ())

        with ModelStepper(
            self, cache, attention_mask, config.max_length, prefill_chunk_size=config.prefill_chunk_size,
            decode_call=_compiled_call(self, config, cache),
            output_attentions=config.output_attentions and config.return_dict_in_generate,
            output_hidden_states=config.output_hidden_states and config.return_dict_in_generate,
        ) as stepper:
            tokens = input_ids.new_empty(input_ids.shape[0], config.max_length)
            tokens[:, :prompt_length] = input_ids
            recorder = Recorder.for_config(config)
            common = dict(prompt_length=prompt_length, start=start, max_length=config.max_length,
                          processors=processors, criteria=criteria, recorder=recorder)
            if mode in ("beam_search", "beam_sample"):
                fill = (pad if pad else int(eos[0])) if eos is not None else -1  # the reference's choice
                result = beam_search(
                    stepper, tokens, num_beams=config.num_beams, num_return_sequences=config.num_return_sequences,
                    length_penalty=config.length_penalty, early_stopping=config.early_stopping,
                    do_sample=config.do_sample, eos_count=0 if eos is None else len(eos), fill_value=fill, **common,
                )
            elif mode == "assisted_generation":
                drafter = _make_drafter(self, config, assistant_model, processors, eos)
                result = assisted_decoding(stepper, tokens, drafter=drafter, eos_token_ids=eos, streamer=streamer,
                                           **common)
            else:
                finishing = any(hasattr(criterion, "eos_token_id") for criterion in criteria)
                if finishing and pad is None:
                    raise GenerationError(
                        "A stopping criterion ends sequences at end-of-sequence tokens, but neither pad_token_id nor "
                        "eos_token_id is set to pad the sequences that finish first; pass pad_token_id=..."
                    )
                result = greedy_or_sample(stepper, tokens, do_sample=config.do_sample,
                                          pad_finished_with=pad if finishing else None, streamer=streamer, **common)
        if streamer is not None:
            streamer.end()
        return _package(result, config, cache, beams=mode in ("beam_search", "beam_sample"))


    def compute_transition_scores(
        self,
        sequences: torch.Tensor,
        scores: tuple[torch.Tensor, ...],
        beam_indices: torch.Tensor | None = None,
        normalize_logits: bool = False,
    ) -> torch.Tensor:
        """The score of each generated token, (rows, generated length), from ``generate``'s outputs.

        ``scores`` are the per-step scores (``output_scores=True``); for beam search pass the
        output's ``beam_indices``, which say which beam's scores each token was chosen from.
        ``normalize_logits=True`` turns each step's scores into log-probabilities first.
        Positions after a beam ended are 0.
        """
        steps = len(scores)
        stacked = torch.stack(scores, dim=1)  # (beams or rows, steps, vocab)
        if normalize_logits:
            stacked = stacked.log_softmax(dim=-1)
        if beam_indices is None:
            beam_indices = torch.arange(stacked.shape[0], device=stacked.device)[:, None].expand(-1, steps)
        beam_indices = beam_indices.to(stacked.device)
        valid = beam_indices >= 0
        length = int(valid.sum(dim=-1).max())
        valid = valid[:, :length]
        rows = beam_indices[:, :length].clamp(min=0)
        tokens = sequences[:, sequences.shape[1] - length:].to(stacked.device)
        step = torch.arange(length, device=stacked.device)[None, :]
        return stacked[rows, step, tokens].masked_fill(~valid, 0.0)


# -- preparation steps ------------------------------------------------------------------------------
def _prepare_config(model: Any, passed: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """The model's generation config, overridden by what ``passed`` sets, then by keyword arguments."""
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    if passed is not None:
        if not isinstance(passed, GenerationConfig):
            raise UnsupportedArgumentError(
                f"generation_config must be a GenerationConfig, got {type(passed).__name__}."
            )
        config = config.merged_with(passed)
    settings = {key: value for key, value in kwargs.items() if hasattr(config, key) and not key.startswith("_")}
    unknown = sorted(set(kwargs) - set(settings))
    if unknown:
        raise UnsupportedArgumentError(
            f"generate() got arguments that are neither generation settings nor supported model inputs: {unknown}. "
            f"Model inputs are {list(_MODEL_INPUTS)}; settings are the attributes of GenerationConfig."
        )
    config.update(**settings)
    if config.cache_implementation == "hybrid":
        # Older files name the sliding-window cache "hybrid"; the reference now uses the dynamic cache
        # for them, and so does the cache here (the models apply windows in their masks).
        config.cache_implementation = None
    return config


def _guidance(model: Any, config: GenerationConfig, mode: str, negative_ids: torch.Tensor | None,
              negative_mask: torch.Tensor | None) -> UnbatchedClassifierFreeGuidanceLogitsProcessor | None:
    """The classifier-free guidance processor ``guidance_scale`` asks for, over the negative prompt if one is given."""
    if config.guidance_scale is None or config.guidance_scale == 1:
        if negative_ids is not None or negative_mask is not None:
            raise GenerationError(
                "generate(): negative_prompt_ids and negative_prompt_attention_mask are used only by classifier-free "
                "guidance; set guidance_scale (other than 1) or drop them."
            )
        return None
    if mode == "assisted_generation":
        raise UnsupportedArgumentError(
            "generate(): classifier-free guidance (guidance_scale) cannot be combined with assisted decoding."
        )
    if negative_mask is not None and negative_ids is None:
        raise GenerationError("generate(): negative_prompt_attention_mask needs negative_prompt_ids.")
    device = model.device
    return UnbatchedClassifierFreeGuidanceLogitsProcessor(
        config.guidance_scale, model,
        negative_ids.to(device) if negative_ids is not None else None,
        negative_mask.to(device) if negative_mask is not None else None,
        use_cache=config.use_cache,
    )


def _check_options(model: Any, config: GenerationConfig, mode: str, assistant_model: Any, streamer: Any) -> None:
    for key, (active, feature) in _UNSUPPORTED_SETTINGS.items():
        if active(getattr(config, key)):
            raise UnsupportedArgumentError(
                f"generate(): {key}={getattr(config, key)!r} asks for {feature}, which torchformers does not support."
            )
    if config.cache_implementation not in _SUPPORTED_CACHES:
        raise UnsupportedArgumentError(
            f"generate(): cache_implementation={config.cache_implementation!r} is not supported; use None "
            "(dynamic) or 'static'."
        )
    if mode in ("beam_search", "beam_sample") and streamer is not None:
        raise GenerationError("generate(): a streamer cannot be used with beam search; set num_beams=1.")
    if mode == "assisted_generation":
        if config.do_sample:
            raise UnsupportedArgumentError(
                "generate(): assisted decoding (assistant_model / prompt_lookup_num_tokens) is greedy only in "
                "torchformers; do_sample=True is not supported with it."
            )
        if config.num_return_sequences > 1:
            raise GenerationError("generate(): assisted decoding returns one sequence; set num_return_sequences=1.")
        if config.cache_implementation == "static" or not config.use_cache:
            raise GenerationError("generate(): assisted decoding needs the dynamic cache (use_cache=True, no static cache).")
        if config.output_attentions or config.output_hidden_states:
            raise UnsupportedArgumentError(
                "generate(): output_attentions / output_hidden_states are not supported with assisted decoding."
            )
        if assistant_model is not None:
            if config.prompt_lookup_num_tokens is not None:
                raise GenerationError("generate(): pass either assistant_model or prompt_lookup_num_tokens, not both.")
            ours = getattr(model.config, "vocab_size", None)
            theirs = getattr(assistant_model.config, "vocab_size", None)
            if ours != theirs:
                raise UnsupportedArgumentError(
                    f"generate(): the assistant's vocabulary ({theirs}) differs from the model's ({ours}); assisted "
                    "decoding with different tokenizers is not supported."
                )
    elif assistant_model is not None:
        raise GenerationError(f"generate(): assistant_model works with greedy decoding only, not with {mode}.")


def _token_ids(value: int | list[int] | None, device: torch.device) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.tensor([value] if isinstance(value, int) else list(value), dtype=torch.long, device=device)


def _prepare_prompt(
    model: Any, inputs: Any, model_inputs: dict[str, Any], config: GenerationConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt as a (batch, length) long tensor on the model's device, and its mask."""
    input_ids = model_inputs.get("input_ids")
    if inputs is not None and input_ids is not None:
        raise GenerationError("generate(): pass the prompt either as inputs or as input_ids, not both.")
    input_ids = inputs if inputs is not None else input_ids
    attention_mask = model_inputs.get("attention_mask")
    if input_ids is not None and not isinstance(input_ids, torch.Tensor):
        lengths = {len(row) for row in input_ids} if all(isinstance(r, (list, tuple)) for r in input_ids) else set()
        if len(lengths) > 1:
            raise GenerationError(
                "generate(): the prompts have different lengths; pad them on the left into one tensor with an "
                "attention_mask (tokenizer(texts, padding=True, padding_side='left', return_tensors='pt')); "
                "a tokenizer without a pad token needs tokenizer.pad_token = tokenizer.eos_token first."
            )
        raise GenerationError(
            f"generate(): input_ids must be a torch.LongTensor of shape (batch, length), got {type(input_ids).__name__}."
        )
    if input_ids is None or input_ids.shape[-1] == 0:
        batch = 1 if input_ids is None else (input_ids.shape[0] if input_ids.dim() == 2 else 1)
        if config.bos_token_id is None:
            raise GenerationError(
                "generate(): the prompt is empty and the model has no bos_token_id to start from; pass at least one "
                "token, or set bos_token_id."
            )
        input_ids = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device)
        attention_mask = None
    if input_ids.dim() != 2:
        raise GenerationError(
            f"generate(): input_ids must have shape (batch, length), got {list(input_ids.shape)}; use ids[None] for "
            "a single sequence."
        )
    if input_ids.shape[0] == 0:
        raise GenerationError("generate(): the batch is empty; pass at least one prompt.")
    if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise GenerationError(f"generate(): input_ids must hold integer token ids, got {input_ids.dtype}.")
    input_ids = input_ids.to(device=device, dtype=torch.long)
    vocab = getattr(model.config, "vocab_size", None)
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise GenerationError(
            f"generate(): input_ids hold token ids from {low} to {high}, outside the vocabulary [0, {vocab}); "
            "check the tokenizer matches the model."
        )
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            shape = list(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
            raise GenerationError(
                f"generate(): attention_mask must have the shape of input_ids {list(input_ids.shape)}, got {shape}."
            )
        attention_mask = attention_mask.to(device=device, dtype=torch.long)
    return input_ids, attention_mask


def _prepare_attention_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_token_id: int | None, eos: torch.Tensor | None
) -> torch.Tensor | None:
    """The padding mask to use, or None when there is no padding (the fast path).

    Without a mask, padding is inferred from ``pad_token_id`` as the reference does: only when
    the pad token appears in the prompt and is not also an end-of-sequence token.
    """
    if attention_mask is None:
        if pad_token_id is None or (eos is not None and bool((eos == pad_token_id).any())):
            return None
        if not bool((input_ids == pad_token_id).any()):
            return None
        attention_mask = (input_ids != pad_token_id).long()
    if bool(attention_mask.all()):
        return None
    if input_ids.shape[0] > 1 and not bool(attention_mask[:, -1].all()):
        logger.warning(
            "generate(): the batch looks right-padded (attention_mask ends in 0); decoder-only models need left "
            "padding (padding_side='left') for correct results."
        )
    if not bool(attention_mask.any(dim=1).all()):
        raise GenerationError("generate(): a prompt in the batch is all padding; give every row at least one token.")
    return attention_mask


def _position_table_size(model: nn.Module) -> int | None:
    """The size of a learned position-embedding table, if the model has one (positions past it do not exist)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_TABLE_NAMES:
            return module.num_embeddings
    return None


def _prepare_lengths(model: Any, config: GenerationConfig, prompt_length: int) -> None:
    """Turn the length settings into absolute ``max_length`` / ``min_length``, as the reference does."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if config.max_new_tokens is not None:
        max_length = prompt_length + config.max_new_tokens
    elif not config.is_set("max_length"):
        # An unset max_length means 20 new tokens, within the model's positions.
        max_length = config.max_length + prompt_length
        if max_positions is not None:
            max_length = min(max_length, max_positions)
    else:
        max_length = config.max_length
    if prompt_length >= max_length:
        raise GenerationError(
            f"generate(): the prompt has {prompt_length} tokens but max_length is {max_length}, so there is no room "
            "to generate; set max_new_tokens (or a larger max_length)."
        )
    table = _position_table_size(model)
    if table is not None and max_length > table:
        raise GenerationError(
            f"generate(): {max_length} tokens (prompt {prompt_length} + new {max_length - prompt_length}) exceed the "
            f"model's {table} learned positions; lower max_new_tokens to at most {table - prompt_length}."
        )
    if max_positions is not None and max_length > max_positions:
        logger.warning(
            "generate(): max_length %d exceeds the model's max_position_embeddings %d; outputs past that length may "
            "degrade.", max_length, max_positions,
        )
    min_length = prompt_length + config.min_new_tokens if config.min_new_tokens is not None else config.min_length
    config.max_length, config.min_length = max_length, min_length


def _prepare_cache(config: GenerationConfig, user_cache: Any, input_ids: torch.Tensor) -> tuple[Any, int]:
    """The KV cache to decode with and how many prompt tokens it already holds."""
    prompt_length = input_ids.shape[1]
    if user_cache is not None:
        if config.cache_implementation is not None:
            raise GenerationError("generate(): pass either past_key_values or cache_implementation, not both.")
        if not isinstance(user_cache, (DynamicCache, StaticCache)):
            raise GenerationError(
                f"generate(): past_key_values must be a DynamicCache or StaticCache, got {type(user_cache).__name__} "
                "(tuples of tensors are not supported)."
            )
        if isinstance(user_cache, StaticCache) and user_cache.max_cache_len < config.max_length - 1:
            raise GenerationError(
                f"generate(): the StaticCache holds {user_cache.max_cache_len} positions but generating to "
                f"max_length {config.max_length} needs {config.max_length - 1}."
            )
        if not config.use_cache:
            raise GenerationError("generate(): use_cache=False contradicts the past_key_values passed.")
        # Room for the whole generation now, so decode steps never grow the cache (see .search).
        if isinstance(user_cache, DynamicCache):
            user_cache.reserve(config.max_length)
        start = user_cache.get_seq_length()
        if start:
            if user_cache.batch_size != input_ids.shape[0]:
                raise GenerationError(
                    f"generate(): the cache holds {user_cache.batch_size} sequences but the batch has "
                    f"{input_ids.shape[0]} (num_beams and num_return_sequences multiply it)."
                )
            if start > prompt_length:
                raise GenerationError(
                    f"generate(): the cache holds {start} positions but the prompt has only {prompt_length} tokens; "
                    "pass the full sequence the cache was built from (plus any new tokens)."
                )
            if start == prompt_length:  # nothing new: recompute the last position to get its logits
                user_cache.crop(start - 1)
                start -= 1
        return user_cache, start
    if not config.use_cache:
        return None, 0
    if config.cache_implementation == "static":
        return StaticCache(max_cache_len=max(config.max_length, config.max_cache_len or 0)), 0
    return DynamicCache(capacity=config.max_length), 0


# CompileConfig settings -> the compiled step. Compiled once per settings and shared by every model:
# dynamo keeps one graph per model object (it guards on it), and nothing here keeps a model alive.
_COMPILED_CALLS: dict[tuple, Callable[..., Any]] = {}


def _run_model(model: nn.Module, inputs: dict[str, Any]) -> Any:
    return model(**inputs)


def _compiled_call(model: nn.Module, config: GenerationConfig, cache: Any) -> Callable[..., Any] | None:
    """What decode steps call instead of the model (``call(model, inputs)``), or None to run it eagerly.

    Compiled with ``config.compile_config`` when the cache is static; a CUDA model with a
    static cache compiles with the default settings unless ``disable_compile`` is set.
    """
    settings = config.compile_config
    if config.disable_compile:
        return None
    if not isinstance(cache, StaticCache):
        if settings is not None:
            raise GenerationError(
                "generate(): compile_config compiles decode steps over a static cache; pass "
                "cache_implementation='static' (or a StaticCache as past_key_values), or drop compile_config."
            )
        return None
    if settings is None:
        if model.device.type != "cuda":
            return None
        settings = CompileConfig()
    if settings.options is not None and settings.mode is not None:
        raise GenerationError(
            "generate(): CompileConfig takes either mode or options (torch.compile accepts one of them); set "
            "mode=None to pass options."
        )
    dynamic = True if settings.dynamic is None else settings.dynamic  # see CompileConfig
    key = (settings.fullgraph, dynamic, settings.backend, settings.mode, repr(settings.options))
    if settings.model_guards == "fingerprint":
        if "guard_filter_fn" in (settings.options or {}):
            raise GenerationError(
                "generate(): CompileConfig(model_guards='fingerprint') sets dynamo's guard filter itself; drop "
                "guard_filter_fn from options, or keep model_guards='dynamo'."
            )
        return _FingerprintedStep(settings, dynamic, key)
    if key not in _COMPILED_CALLS:
        _COMPILED_CALLS[key] = torch.compile(_run_model, fullgraph=settings.fullgraph, dynamic=dynamic,
                                             backend=settings.backend, mode=settings.mode, options=settings.options)
    return _COMPILED_CALLS[key]


_STEPS_ATTRIBUTE = "_fingerprinted_steps"  # on the model: {settings: (fingerprint, compiled step)}
_PLAIN_VALUES = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device)
_MODULE_INTERNALS = frozenset(("_parameters", "_buffers", "_modules", "training", _STEPS_ATTRIBUTE)) | EAGER_ONLY_CACHES


class _FingerprintedStep:
    """The decode steps of one ``generate()`` call with ``CompileConfig(model_guards="fingerprint")``:
    at the first, the model's compiled step is looked up by fingerprint (compiled if none fits);
    the others call it directly."""

    def __init__(self, settings: CompileConfig, dynamic: bool, key: tuple) -> None:
        self.settings = settings
        self.dynamic = dynamic
        self.key = key
        self.step: Callable[..., Any] | None = None

    def __call__(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        if self.step is None:
            self.step = _fingerprinted_step(model, self.settings, self.dynamic, self.key)
        return self.step(model, inputs)


def _fingerprinted_step(model: nn.Module, settings: CompileConfig, dynamic: bool, key: tuple) -> Callable[..., Any]:
    steps = model.__dict__.setdefault(_STEPS_ATTRIBUTE, {})
    fingerprint = model_fingerprint(model)
    kept = steps.get(key)
    if kept is not None and kept[0] == fingerprint:
        return kept[1]
    options = dict(settings.options or {})
    if settings.backend == "inductor" and settings.mode is not None:
        # torch.compile takes mode or options; the mode's own options carry it.
        options = {**torch._inductor.list_mode_options(settings.mode, dynamic), **options}
    options["guard_filter_fn"] = _drop_model_guards
    # A code object of its own: dynamo keeps compiled graphs per code object, so this model's
    # graphs serve no other model (their module guards are gone) and go when it drops them.
    function = types.FunctionType(_run_model.__code__.replace(), _run_model.__globals__, _run_model.__name__)
    step = torch.compile(function, fullgraph=settings.fullgraph, dynamic=dynamic, backend=settings.backend,
                         options=options)
    steps[key] = (fingerprint, step)
    return step


def _drop_model_guards(entries: list[Any]) -> list[bool]:
    """Which guards to keep: all but the nn-module guards of the compiled function's own ``model``
    argument (torch's filter, narrowed). Frames that a graph break compiles apart (a decoder
    layer's forward, shared by every layer) keep theirs: what tells their modules apart is
    exactly those guards."""
    dropped_by_torch = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
    return [keep or not (entry.name == "model" or entry.name.startswith(("model.", "model[")))
            for keep, entry in zip(dropped_by_torch, entries, strict=True)]


def model_fingerprint(model: nn.Module) -> tuple:
    """What dynamo's guards on a model's modules check, as one comparable value: each module's
    name, type, training flag and hooks, each parameter's and buffer's metadata, and the
    modules' plain attributes (two levels into the objects they hold, such as the config)."""
    from torch.nn.modules import module as module_globals

    global_hooks = tuple(len(getattr(module_globals, name)) for name in dir(module_globals)
                         if name.startswith("_global_") and isinstance(getattr(module_globals, name), dict))
    entries: list[Any] = [global_hooks]
    for name, module in model.named_modules(remove_duplicate=False):
        tensors = tuple((key, _value_print(value, 0)) for key, value in
                        (*module._parameters.items(), *module._buffers.items()))
        attributes = tuple((key, _value_print(value, 2)) for key, value in module.__dict__.items()
                           if key not in _MODULE_INTERNALS)
        entries.append((name, type(module), module.training, tensors, attributes))
    return tuple(entries)


def _value_print(value: Any, depth: int) -> Any:
    """A comparable stand-in for ``value``: itself for plain values, metadata for tensors, contents
    (``depth`` levels down) for containers and plain objects, identity below that."""
    if isinstance(value, _PLAIN_VALUES):
        return value
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.stride() if value.layout == torch.strided else None,
                value.device, value.requires_grad)
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if isinstance(value, dict):
        # Hook dicts are compared by their entries too (a hook added later must be called).
        inner = tuple((key, _value_print(item, depth - 1)) for key, item in value.items()) if depth > 0 else len(value)
        return ("dict", id(value), inner)
    if isinstance(value, (list, tuple)) and depth > 0:
        return (type(value), tuple(_value_print(item, depth - 1) for item in value))
    if depth > 0 and hasattr(value, "__dict__") and not callable(value):
        return (type(value), id(value), tuple((key, _value_print(item, depth - 1)) for key, item in vars(value).items()))
    return (type(value), id(value))


def _build_stopping_criteria(
    model: Any, config: GenerationConfig, eos: torch.Tensor | None, tokenizer: Any, custom: Any
) -> StoppingCriteriaList:
    criteria = StoppingCriteriaList([MaxLengthCriteria(config.max_length,
                                                       getattr(model.config, "max_position_embeddings", None))])
    if config.max_time is not None:
        criteria.append(MaxTimeCriteria(config.max_time))
    if config.stop_strings is not None:
        if tokenizer is None:
            raise GenerationError(
                "generate(): stop_strings need the model's tokenizer to match text; pass tokenizer=... to generate()."
            )
        criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
    if eos is not None:
        criteria.append(EosTokenCriteria(eos))
    return merge_custom(criteria, custom, StoppingCriteriaList)


def _make_drafter(
    model: Any, config: GenerationConfig, assistant_model: Any, processors: LogitsProcessorList,
    eos: torch.Tensor | None,
) -> PromptLookupCandidates | AssistantCandidates:
    if assistant_model is None:
        return PromptLookupCandidates(config.prompt_lookup_num_tokens, config.max_matching_ngram_size or 2, eos)
    return AssistantCandidates(assistant_model, processors, DynamicCache(capacity=config.max_length))


def _package(
    result: DecodeResult, config: GenerationConfig, cache: Any, beams: bool
) -> torch.LongTensor | GenerateDecoderOnlyOutput | GenerateBeamDecoderOnlyOutput:
    if not config.return_dict_in_generate:
        return result.sequences
    recorded = result.recorder.as_tuples()
    if beams:
        return GenerateBeamDecoderOnlyOutput(
            sequences=result.sequences,
            sequences_scores=result.sequences_scores if config.output_scores else None,
            beam_indices=result.beam_indices, past_key_values=cache, **recorded,
        )
    return GenerateDecoderOnlyOutput(sequences=result.sequences, past_key_values=cache, **recorded)
