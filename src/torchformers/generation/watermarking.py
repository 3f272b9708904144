"""Green-list watermarking (Kirchenbauer et al., arXiv 2306.04634), as the reference library runs it.

At each step the previous token seeds a generator that splits the vocabulary into a "green"
share (``greenlist_ratio``) and the rest; green tokens get ``bias`` added to their scores, so
watermarked text holds more green tokens than chance would give. :class:`WatermarkDetector`
counts them and reports a z-score. The seeding follows the reference's exactly (the same
hashing key, table and ``torch.randperm`` draws), so text watermarked by either library is
detected by the other, and greedy watermarked generation gives the same tokens.

``generate(watermarking_config=WatermarkingConfig(...))`` (or its dict) turns it on.

SynthID Text (Dathathri et al., Nature 2024) is here too: ``SynthIDTextWatermarkingConfig`` and
its processor, with the same hashes, sampling table and tournament as the reference's, so the
same seed samples the same tokens and its g-values serve the reference's detectors. Its
Bayesian detector (a trained model) is not implemented; :meth:`SynthIDTextWatermarkLogitsProcessor.compute_g_values`
and the two masks give what a detector scores.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, UnsupportedArgumentError
from .logits import LogitsProcessor

# The reference's constants: the generator's default seed and the size of the hashing table.
DEFAULT_HASHING_KEY = 15485863
TABLE_SIZE = 1_000_003
SEEDING_SCHEMES = ("lefthash", "selfhash")
# selfhash tries this many of the best tokens as their own seed (the reference's bound).
SELFHASH_CANDIDATES = 40


@dataclass
class WatermarkingConfig:
    """Settings of green-list watermarking; the reference library's names and defaults.

    Args:
        greenlist_ratio: the share of the vocabulary that is green at each step.
        bias: what is added to the green tokens' scores.
        hashing_key: the generator's seed, shared by whoever generates and whoever detects.
        seeding_scheme: ``"lefthash"`` (the previous token seeds the split) or ``"selfhash"``
            (each candidate token is hashed with the previous ones, and kept green only if
            it lands in its own green list; slower, harder to remove).
        context_width: how many previous tokens seed the split.
    """

    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = DEFAULT_HASHING_KEY
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    def __post_init__(self) -> None:
        if self.seeding_scheme not in SEEDING_SCHEMES:
            raise ConfigError(f"WatermarkingConfig: seeding_scheme must be one of {SEEDING_SCHEMES}, got "
                              f"{self.seeding_scheme!r}.")
        if not isinstance(self.greenlist_ratio, (int, float)) or not 0.0 < self.greenlist_ratio < 1.0:
            raise ConfigError(f"WatermarkingConfig: greenlist_ratio must be in (0, 1), got {self.greenlist_ratio!r}.")
        if not isinstance(self.context_width, int) or self.context_width < 1:
            raise ConfigError(f"WatermarkingConfig: context_width must be a positive integer, got {self.context_width!r}.")

    @classmethod
    def from_value(cls, value: Any) -> WatermarkingConfig | SynthIDTextWatermarkingConfig:
        """A config from itself, its dict (as ``generation_config.json`` stores it) or another
        library's config object with the same fields; SynthID settings (``ngram_len`` and ``keys``)
        give a :class:`SynthIDTextWatermarkingConfig`."""
        if isinstance(value, (cls, SynthIDTextWatermarkingConfig)):
            return value
        if not isinstance(value, dict):
            to_dict = getattr(value, "to_dict", None)
            if not callable(to_dict):
                raise ConfigError(f"watermarking_config must be a WatermarkingConfig, a SynthIDTextWatermarkingConfig "
                                  f"or a dict, got {value!r}.")
            value = to_dict()
        kind = SynthIDTextWatermarkingConfig if "ngram_len" in value or "keys" in value else cls
        fields = {field.name for field in dataclasses.fields(kind)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise UnsupportedArgumentError(
                f"watermarking_config has keys {unknown} that {kind.__name__} does not have."
            )
        return kind(**value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def construct_processor(self, vocab_size: int, device: torch.device | str = "cpu") -> WatermarkLogitsProcessor:
        return WatermarkLogitsProcessor(vocab_size, device, **self.to_dict())


class WatermarkLogitsProcessor(LogitsProcessor):
    """Add ``bias`` to the scores of each row's green tokens (see the module docstring)."""

    def __init__(self, vocab_size: int, device: torch.device | str, greenlist_ratio: float = 0.25, bias: float = 2.0,
                 hashing_key: int = DEFAULT_HASHING_KEY, seeding_scheme: str = "lefthash",
                 context_width: int = 1) -> None:
        WatermarkingConfig(greenlist_ratio, bias, hashing_key, seeding_scheme, context_width)  # validates
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * greenlist_ratio)
        self.bias = bias
        self.hash_key = hashing_key
        self.seeding_scheme = seeding_scheme
        self.context_width = context_width
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(hashing_key)
        self.fixed_table = torch.randperm(TABLE_SIZE, generator=self.rng, device=device)

    def _seed(self, tokens: torch.Tensor) -> None:
        """Seed the generator from the last ``context_width`` tokens of ``tokens``."""
        context = tokens[-self.context_width:]
        if self.seeding_scheme == "selfhash":
            first = self.fixed_table[context % TABLE_SIZE] + 1
            last = self.fixed_table[context[-1] % TABLE_SIZE] + 1
            seed = (self.hash_key * first * last).min().item()
        else:
            seed = self.hash_key * context[-1].item()
        self.rng.manual_seed(seed % (2**64 - 1))

    def greenlist_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """The green token ids after the sequence ``tokens`` (1-D)."""
        self._seed(tokens)
        return torch.randperm(self.vocab_size, device=tokens.device, generator=self.rng)[: self.greenlist_size]

    def _self_hashed_greenlist(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        # The best candidates, each green only if it is in the list its own hash gives.
        ranked = scores.sort(descending=True).indices
        green = [ranked[i] for i in range(SELFHASH_CANDIDATES)
                 if ranked[i] in self.greenlist_ids(torch.cat([tokens, ranked[i, None]]))]
        return torch.tensor(green, device=tokens.device, dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.context_width:
            return scores  # too short to seed (the reference warns and skips likewise)
        marked = scores.clone()
        for row, tokens in enumerate(input_ids):
            if self.seeding_scheme == "selfhash":
                green = self._self_hashed_greenlist(tokens, scores[row])
            else:
                green = self.greenlist_ids(tokens)
            marked[row, green] = marked[row, green] + self.bias
        return marked


@dataclass
class WatermarkDetectorOutput:
    """Per sequence: tokens scored, green ones, their share, the z-score, its p-value, whether it
    passes the threshold, and the confidence (1 - p-value). NumPy arrays, as the reference returns."""

    num_tokens_scored: np.ndarray
    num_green_tokens: np.ndarray
    green_fraction: np.ndarray
    z_score: np.ndarray
    p_value: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray


class WatermarkDetector:
    """Tells watermarked token sequences from others by how many of their tokens are green.

    ``model_config`` gives the vocabulary size and BOS id; pass the same ``watermarking_config``
    that generated the text. Each n-gram (the seeding context plus the token) is scored once
    per distinct n-gram when ``ignore_repeated_ngrams``, else as often as it occurs.
    """

    def __init__(self, model_config: Any, device: torch.device | str, watermarking_config: Any,
                 ignore_repeated_ngrams: bool = False, max_cache_size: int = 128) -> None:
        config = WatermarkingConfig.from_value(watermarking_config)
        if not isinstance(config, WatermarkingConfig):
            raise UnsupportedArgumentError(
                "WatermarkDetector detects green-list watermarks; for SynthID text, score the g-values of "
                "SynthIDTextWatermarkLogitsProcessor.compute_g_values (where compute_context_repetition_mask holds)."
            )
        self.bos_token_id = model_config.bos_token_id
        self.greenlist_ratio = config.greenlist_ratio
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.processor = config.construct_processor(model_config.vocab_size, device)
        self._verdicts: collections.OrderedDict[tuple[int, ...], bool] = collections.OrderedDict()
        self._cache_size = max_cache_size

    def _is_green(self, ngram: tuple[int, ...]) -> bool:
        """Whether the last token of ``ngram`` is green after the rest (with selfhash: after all of it)."""
        verdict = self._verdicts.get(ngram)
        if verdict is None:
            selfhash = self.processor.seeding_scheme == "selfhash"
            prefix = torch.tensor(ngram if selfhash else ngram[:-1], device=self.processor.fixed_table.device)
            verdict = bool((self.processor.greenlist_ids(prefix) == ngram[-1]).any())
            self._verdicts[ngram] = verdict
            if len(self._verdicts) > self._cache_size:
                self._verdicts.popitem(last=False)
        return verdict

    def _count(self, input_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        width = self.processor.context_width + 1 - int(self.processor.seeding_scheme == "selfhash")
        scored, green = np.zeros(input_ids.shape[0]), np.zeros(input_ids.shape[0])
        for row, tokens in enumerate(input_ids.tolist()):
            counts = collections.Counter(tuple(tokens[i:i + width]) for i in range(len(tokens) - width + 1))
            if self.ignore_repeated_ngrams:
                scored[row] = len(counts)
                green[row] = sum(self._is_green(ngram) for ngram in counts)
            else:
                scored[row] = sum(counts.values())
                green[row] = sum(count * self._is_green(ngram) for ngram, count in counts.items())
        return scored, green

    def __call__(self, input_ids: torch.LongTensor, z_threshold: float = 3.0,
                 return_dict: bool = False) -> WatermarkDetectorOutput | np.ndarray:
        """Whether each sequence is watermarked (z-score above ``z_threshold``), or the full
        :class:`WatermarkDetectorOutput`. Leave the prompt out: it was not watermarked."""
        starts_with_bos = input_ids[:, 0] == self.bos_token_id
        if bool(starts_with_bos.any()) != bool(starts_with_bos.all()):
            raise ConfigError("WatermarkDetector: some sequences start with the BOS token and some do not; tokenize "
                              "them the same way.")
        if bool(starts_with_bos[0]):
            input_ids = input_ids[:, 1:]
        if input_ids.shape[-1] - self.processor.context_width < 1:
            raise ConfigError(f"WatermarkDetector: a sequence needs more than context_width="
                              f"{self.processor.context_width} tokens to be scored.")
        scored, green = self._count(input_ids)
        ratio = self.greenlist_ratio
        z_score = (green - ratio * scored) / np.sqrt(scored * ratio * (1 - ratio))
        prediction = z_score > z_threshold
        if not return_dict:
            return prediction
        p_value = 0.5 * torch.special.erfc(torch.as_tensor(z_score / math.sqrt(2))).numpy()
        return WatermarkDetectorOutput(scored, green, green / scored, z_score, p_value, prediction, 1 - p_value)


# -- SynthID Text --------------------------------------------------------------------------------
# The hash's linear congruential step (newlib/musl constants), wrapping around in int64.
_HASH_MULTIPLIER = 6364136223846793005
_HASH_INCREMENT = 1


@dataclass
class SynthIDTextWatermarkingConfig:
    """Settings of SynthID Text watermarking; the reference library's names and defaults.

    Args:
        ngram_len: the context is the previous ``ngram_len - 1`` tokens.
        keys: one watermarking key per tournament layer (their number is the depth).
        context_history_size: how many recent contexts are remembered; a repeated context is
            left unwatermarked.
        sampling_table_seed, sampling_table_size: the table of random bits g-values come from.
        skip_first_ngram_calls: leave the first ``ngram_len - 1`` steps unwatermarked.
        debug_mode: replace the scores by ones before watermarking (to test the watermark alone).
    """

    ngram_len: int
    keys: list[int]
    context_history_size: int = 1024
    sampling_table_seed: int = 0
    sampling_table_size: int = 2**16
    skip_first_ngram_calls: bool = False
    debug_mode: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.ngram_len, int) or self.ngram_len < 1:
            raise ConfigError(f"{name}: ngram_len must be a positive integer, got {self.ngram_len!r}.")
        if not self.keys or not all(isinstance(key, int) for key in self.keys):
            raise ConfigError(f"{name}: keys must be a non-empty list of integers, got {self.keys!r}.")
        if not isinstance(self.sampling_table_size, int) or not 0 < self.sampling_table_size <= 2**24:
            raise ConfigError(f"{name}: sampling_table_size must be at most 2**24, got {self.sampling_table_size!r}.")
        if not isinstance(self.context_history_size, int) or self.context_history_size < 1:
            raise ConfigError(f"{name}: context_history_size must be a positive integer, got "
                              f"{self.context_history_size!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def construct_processor(self, vocab_size: int, device: torch.device | str = "cpu") -> SynthIDTextWatermarkLogitsProcessor:
        return SynthIDTextWatermarkLogitsProcessor(device=device, **self.to_dict())


def _accumulate_hash(state: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """Fold the last dimension of ``data`` into ``state`` (broadcast against ``data`` without it), one
    value at a time: ``state = (state + value) * multiplier + increment``."""
    for index in range(data.shape[-1]):
        state = (state + data[..., index]) * _HASH_MULTIPLIER + _HASH_INCREMENT
    return state


def _hash_from_start(tokens: torch.Tensor) -> torch.Tensor:
    """The hash of token sequences along the last dimension of ``tokens``, from the starting state 1."""
    return _accumulate_hash(torch.ones(tokens.shape[:-1], dtype=torch.long, device=tokens.device), tokens)


def _remembered(history: torch.Tensor, context_hash: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each row's ``context_hash`` is in its ``history`` (batch, 1), and the history with it
    pushed in front (the oldest dropped)."""
    seen = (history == context_hash[:, None]).any(dim=1, keepdim=True)
    return seen, torch.cat((context_hash[:, None], history), dim=1)[:, :-1]


class SynthIDTextWatermarkLogitsProcessor(LogitsProcessor):
    """Watermark sampling by a tournament over g-values (see :class:`SynthIDTextWatermarkingConfig`).

    Each step hashes the last ``ngram_len - 1`` tokens with every candidate token and every key
    into a table of random bits (the g-values, (batch, vocab, depth)). Layer by layer, the
    probabilities are reweighted by ``1 + g - E[g]``, which moves mass to the tokens whose bit is
    1; the result comes back as log-probabilities. The processor keeps the context and the
    history of contexts between calls, so use a new one (``construct_processor``) per generation,
    as ``generate`` does. On the first call the context is all zeros, as in the reference.
    """

    def __init__(self, ngram_len: int, keys: list[int], sampling_table_size: int, sampling_table_seed: int,
                 context_history_size: int, device: torch.device | str = "cpu", skip_first_ngram_calls: bool = False,
                 debug_mode: bool = False) -> None:
        self.ngram_len = ngram_len
        self.keys = torch.tensor(keys, device=device)
        generator = torch.Generator(device=device).manual_seed(sampling_table_seed)
        self.sampling_table = torch.randint(0, 2, (sampling_table_size,), generator=generator, device=device)
        self.context_history_size = context_history_size
        self.device = device
        self.skip_first_ngram_calls = skip_first_ngram_calls
        self.debug_mode = debug_mode
        self._context: torch.Tensor | None = None  # (batch, ngram_len - 1), the last tokens seen
        self._history: torch.Tensor | None = None  # (batch, context_history_size), recent context hashes
        self._calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        _check_rows(input_ids)
        batch, vocab = scores.shape
        if self.debug_mode:
            scores = torch.ones_like(scores)
        if self._context is None:
            self._context = torch.zeros(batch, self.ngram_len - 1, dtype=torch.long, device=self.device)
            self._history = torch.zeros(batch, self.context_history_size, dtype=torch.long, device=self.device)
        else:
            self._context = torch.cat((self._context, input_ids[:, -1:]), dim=1)[:, 1:]
        self._calls += 1
        if self.skip_first_ngram_calls and self._calls < self.ngram_len:
            return scores
        context_hash = _hash_from_start(self._context)
        candidates = torch.arange(vocab, device=self.device).expand(batch, vocab)
        g_values = self._g_values(_accumulate_hash(context_hash[:, None], candidates[..., None]))
        watermarked = self._tournament(scores, g_values)
        repeated, self._history = _remembered(self._history, context_hash)
        return torch.where(repeated, scores, watermarked)

    def _g_values(self, ngram_hash: torch.Tensor) -> torch.Tensor:
        """The table bits of n-gram hashes (any shape) folded with each key: (..., depth)."""
        keyed = _accumulate_hash(ngram_hash[..., None], self.keys[:, None])
        return self.sampling_table[keyed % self.sampling_table.shape[0]]

    @staticmethod
    def _tournament(scores: torch.Tensor, g_values: torch.Tensor) -> torch.Tensor:
        """Log-probabilities after one reweighting per layer of ``g_values`` (batch, vocab, depth)."""
        probs = torch.softmax(scores, dim=1)
        for layer in range(g_values.shape[2]):
            g = g_values[:, :, layer]
            expected = (g * probs).sum(dim=1, keepdim=True)
            probs = probs * (1 + g - expected)
        log_probs = torch.log(probs)
        return torch.where(torch.isfinite(log_probs), log_probs, torch.finfo(log_probs.dtype).min)

    # -- what detectors score --------------------------------------------------------------------
    def compute_g_values(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """The g-values of each ``ngram_len``-gram of ``input_ids``: (batch, length - ngram_len + 1, depth)."""
        _check_rows(input_ids)
        return self._g_values(_hash_from_start(input_ids.unfold(dimension=1, size=self.ngram_len, step=1)))

    def compute_context_repetition_mask(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """For each ``ngram_len``-gram of ``input_ids``, whether its context was new within the
        last ``context_history_size`` contexts (the steps that were watermarked): (batch, ngrams)."""
        _check_rows(input_ids)
        history = torch.zeros(input_ids.shape[0], self.context_history_size, dtype=torch.long, device=input_ids.device)
        context_hashes = _hash_from_start(input_ids[:, :-1].unfold(dimension=1, size=self.ngram_len - 1, step=1))
        repeated = []
        for index in range(context_hashes.shape[1]):
            seen, history = _remembered(history, context_hashes[:, index])
            repeated.append(seen)
        return torch.logical_not(torch.cat(repeated, dim=1))

    @staticmethod
    def compute_eos_token_mask(input_ids: torch.LongTensor, eos_token_id: int) -> torch.LongTensor:
        """Per row, True before its first ``eos_token_id`` and False from it on: (batch, length)."""
        _check_rows(input_ids)
        return (input_ids == eos_token_id).long().cumsum(dim=1) == 0

    @staticmethod
    def expected_mean_g_value(vocab_size: int, coinflip_prob: float = 0.5) -> float:
        """The mean g-value of watermarked text under a uniform model (one layer): what detection compares with."""
        return coinflip_prob + coinflip_prob * (1 - coinflip_prob) * (1 - 1 / vocab_size)


def _check_rows(input_ids: torch.Tensor) -> None:
    if input_ids.dim() != 2:
        raise ConfigError(f"SynthID watermarking takes input_ids shaped (batch, length), got {tuple(input_ids.shape)}.")
