"""Logits processors: the per-step edits ``generate`` makes to the next-token scores.

Each processor is called as ``processor(input_ids, scores)`` with the tokens so far
(batch, length) and the scores of the next token (batch, vocab), and returns new scores;
it never modifies its input, because ``generate`` may keep it for ``output_scores`` or
``output_logits``. Names, arguments and results are the reference library's, and
:func:`build_logits_processors` puts them in the reference's order, so processed scores
(and therefore sampled tokens) are the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..errors import ConfigError, GenerationError

NEG_INF = -float("inf")


def _token_tensor(token_ids: int | Iterable[int] | torch.Tensor, device: Any = "cpu") -> torch.Tensor:
    """Token ids as a 1-D long tensor."""
    if isinstance(token_ids, torch.Tensor):
        return token_ids.reshape(-1).to(device=device, dtype=torch.long)
    if isinstance(token_ids, int):
        token_ids = [token_ids]
    return torch.tensor(list(token_ids), dtype=torch.long, device=device)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ConfigError(f"{name} must be {kind} integer, got {value!r}.")


class _TokenColumns:
    """Some token ids as the score columns they name, kept per vocabulary size and device (ids
    outside the vocabulary are dropped)."""

    def __init__(self, token_ids: torch.Tensor) -> None:
        self.token_ids = token_ids
        self._columns: tuple[int, torch.device, torch.Tensor] | None = None

    def filled(self, scores: torch.Tensor, value: float = NEG_INF) -> torch.Tensor:
        """A copy of ``scores`` with these tokens' columns set to ``value``.

        ``index_fill`` writes the few columns only; ``masked_fill`` with a vocabulary-wide mask
        visits every score (15x slower for 8 rows of 49152 scores).
        """
        vocab = scores.shape[-1]
        if self._columns is None or self._columns[0] != vocab or self._columns[1] != scores.device:
            ids = self.token_ids.to(scores.device)
            self._columns = (vocab, scores.device, ids[(ids >= 0) & (ids < vocab)])
        return scores.index_fill(-1, self._columns[2], value)


class LogitsProcessor:
    """Base class: ``__call__(input_ids, scores) -> scores``."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores).")


