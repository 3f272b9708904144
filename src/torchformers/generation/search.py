"""Decoding loops: greedy and multinomial sampling, beam search, assisted decoding.

Every loop writes into a preallocated (batch, max_length) token buffer and hands the model
views of it; :class:`ModelStepper` owns what the model needs besides the tokens (the KV
cache, the padding mask and the position ids), so a decode step builds no masks and grows
no tensors. The loops follow the reference library's semantics step for step (processor
order, how finished sequences are padded, how beams are scored and kept), so they choose
the same tokens.

The prompt is fed under ``no_grad`` and the decode steps run under ``inference_mode``,
which skips autograd's bookkeeping on every op (about 8% of a small model's step on the
CPU). Everything that outlives ``generate`` is made outside inference mode: the token
buffer and the cache's buffers (allocated while feeding the prompt, with room for the
whole generation) are ordinary tensors, and recorded scores and final beams are copied on
the way out, so callers can use them freely, in place or with autograd.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..nn.linear import packed_for_decoding
from .logits import LogitsProcessorList
from .stopping import MaxLengthCriteria, StoppingCriteriaList

# A score low enough that a candidate can never be picked (the reference's constant).
_NEVER = -1.0e9
# A batch's decode steps use packed weights (see nn.linear.packed_for_decoding) when, at the first
# decode step, at least this many steps are left before max_length: packing costs about 12 steps' saving
# (llama-135m shape, 8 rows), so short generations skip it. None: never pack.
PACK_WHEN_STEPS_LEFT: int | None = 24


class ModelStepper:
    """Runs a causal LM over a growing sequence, a few positions at a time.

    ``attention_mask`` is the prompt's padding mask, or ``None`` when the prompt has no
    padding: then the model gets no mask at all and computes positions from the cache.
    With padding, a (batch, max_length) mask buffer (ones past the prompt) and the position
    ids derived from it are built once and sliced at each step. Use it as a context manager:
    what it sets up for long batch generations (packed weights) ends with the block.
    """

    def __init__(
        self,
        model: Any,
        cache: Any,
        attention_mask: torch.Tensor | None,
        max_length: int,
        *,
        prefill_chunk_size: int | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        decode_call: Any = None,
    ) -> None:
        self.model = model
        self.decode_call = decode_call  # call(model, inputs) for decode steps (a compiled one); None: the model
        self.cache = cache  # None: no cache, every call feeds the whole sequence
        self.prefill_chunk_size = prefill_chunk_size
        self.max_length = max_length
        self.mask = None
        self.positions = None
        if attention_mask is not None:
            batch, prompt_length = attention_mask.shape
            self.mask = attention_mask.new_ones(batch, max(max_length, prompt_length))
            self.mask[:, :prompt_length] = attention_mask
            self.positions = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)
        self.extra = {}
        if output_attentions:
            self.extra["output_attentions"] = True
        if output_hidden_states:
            self.extra["output_hidden_states"] = True
        self.takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.last_outputs: Any = None
        self.decode_steps = 0
        self._resources: ExitStack | None = None  # set while used as a context manager

    def __enter__(self) -> ModelStepper:
        self._resources = ExitStack()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._resources.close()
        self._resources = None

    def prefill(self, tokens: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """Feed the prompt ``tokens[:, start:length]`` (the cache holds the first ``start``);
        returns the float32 logits of the next token, (batch, vocab).

        Without a cache the whole prompt is fed; with ``prefill_chunk_size`` it goes in chunks.
        """
        if self.cache is None:
            return self.feed(tokens[:, :length], 0)[:, -1]
        chunk = self.prefill_chunk_size or length - start
        for chunk_start in range(start, length, chunk):
            chunk_end = min(chunk_start + chunk, length)
            logits = self.feed(tokens[:, chunk_start:chunk_end], chunk_start)
        return logits[:, -1]

    def next_logits(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """Feed the newest token ``tokens[:, length - 1]``; returns the next token's logits (batch, vocab)."""
        if self.cache is None:
            return self.feed(tokens[:, :length], 0)[:, -1]
        self.decode_steps += 1
        if self.decode_steps == 1 and self._packs_weights(self.max_length - length):
            self._resources.enter_context(packed_for_decoding(self.model, tokens.shape[0]))
        return self.feed(tokens[:, length - 1:length], length - 1, call=self.decode_call)[:, -1]

    def _packs_weights(self, steps_left: int) -> bool:
        """Whether decode steps should use packed weights: a long generation, run inside the block."""
        return (PACK_WHEN_STEPS_LEFT is not None and steps_left >= PACK_WHEN_STEPS_LEFT
                and self._resources is not None)

    def feed(self, tokens: torch.Tensor, start: int, keep: int = 1, call: Any = None) -> torch.Tensor:
        """Run the model on ``tokens`` (batch, n) at sequence positions ``start .. start + n - 1``
        (after the cache's contents); returns float32 logits of the last ``keep`` positions.
        ``call(model, inputs)``, when given, runs the model (a compiled decode step)."""
        end = start + tokens.shape[1]
        inputs: dict[str, Any] = {"input_ids": tokens, "return_dict": True, **self.extra}
        if self.cache is not None:
            inputs["past_key_values"] = self.cache
            inputs["use_cache"] = True
        else:
            inputs["use_cache"] = False
        if self.mask is not None:
            inputs["attention_mask"] = self.mask[:, :end]
            inputs["position_ids"] = self.positions[:, start:end]
        if self.takes_logits_to_keep:
            inputs["logits_to_keep"] = keep
        outputs = self.model(**inputs) if call is None else call(self.model, inputs)
        self.last_outputs = outputs
        return outputs.logits[:, -keep:].float()


@dataclass
class Recorder:
    """Collects the per-step outputs ``return_dict_in_generate`` asks for."""

    scores: list | None = None
    logits: list | None = None
    attentions: list | None = None
    hidden_states: list | None = None

    @classmethod
    def for_config(cls, config: Any) -> Recorder:
        wanted = config.return_dict_in_generate
        return cls(
            scores=[] if wanted and config.output_scores else None,
            logits=[] if wanted and config.output_logits else None,
            attentions=[] if wanted and config.output_attentions else None,
            hidden_states=[] if wanted and config.output_hidden_states else None,
        )

    def record(self, scores: torch.Tensor, logits: torch.Tensor, stepper: ModelStepper) -> None:
        if self.scores is not None:
            self.scores.append(scores)
        if self.logits is not None:
            self.logits.append(logits)
        if self.attentions is not None:
            self.attentions.append(stepper.last_outputs.attentions)
        if self.hidden_states is not None:
            self.hidden_states.append(stepper.last_outputs.hidden_states)

    def scores_so_far(self) -> tuple | None:
        return tuple(self.scores) if self.scores is not None else None

    def as_tuples(self) -> dict[str, tuple | None]:
        """The recordings as tuples of ordinary tensors (copies of the steps' inference tensors)."""
        def plain(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.clone()
            return tuple(plain(v) for v in value) if isinstance(value, (tuple, list)) else value

        return {name: plain(value) if value is not None else None for name, value in
                (("scores", self.scores), ("logits", self.logits), ("attentions", self.attentions),
                 ("hidden_states", self.hidden_states))}


@dataclass
class DecodeResult:
    sequences: torch.Tensor
    recorder: Recorder
    sequences_scores: torch.Tensor | None = None
    beam_indices: torch.Tensor | None = None


def _trimmed(tokens: torch.Tensor, length: int) -> torch.Tensor:
    return tokens if length == tokens.shape[1] else tokens[:, :length].clone()


def _choose(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    if do_sample:
        # The reference library's draw: one multinomial sample from the softmax, so seeded runs match.
        return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return scores.argmax(dim=-1)


# -- greedy decoding and sampling ----------------------------------------------------------------
def greedy_or_sample(
    stepper: ModelStepper,
    tokens: torch.Tensor,
    prompt_length: int,
    start: int,
    max_length: int,
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    *,
    do_sample: bool,
    pad_finished_with: int | None,
    streamer: Any,
    recorder: Recorder,
) -> DecodeResult:
    """Pick one token per step (argmax, or a multinomial draw) until every sequence stops.

    ``tokens`` is the (batch, max_length) buffer holding the prompt; ``start`` is how many
    prompt tokens the cache already holds. With ``pad_finished_with`` set (there is an
    end-of-sequence criterion), finished sequences continue with that padding token.
    """
    batch = tokens.shape[0]
    unfinished = torch.ones(batch, dtype=torch.bool, device=tokens.device)
    # The loop bound is max_length: a step checks stopping criteria only if there are others.
    check = any(not isinstance(criterion, MaxLengthCriteria) for criterion in criteria)
    length = prompt_length
    logits = stepper.prefill(tokens, start, length)
    with torch.inference_mode():  # the steady state: see the module docstring
        while True:
            sequence = tokens[:, :length]
            scores = processors(sequence, logits) if processors else logits
            recorder.record(scores, logits, stepper)
            next_tokens = _choose(scores, do_sample)
            if pad_finished_with is not None:
                next_tokens = torch.where(unfinished, next_tokens, pad_finished_with)
            tokens[:, length] = next_tokens
            length += 1
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if check:
                unfinished &= ~criteria(tokens[:, :length], recorder.scores_so_far())
            if length >= max_length or (check and not bool(unfinished.any())):
                break
            logits = stepper.next_logits(tokens, length)
    return DecodeResult(_trimmed(tokens, length), recorder)


# -- beam search ------------------------------------------------------------------------------------
def _gather_beams(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``tensor[b, indices[b, j], ...]`` for every batch row b."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def beam_search(
    stepper: ModelStepper,
    tokens: torch.Tensor,
    prompt_length: int,
    start: int,
    max_length: int,
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    *,
    num_beams: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: bool | str,
    do_sample: bool,
    eos_count: int,
    fill_value: int,
    recorder: Recorder,
) -> DecodeResult:
    """Beam search (or beam sampling) over ``tokens``, a (batch * num_beams, max_length) buffer
    whose rows are the prompts repeated once per beam.

    As in the reference library: each step keeps the best ``max(2, 1 + eos_count) * num_beams``
    continuations of all beams, so that ``num_beams`` of them can go on even if the best
    ones end; a continuation that ends (a stopping criterion hits) and ranks among the top
    ``num_beams`` is scored ``sum of log-probs / generated_length ** length_penalty`` and
    competes for the ``num_beams`` finished slots. ``early_stopping`` decides when no running
    beam can beat the finished ones: ``True`` stops once ``num_beams`` sequences finished,
    ``False`` when the best running beam, scored at the current length, cannot beat the worst
    finished one, ``"never"`` when it cannot even at the best possible length.
    """
    device = tokens.device
    flat_batch = tokens.shape[0]
    batch = flat_batch // num_beams
    generated_room = max_length - prompt_length
    keep = max(2, 1 + eos_count) * num_beams
    top_beam_slots = torch.arange(keep, device=device) < num_beams

    running = torch.full((batch, num_beams, max_length), fill_value, dtype=torch.long, device=device)
    running[:, :, :prompt_length] = tokens[:, :prompt_length].view(batch, num_beams, prompt_length)
    finished = running.clone()
    # Only the first beam starts live, so the first step does not pick the same token num_beams times.
    running_scores = torch.zeros(batch, num_beams, device=device)
    running_scores[:, 1:] = _NEVER
    finished_scores = torch.full((batch, num_beams), _NEVER, device=device)
    is_finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    running_origins = torch.full((batch, num_beams, generated_room), -1, dtype=torch.int32, device=device)
    finished_origins = running_origins.clone()
    batch_offset = torch.arange(batch, device=device).view(-1, 1) * num_beams

    length = prompt_length
    flat_running = tokens[:, :prompt_length]
    logits = stepper.prefill(tokens, start, prompt_length)
    with torch.inference_mode():  # the steady state: see the module docstring
        while True:
            log_probs = processors(flat_running, F.log_softmax(logits, dim=-1))
            recorder.record(log_probs, logits, stepper)
            vocab = log_probs.shape[-1]
            totals = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)

            # a. the best `keep` continuations over all beams
            if do_sample:
                picked = torch.multinomial(F.softmax(totals, dim=-1), num_samples=keep)
                picked_scores = totals.gather(1, picked)
            else:
                picked_scores, picked = torch.topk(totals, keep)
            from_beam = picked // vocab
            candidates = _gather_beams(running, from_beam)
            candidates[:, :, length] = picked % vocab
            candidate_origins = _gather_beams(running_origins, from_beam)
            candidate_origins[:, :, length - prompt_length] = (from_beam + batch_offset).to(torch.int32)

            # b. which continuations end here
            ends = criteria(candidates[:, :, :length + 1].reshape(batch * keep, -1), recorder.scores_so_far())
            ends = ends.view(batch, keep)

            # c. the best num_beams continuations that go on
            live_scores = picked_scores + ends.to(torch.float32) * _NEVER
            best_live = torch.topk(live_scores, num_beams).indices
            running = _gather_beams(candidates, best_live)
            running_scores = _gather_beams(live_scores, best_live)
            running_origins = _gather_beams(candidate_origins, best_live)

            # d. continuations that end among the top num_beams compete for the finished slots
            just_finished = ends & top_beam_slots[None, :]
            final_scores = picked_scores / ((length + 1 - prompt_length) ** length_penalty)
            full = is_finished.all(dim=-1, keepdim=True) & (early_stopping is True)
            final_scores = final_scores + full.to(torch.float32) * _NEVER
            final_scores = final_scores + (~can_improve).to(torch.float32) * _NEVER
            final_scores = final_scores + (~just_finished).to(torch.float32) * _NEVER
            merged_scores = torch.cat((finished_scores, final_scores), dim=1)
            best_final = torch.topk(merged_scores, num_beams).indices
            finished = _gather_beams(torch.cat((finished, candidates), dim=1), best_final)
            finished_scores = _gather_beams(merged_scores, best_final)
            finished_origins = _gather_beams(torch.cat((finished_origins, candidate_origins), dim=1), best_final)
            is_finished = _gather_beams(torch.cat((is_finished, just_finished), dim=1), best_final)

            # e. keep the caches of the beams that go on
            if stepper.cache is not None:
                stepper.cache.reorder_cache(running_origins[:, :, length - prompt_length].reshape(-1).long())
            length += 1

            # f. can anything still change?
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_length
            else:
                best_length = length - prompt_length
            best_running = running_scores[:, :1] / (best_length ** length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, _NEVER)
            can_improve = can_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)
            go_on = can_improve.any() & ~(is_finished.all() & (early_stopping is True)) & ~ends.all()
            if length >= max_length or not bool(go_on):
                break
            flat_running = running[:, :, :length].reshape(flat_batch, length)
            logits = stepper.next_logits(flat_running, length)

        sequences = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, max_length)
        scores = finished_scores[:, :num_return_sequences].reshape(-1)
        origins = finished_origins[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
        generated = int((origins >= 0).sum(dim=1).max())
    return DecodeResult(
        sequences[:, :prompt_length + generated].clone(), recorder,
        sequences_scores=scores.clone(), beam_indices=origins[:, :generated].long().clone(),
    )


# -- assisted decoding ---------------------------------------------------------------------------------
class PromptLookupCandidates:
    """Draft tokens by finding the sequence's last n-gram earlier in the sequence (prompt lookup
    decoding) and proposing what followed it there."""

    def __init__(self, num_output_tokens: int, max_matching_ngram_size: int, eos_token_ids: torch.Tensor | None):
        self.num_output_tokens = num_output_tokens
        self.max_ngram = max_matching_ngram_size
        self.eos = eos_token_ids

    def draft(self, sequence: torch.Tensor, limit: int) -> torch.Tensor:
        """Up to ``limit`` draft tokens (1-D) following ``sequence`` (1, length)."""
        ids = sequence[0]
        length = ids.shape[0]
        limit = min(limit, self.num_output_tokens)
        if limit <= 0:
            return ids[:0]
        for size in range(min(self.max_ngram, length - 1), 0, -1):
            windows = ids.unfold(0, size, 1)  # every n-gram, by start position
            starts = (windows == ids[length - size:]).all(dim=1).nonzero().flatten().tolist()
            for first in starts:
                follow = first + size
                if follow >= length:
                    continue
                draft = ids[follow:min(follow + limit, length)]
                if self.eos is not None:
                    ends = torch.isin(draft, self.eos).nonzero()
                    if ends.numel():
                        draft = draft[: int(ends[0])]
                if draft.numel():
                    return draft.clone()  # the caller writes it back into the same buffer
        return ids[:0]

    def update(self, accepted: int, proposed: int) -> None:
        pass


class AssistantCandidates:
    """Draft tokens greedily with a smaller model that shares the tokenizer.

    The assistant keeps its own cache across rounds and is cropped back to the accepted
    tokens. ``num_assistant_tokens`` drafts per round; the "heuristic" schedule adds two
    after a fully accepted draft and removes one otherwise. Drafting also stops after a
    token the assistant gives less than ``assistant_confidence_threshold`` probability.
    """

    def __init__(self, assistant: Any, processors: LogitsProcessorList, cache: Any) -> None:
        self.assistant = assistant
        config = assistant.generation_config
        self.num_tokens = config.num_assistant_tokens if config is not None else 20
        self.schedule = config.num_assistant_tokens_schedule if config is not None else "constant"
        threshold = config.assistant_confidence_threshold if config is not None else None
        self.threshold = threshold or 0.0
        self.processors = processors
        self.stepper = ModelStepper(assistant, cache, None, 0)
        self.fed = 0  # sequence tokens in the assistant's cache

    def draft(self, sequence: torch.Tensor, limit: int) -> torch.Tensor:
        limit = min(limit, int(self.num_tokens))
        if limit <= 0:
            return sequence[0, :0]
        length = sequence.shape[1]
        self.stepper.cache.crop(min(self.fed, length - 1))
        self.fed = self.stepper.cache.get_seq_length()
        draft = sequence.new_empty(1, length + limit)
        draft[:, :length] = sequence
        logits = self.stepper.feed(sequence[:, self.fed:], self.fed)[:, -1]
        count = 0
        while True:
            scores = self.processors(draft[:, :length + count], logits) if self.processors else logits
            token = scores.argmax(dim=-1)
            draft[:, length + count] = token
            count += 1
            confident = self.threshold <= 0 or float(scores.softmax(-1)[0, token]) >= self.threshold
            if count >= limit or not confident:
                break
            logits = self.stepper.feed(draft[:, length + count - 1:length + count], length + count - 1)[:, -1]
        self.fed = length + count - 1
        return draft[0, length:length + count]

    def update(self, accepted: int, proposed: int) -> None:
        if self.schedule in ("heuristic", "heuristic_transient"):
            self.num_tokens = self.num_tokens + 2 if accepted == proposed else max(1, self.num_tokens - 1)


def assisted_decoding(
    stepper: ModelStepper,
    tokens: torch.Tensor,
    prompt_length: int,
    start: int,
    max_length: int,
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    *,
    drafter: PromptLookupCandidates | AssistantCandidates,
    eos_token_ids: torch.Tensor | None,
    streamer: Any,
    recorder: Recorder,
) -> DecodeResult:
    """Greedy decoding that checks several drafted tokens per model call (batch size 1).

    Each round the drafter proposes tokens; one forward pass over the last token and the
    draft gives the model's own choice at every drafted position. The draft is accepted up
    to the first disagreement, plus the model's token there, so the result is exactly what
    plain greedy decoding produces, only with fewer model calls when drafts are good.
    """
    length = prompt_length
    logits = stepper.prefill(tokens, start, length)
    scores = processors(tokens[:, :length], logits) if processors else logits
    recorder.record(scores, logits, stepper)
    tokens[:, length] = scores.argmax(dim=-1)
    length += 1
    if streamer is not None:
        streamer.put(tokens[:, length - 1:length].cpu())
    done = bool(criteria(tokens[:, :length], recorder.scores_so_far()).any())
    with torch.inference_mode():  # the steady state: see the module docstring
        while not done and length < max_length:
            # The cache holds tokens[:, :length - 1]; the last token and the draft go in together.
            draft = drafter.draft(tokens[:, :length], max_length - length - 1)
            proposed = draft.shape[0]
            tokens[0, length:length + proposed] = draft
            step_logits = stepper.feed(tokens[:, length - 1:length + proposed], length - 1, keep=proposed + 1)
            chosen = []
            for i in range(proposed + 1):
                step_scores = processors(tokens[:, :length + i], step_logits[:, i]) if processors else step_logits[:, i]
                choice = int(step_scores.argmax(dim=-1))
                chosen.append((choice, step_scores, step_logits[:, i]))
                if i == proposed or choice != int(draft[i]):
                    break
            new_tokens = [choice for choice, _, _ in chosen][: max_length - length]
            if eos_token_ids is not None:
                eos = set(eos_token_ids.tolist())
                for i, token in enumerate(new_tokens):
                    if token in eos:
                        new_tokens = new_tokens[: i + 1]
                        break
            accepted = len(new_tokens)
            drafter.update(accepted - 1, proposed)
            tokens[0, length:length + accepted] = torch.tensor(new_tokens, device=tokens.device)
            for _, step_scores, raw in chosen[:accepted]:
                recorder.record(step_scores, raw, stepper)
            length += accepted
            stepper.cache.crop(length - 1)
            if streamer is not None:
                streamer.put(tokens[:, length - accepted:length].cpu())
            done = bool(criteria(tokens[:, :length], recorder.scores_so_far()).any())
    return DecodeResult(_trimmed(tokens, length), recorder)