class LogitsProcessorList(list):
    """A list of processors applied in order; extra keyword arguments go to processors that take them."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        for processor in self:
            extra = list(inspect.signature(processor.__call__).parameters)[2:] if kwargs else []
            if extra:
                missing = [name for name in extra if name not in kwargs]
                if missing:
                    raise GenerationError(f"{type(processor).__name__} needs the arguments {missing}.")
                scores = processor(input_ids, scores, **kwargs)
            else:
                scores = processor(input_ids, scores)
        return scores


# -- length and special-token processors -------------------------------------------------------
class MinLengthLogitsProcessor(LogitsProcessor):
    """Forbid the end-of-sequence tokens while the sequence (prompt included) is shorter than ``min_length``."""

    def __init__(self, min_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        _check_positive_int("min_length", min_length, minimum=0)
        self.min_length = min_length
        self.eos_token_id = _token_tensor(eos_token_id, device)
        self._eos_columns = _TokenColumns(self.eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.min_length:
            return self._eos_columns.filled(scores)
        return scores


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Forbid the end-of-sequence tokens until ``min_new_tokens`` tokens follow the prompt."""

    def __init__(
        self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: int | list[int] | torch.Tensor,
        device: str = "cpu",
    ) -> None:
        _check_positive_int("prompt_length_to_skip", prompt_length_to_skip, minimum=0)
        _check_positive_int("min_new_tokens", min_new_tokens, minimum=0)
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = _token_tensor(eos_token_id, device)
        self._eos_columns = _TokenColumns(self.eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            return self._eos_columns.filled(scores)
        return scores


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """Force ``bos_token_id`` as the first generated token when the prompt is a single token."""

    def __init__(self, bos_token_id: int) -> None:
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != 1:
            return scores
        forced = torch.full_like(scores, NEG_INF)
        forced[:, self.bos_token_id] = 0
        return forced


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """Force an end-of-sequence token as the last token before ``max_length``."""

    def __init__(self, max_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        self.max_length = max_length
        self.eos_token_id = _token_tensor(eos_token_id, device)
        if (self.eos_token_id < 0).any():
            raise ConfigError(f"forced_eos_token_id must be non-negative token ids, got {self.eos_token_id.tolist()}.")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        forced = torch.full_like(scores, NEG_INF)
        forced[:, self.eos_token_id.to(scores.device)] = 0
        return forced


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Give ``suppress_tokens`` a score of -inf at every step."""

    def __init__(self, suppress_tokens: Iterable[int], device: str = "cpu") -> None:
        self.suppress_tokens = _token_tensor(list(suppress_tokens), device)
        self._columns = _TokenColumns(self.suppress_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._columns.filled(scores)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """Give ``begin_suppress_tokens`` a score of -inf at the step that starts from ``begin_index`` tokens."""

    def __init__(self, begin_suppress_tokens: Iterable[int], begin_index: int, device: str = "cpu") -> None:
        self.begin_suppress_tokens = _token_tensor(list(begin_suppress_tokens), device)
        self.begin_index = begin_index
        self._columns = _TokenColumns(self.begin_suppress_tokens)

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return self._columns.filled(scores)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """Raise the end-of-sequence scores exponentially once ``start`` tokens have been generated.

    ``exponential_decay_length_penalty`` is ``(start, decay_factor)``; the boost after ``n``
    tokens past the start is ``|score| * (decay_factor ** n - 1)``.
    """

    def __init__(
        self, exponential_decay_length_penalty: tuple[int, float], eos_token_id: int | list[int] | torch.Tensor,
        input_ids_seq_length: int,
    ) -> None:
        start, factor = exponential_decay_length_penalty
        self.regulation_start = start + input_ids_seq_length
        self.regulation_factor = factor
        self.eos_token_id = _token_tensor(eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[-1]
        if length <= self.regulation_start:
            return scores
        eos = self.eos_token_id.to(scores.device)
        eos_scores = scores[:, eos]
        boost = eos_scores.abs() * (self.regulation_factor ** (length - self.regulation_start) - 1)
        penalties = torch.zeros_like(scores)
        penalties[:, eos] = boost.masked_fill(~torch.isfinite(eos_scores), 0.0)
        return scores + penalties


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """Replace NaN by 0 and +-inf by the dtype's largest and smallest values."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        info = torch.finfo(scores.dtype)
        return torch.nan_to_num(scores, nan=0.0, posinf=info.max, neginf=info.min)


class LogitNormalization(LogitsProcessor):
    """Turn the scores into log-probabilities (``renormalize_logits=True``); always the last processor."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.log_softmax(dim=-1)


# -- repetition controls ------------------------------------------------------------------------
class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Make tokens already in the sequence less likely: negative scores are multiplied by
    ``penalty``, positive ones divided by it (CTRL's penalty).

    ``prompt_ignore_length`` (an int, or one int per row) leaves that many leading tokens
    out; ``generate`` passes each row's left padding.
    """

    def __init__(self, penalty: float, prompt_ignore_length: int | torch.Tensor | None = None) -> None:
        if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or penalty <= 0:
            raise ConfigError(f"repetition_penalty must be a positive number, got {penalty!r}.")
        if isinstance(prompt_ignore_length, int) and prompt_ignore_length < 0:
            raise ConfigError(f"prompt_ignore_length must be non-negative, got {prompt_ignore_length}.")
        self.penalty = float(penalty)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            input_ids = input_ids[:, ignore:]
        elif isinstance(ignore, torch.Tensor):
            if ignore.shape[0] != input_ids.shape[0]:
                raise GenerationError(
                    f"RepetitionPenaltyLogitsProcessor: prompt_ignore_length has {ignore.shape[0]} rows for a batch of "
                    f"{input_ids.shape[0]}."
                )
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            # Ignored positions point at an extra column that is cut off at the end.
            input_ids = input_ids.masked_fill(positions[None, :] < ignore.to(input_ids.device)[:, None], vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        ids = input_ids.clamp(max=vocab)
        seen = padded.gather(1, ids)
        return padded.scatter(1, ids, _penalized(seen, self.penalty))[:, :vocab]


def _penalized(seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty on the scores of seen tokens: negative ones times ``penalty``, positive ones divided."""
    return torch.where(seen < 0, seen * penalty, seen / penalty)


class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Make the prompt's tokens more likely (``penalty`` > 1) or less (< 1): the inverse of
    :class:`RepetitionPenaltyLogitsProcessor`, applied to the tokens of ``encoder_input_ids``
    (the prompt as given to ``generate``, padding included, as in the reference library).
    Meant to keep a summary or an answer close to its source."""

    def __init__(self, penalty: float, encoder_input_ids: torch.LongTensor) -> None:
        if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or penalty <= 0:
            raise ConfigError(f"encoder_repetition_penalty must be a positive number, got {penalty!r}.")
        self.penalty = 1 / float(penalty)
        self.encoder_input_ids = encoder_input_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = self.encoder_input_ids.to(scores.device)
        ids = ids.repeat_interleave(max(1, scores.shape[0] // ids.shape[0]), dim=0)
        seen = scores.gather(1, ids)
        return scores.scatter(1, ids, _penalized(seen, self.penalty))


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Forbid any token that would repeat an n-gram of ``ngram_size`` tokens already in the sequence
    (prompt included)."""

    def __init__(self, ngram_size: int) -> None:
        _check_positive_int("no_repeat_ngram_size", ngram_size)
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.ngram_size:
            return scores
        windows = input_ids.unfold(1, self.ngram_size, 1)  # (batch, windows, n)
        return scores.masked_fill(_continuations(windows, input_ids, scores), NEG_INF)


def _continuations(windows: torch.Tensor, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """A (rows, vocab) mask of the tokens that would complete one of ``windows`` (rows, count, n):
    the last token of each n-gram whose first n - 1 tokens are the last n - 1 of ``input_ids``."""
    vocab = scores.shape[-1]
    n = windows.shape[-1]
    last_prefix = input_ids[:, input_ids.shape[-1] - n + 1:]  # the n-1 tokens the next token would extend
    repeats = (windows[..., :-1] == last_prefix[:, None, :]).all(dim=-1)
    banned_ids = torch.where(repeats, windows[..., -1].clamp(max=vocab), vocab)
    banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(1, banned_ids, True)
    return banned[:, :vocab]


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Forbid any token that would repeat an n-gram of ``encoder_ngram_size`` tokens of the prompt.

    ``encoder_input_ids`` (batch, length) is the prompt as given to ``generate`` (a decoder-only
    model's "encoder input", as the reference calls it); rows of beams or repeated sequences
    use their prompt's n-grams. Generated n-grams are not checked: ``no_repeat_ngram_size``
    does that.
    """

    def __init__(self, encoder_ngram_size: int, encoder_input_ids: torch.LongTensor) -> None:
        _check_positive_int("encoder_no_repeat_ngram_size", encoder_ngram_size)
        self.ngram_size = encoder_ngram_size
        prompt = encoder_input_ids if encoder_input_ids.dim() == 2 else encoder_input_ids[None]
        self.windows = prompt.unfold(1, encoder_ngram_size, 1) if prompt.shape[1] >= encoder_ngram_size else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.windows is None or input_ids.shape[-1] < self.ngram_size - 1:
            return scores
        windows = self.windows.to(input_ids.device)
        windows = windows.repeat_interleave(scores.shape[0] // windows.shape[0], dim=0)
        return scores.masked_fill(_continuations(windows, input_ids, scores), NEG_INF)


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add a bias to a token's score when it would complete one of the given token sequences.

    ``sequence_bias`` maps token-id tuples to biases (``{(12, 7): -3.0}``) or lists them as
    ``[[[12, 7], -3.0], ...]``. One-token sequences are biased at every step; longer ones only
    when the sequence so far ends with their prefix.
    """

    def __init__(self, sequence_bias: dict[tuple[int, ...], float] | list) -> None:
        self._set_biases(self._as_dict(sequence_bias))

    def _set_biases(self, sequence_bias: dict[tuple[int, ...], float]) -> None:
        self.sequence_bias = sequence_bias
        self._prepared_for: tuple[int, torch.device] | None = None

    @staticmethod
    def _as_dict(sequence_bias: Any) -> dict[tuple[int, ...], float]:
        if isinstance(sequence_bias, dict):
            items = list(sequence_bias.items())
        elif isinstance(sequence_bias, (list, tuple)):
            items = [(pair[0], pair[1]) for pair in sequence_bias if isinstance(pair, (list, tuple)) and len(pair) == 2]
            if len(items) != len(sequence_bias):
                items = []
        else:
            items = []
        valid = items and all(
            isinstance(tokens, (list, tuple)) and tokens
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens)
            and isinstance(bias, (int, float)) and not isinstance(bias, bool)
            for tokens, bias in items
        )
        if not valid:
            raise ConfigError(
                "sequence_bias must map non-empty token id sequences to float biases, as {(id, ...): bias} or "
                f"[[[id, ...], bias], ...]; got {sequence_bias!r}."
            )
        return {tuple(tokens): float(bias) for tokens, bias in items}

    def _prepare(self, scores: torch.Tensor) -> None:
        vocab, device = scores.shape[-1], scores.device
        too_large = sorted({t for tokens in self.sequence_bias for t in tokens if t >= vocab})
        if too_large:
            raise GenerationError(f"The vocabulary has {vocab} tokens, but these biased token ids are larger: {too_large}.")
        single = torch.zeros(vocab, dtype=scores.dtype, device=device)
        groups: dict[int, list[tuple[tuple[int, ...], float]]] = {}
        for tokens, bias in self.sequence_bias.items():
            if len(tokens) == 1:
                single[tokens[0]] = bias
            else:
                groups.setdefault(len(tokens) - 1, []).append((tokens, bias))
        self._single = single
        # per prefix length: prefixes (k, length), last tokens (k,), biases (k,)
        self._multi = [
            (
                torch.tensor([tokens[:-1] for tokens, _ in group], device=device),
                torch.tensor([tokens[-1] for tokens, _ in group], device=device),
                torch.tensor([bias for _, bias in group], dtype=scores.dtype, device=device),
            )
            for group in groups.values()
        ]
        self._prepared_for = (vocab, device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prepared_for != (scores.shape[-1], scores.device):
            self._prepare(scores)
        bias = self._single.expand_as(scores).clone()
        for prefixes, last_tokens, biases in self._multi:
            prefix_length = prefixes.shape[1]
            if prefix_length > input_ids.shape[1]:
                continue
            matches = (input_ids[:, None, -prefix_length:] == prefixes).all(dim=-1)  # (batch, k)
            bias.index_add_(1, last_tokens, torch.where(matches, biases, 0.0))
        return scores + bias


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Forbid the token sequences in ``bad_words_ids``: the last token of each gets -inf whenever
    the sequence so far ends with the rest. A bad word that is exactly an end-of-sequence token
    is ignored, so generation can still end."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | torch.Tensor | None = None):
        if not isinstance(bad_words_ids, (list, tuple)) or not bad_words_ids or not all(
            isinstance(word, (list, tuple)) and word
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in word)
            for word in bad_words_ids
        ):
            raise ConfigError(f"bad_words_ids must be a non-empty list of non-empty lists of token ids, got {bad_words_ids!r}.")
        self.bad_word_ids = bad_words_ids
        eos = [] if eos_token_id is None else _token_tensor(eos_token_id).tolist()
        kept = [word for word in bad_words_ids if not (len(word) == 1 and word[0] in eos)]
        self._set_biases({tuple(word): NEG_INF for word in kept})


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Allow only the tokens ``prefix_allowed_tokens_fn(batch_id, input_ids)`` returns for each row."""

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]], num_beams: int) -> None:
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, NEG_INF)
        for row in range(input_ids.shape[0]):
            allowed = self._prefix_allowed_tokens_fn(row // self._num_beams, input_ids[row])
            if len(allowed) == 0:
                raise GenerationError(
                    f"prefix_allowed_tokens_fn returned no token for batch row {row // self._num_beams}: the constraint "
                    "cannot be satisfied."
                )
            mask[row, allowed] = 0
        constrained = scores + mask
        # A row whose allowed tokens all score -inf falls back to a uniform choice among them.
        dead = constrained.amax(dim=-1).isneginf().view(-1, self._num_beams).all(dim=-1, keepdim=True)
        return torch.where(dead.repeat_interleave(self._num_beams, dim=0), mask, constrained)


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance for decoder-only models: push the next-token distribution away
    from an unconditional one, ``scale * (log p(x|prompt) - log p(x|u)) + log p(x|u)``.

    The unconditional run is a second pass of ``model`` with its own cache over
    ``unconditional_ids`` (a negative prompt; by default the prompt's last token), extended by
    each new token. Scores come out as log-probabilities, as in the reference library; like
    it, the unconditional pass follows each row's newest token and is not reordered when beams
    are.
    """

    def __init__(self, guidance_scale: float, model: Any, unconditional_ids: torch.LongTensor | None = None,
                 unconditional_attention_mask: torch.LongTensor | None = None, use_cache: bool = True) -> None:
        if not isinstance(guidance_scale, (int, float)) or isinstance(guidance_scale, bool):
            raise ConfigError(f"guidance_scale must be a number, got {guidance_scale!r}.")
        self.guidance_scale = guidance_scale
        self.model = model
        self.use_cache = use_cache
        self._ids = unconditional_ids
        self._mask = unconditional_attention_mask
        self._cache: Any = None
        self._started = False

    def _unconditional_log_probs(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if not self._started:
            self._started = True
            if self._ids is None:
                self._ids = input_ids[:, -1:]
            if self._mask is None:
                self._mask = torch.ones_like(self._ids, dtype=torch.long)
            ids = self._ids
        else:
            newest = input_ids[:, -1:]
            self._mask = torch.cat([self._mask, torch.ones_like(newest, dtype=torch.long)], dim=1)
            ids = newest if self.use_cache else torch.cat([self._ids, newest], dim=1)
            self._ids = ids
        output = self.model(ids, attention_mask=self._mask, use_cache=self.use_cache, past_key_values=self._cache)
        self._cache = getattr(output, "past_key_values", None)
        return torch.log_softmax(output.logits[:, -1].float(), dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = torch.log_softmax(scores, dim=-1)
        if self.guidance_scale == 1:
            return scores
        unconditional = self._unconditional_log_probs(input_ids)
        return self.guidance_scale * (scores - unconditional) + unconditional


# -- sampling warpers ---------------------------------------------------------------------------
class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by ``temperature`` (< 1 sharpens, > 1 flattens the distribution)."""

    def __init__(self, temperature: float) -> None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            hint = " For greedy decoding set do_sample=False." if temperature == 0 else ""
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}.{hint}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class TopHLogitsWarper(LogitsProcessor):
    """Top-H sampling (arXiv 2509.02510): keep the most likely tokens, in order, while the entropy
    they account for stays within ``top_h`` times the entropy of the distribution.

    As in the reference library, only the 100 highest scores are considered (their softmax is
    the distribution) and the most likely token is always kept; the rest get ``filter_value``.
    """

    candidates = 100

    def __init__(self, top_h: float, filter_value: float = NEG_INF) -> None:
        if not isinstance(top_h, (int, float)) or isinstance(top_h, bool) or not 0 < top_h <= 1:
            raise ConfigError(f"top_h must be in (0, 1], got {top_h!r}.")
        self.top_h = float(top_h)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top_scores, top_ids = torch.topk(scores, min(self.candidates, scores.shape[-1]), dim=-1)
        log_probs = top_scores - top_scores.logsumexp(dim=-1, keepdim=True)
        probs = torch.softmax(log_probs, dim=-1)
        # The same operations as torch.distributions.Categorical's entropy, so borderline cut-offs agree.
        entropy = -(log_probs.clamp(min=torch.finfo(log_probs.dtype).min) * probs).sum(dim=-1, keepdim=True)
        kept_entropy = torch.cumsum(-probs * torch.log(probs), dim=-1)
        keep_top = kept_entropy <= entropy * self.top_h
        keep_top[:, 0] = True
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_ids, keep_top)
        return scores.masked_fill(~keep, self.filter_value)


class TopKLogitsWarper(LogitsProcessor):
    """Keep the ``top_k`` highest scores (ties with the k-th included); the rest get ``filter_value``."""

    def __init__(self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> None:
        _check_positive_int("top_k", top_k)
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.shape[-1])
        kth_best = torch.topk(scores, k).values[..., -1:]
        return scores.masked_fill(scores < kth_best, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the most likely tokens whose probabilities add up to ``top_p``."""

    def __init__(self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> None:
        top_p = float(top_p)
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}.")
        _check_positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ascending, order = torch.sort(scores, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        # Drop the low tail holding at most 1 - top_p of the mass; always keep the best few.
        drop_sorted = cumulative <= 1 - self.top_p
        drop_sorted[..., -self.min_tokens_to_keep:] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Keep the tokens whose probability is at least ``min_p`` times the most likely token's."""

    def __init__(self, min_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> None:
        if not 0 <= min_p <= 1:
            raise ConfigError(f"min_p must be in [0, 1], got {min_p}.")
        _check_positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.min_p = min_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        best = torch.topk(probs, min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        drop.scatter_(-1, best, False)
        return scores.masked_fill(drop, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the distribution's
    entropy, up to a probability mass of ``mass``."""

    def __init__(self, mass: float = 0.9, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> None:
        mass = float(mass)
        if not 0 < mass < 1:
            raise ConfigError(f"typical_p must be in (0, 1) to have an effect, got {mass}.")
        _check_positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.mass = mass
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = scores.log_softmax(dim=-1)
        entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
        distance = (-log_probs - entropy).abs()
        sorted_distance, order = torch.sort(distance, descending=False)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        cutoff = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_distance.shape[-1] - 1)
        drop_sorted = sorted_distance > sorted_distance.gather(1, cutoff.view(-1, 1))
        drop_sorted[..., : self.min_tokens_to_keep] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Epsilon sampling: drop tokens whose probability is below ``epsilon`` (keeping the best few)."""

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1) -> None:
        epsilon = float(epsilon)
        if not 0 < epsilon < 1:
            raise ConfigError(f"epsilon_cutoff must be in (0, 1), got {epsilon}.")
        _check_positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.epsilon = epsilon
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        drop = scores.softmax(dim=-1) < self.epsilon
        kth_best = torch.topk(scores, min(self.min_tokens_to_keep, scores.shape[-1])).values[..., -1:]
        return scores.masked_fill(drop & (scores < kth_best), self.filter_value)


class EtaLogitsWarper(LogitsProcessor):
    """Eta sampling: drop tokens below ``min(epsilon, sqrt(epsilon) * exp(-entropy))``."""

    def __init__(
        self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1, device: str = "cpu"
    ) -> None:
        epsilon = float(epsilon)
        if not 0 < epsilon < 1:
            raise ConfigError(f"eta_cutoff must be in (0, 1), got {epsilon}.")
        _check_positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.epsilon = torch.tensor(epsilon, device=device)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.softmax(dim=-1)
        entropy = torch.distributions.Categorical(logits=scores).entropy()
        epsilon = self.epsilon.to(scores.device)
        eta = torch.min(epsilon, epsilon.sqrt() * torch.exp(-entropy))[..., None]
        kth_best = torch.topk(scores, min(self.min_tokens_to_keep, scores.shape[-1])).values[..., -1:]
        return scores.masked_fill((probs < eta) & (scores < kth_best), self.filter_value)


# -- assembling the list ------------------------------------------------------------------------
def merge_custom(default: list, custom: Sequence, list_type: type) -> list:
    """The default list with a user object replacing the default of the same type (as the reference
    does), followed by the user's other objects."""
    merged = list_type()
    used = []
    for item in default:
        replacement = next((c for c in custom if type(c) is type(item)), None)
        merged.append(replacement if replacement is not None else item)
        if replacement is not None:
            used.append(replacement)
    merged.extend(c for c in custom if not any(c is u for u in used))
    return merged


def build_logits_processors(
    config: Any,
    *,
    prompt_length: int,
    eos_token_ids: torch.Tensor | None,
    padding_lengths: torch.Tensor | None,
    custom: Sequence[LogitsProcessor] = (),
    prefix_allowed_tokens_fn: Callable | None = None,
    device: torch.device | str = "cpu",
    encoder_input_ids: torch.Tensor | None = None,
    guidance: UnbatchedClassifierFreeGuidanceLogitsProcessor | None = None,
    vocab_size: int | None = None,
) -> LogitsProcessorList:
    """The processors a prepared generation config asks for, in the reference library's order.

    ``config.max_length`` and ``config.min_length`` are already absolute lengths here.
    ``encoder_input_ids`` is the prompt as given (one row per input), which the ``encoder_*``
    settings look at; without it they raise. ``guidance`` is the classifier-free guidance
    processor (it needs the model), first in the list when ``guidance_scale`` asks for it;
    ``vocab_size`` sizes the watermark's green lists.
    """
    processors = LogitsProcessorList()
    if config.guidance_scale is not None and config.guidance_scale != 1:
        if guidance is None:
            raise GenerationError("guidance_scale needs the model for its unconditional pass; pass guidance.")
        processors.append(guidance)
    if config.sequence_bias is not None:
        processors.append(SequenceBiasLogitsProcessor(config.sequence_bias))
    if config.encoder_repetition_penalty != 1.0:
        processors.append(EncoderRepetitionPenaltyLogitsProcessor(
            config.encoder_repetition_penalty, _encoder_ids("encoder_repetition_penalty", encoder_input_ids)))
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty, padding_lengths))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.encoder_no_repeat_ngram_size > 0:
        processors.append(EncoderNoRepeatNGramLogitsProcessor(
            config.encoder_no_repeat_ngram_size, _encoder_ids("encoder_no_repeat_ngram_size", encoder_input_ids)))
    if config.bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos_token_ids))
    if eos_token_ids is not None and config.min_length > 0:
        processors.append(MinLengthLogitsProcessor(config.min_length, eos_token_ids, device=device))
    if eos_token_ids is not None and config.min_new_tokens:
        processors.append(
            MinNewTokensLengthLogitsProcessor(prompt_length, config.min_new_tokens, eos_token_ids, device=device)
        )
    if prefix_allowed_tokens_fn is not None:
        processors.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, config.num_beams))
    if config.forced_bos_token_id is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id, device=device))
    if config.remove_invalid_values:
        processors.append(InfNanRemoveLogitsProcessor())
    if config.exponential_decay_length_penalty is not None and eos_token_ids is not None:
        processors.append(
            ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos_token_ids, prompt_length)
        )
    if config.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if config.begin_suppress_tokens is not None:
        begin = prompt_length if prompt_length > 1 or config.forced_bos_token_id is None else prompt_length + 1
        processors.append(SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin, device=device))
    processors = merge_custom(processors, custom, LogitsProcessorList)

    if config.do_sample:
        # Beam sampling keeps one more candidate than there are end tokens, so a beam can go on.
        keep = (len(eos_token_ids) + 1 if eos_token_ids is not None else 2) if config.num_beams > 1 else 1
        if config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_h is not None:
            processors.append(TopHLogitsWarper(config.top_h))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k, min_tokens_to_keep=keep))
        if config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p, min_tokens_to_keep=keep))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(config.min_p, min_tokens_to_keep=keep))
        if config.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(config.typical_p, min_tokens_to_keep=keep))
        if 0.0 < config.epsilon_cutoff < 1.0:
            processors.append(EpsilonLogitsWarper(config.epsilon_cutoff, min_tokens_to_keep=keep))
        if 0.0 < config.eta_cutoff < 1.0:
            processors.append(EtaLogitsWarper(config.eta_cutoff, min_tokens_to_keep=keep, device=device))
    if config.watermarking_config is not None:  # after every other edit, as in the reference
        if vocab_size is None:
            raise GenerationError("watermarking_config needs the vocabulary size; pass vocab_size.")
        processors.append(config.watermarking_config.construct_processor(vocab_size, device))
    if config.renormalize_logits:
        processors.append(LogitNormalization())
    return processors


def _encoder_ids(setting: str, encoder_input_ids: torch.Tensor | None) -> torch.Tensor:
    if encoder_input_ids is None:
        raise GenerationError(f"{setting} looks at the prompt's token ids; pass them (encoder_input_ids).")
    return encoder_input_ids


__all__ = [
    "EncoderNoRepeatNGramLogitsProcessor", "EncoderRepetitionPenaltyLogitsProcessor", "EpsilonLogitsWarper",
    "EtaLogitsWarper", "ExponentialDecayLengthPenalty", "ForcedBOSTokenLogitsProcessor",
    "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor", "LogitNormalization", "LogitsProcessor",
    "LogitsProcessorList", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor", "MinPLogitsWarper",
    "NoBadWordsLogitsProcessor", "NoRepeatNGramLogitsProcessor", "PrefixConstrainedLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor", "SequenceBiasLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
    "SuppressTokensLogitsProcessor", "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
    "TopHLogitsWarper", "TypicalLogitsWarper", "UnbatchedClassifierFreeGuidanceLogitsProcessor",
    "build_logits_processors", "merge_custom",
]
