"""Green-list watermarking (Kirchenbauer et al., arXiv 2306.04634), as the reference library runs it.

At each step the previous token seeds a generator that splits the vocabulary into a "green"
share (``greenlist_ratio``) and the rest; green tokens get ``bias`` added to their scores, so
watermarked text holds more green tokens than chance would give. :class:`WatermarkDetector`
counts them and reports a z-score. The seeding follows the reference's exactly (the same
hashing key, table and ``torch.randperm`` draws), so text watermarked by either library is
detected by the other, and greedy watermarked generation gives the same tokens.

``generate(watermarking_config=WatermarkingConfig(...))`` (or its dict) turns it on. The
reference's SynthID watermarking is not implemented here.
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
    def from_value(cls, value: Any) -> WatermarkingConfig:
        """A config from itself, its dict (as ``generation_config.json`` stores it) or another
        library's config object with the same fields."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            to_dict = getattr(value, "to_dict", None)
            if not callable(to_dict):
                raise ConfigError(f"watermarking_config must be a WatermarkingConfig or a dict, got {value!r}.")
            value = to_dict()
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise UnsupportedArgumentError(
                f"watermarking_config has keys {unknown} that green-list watermarking does not have; SynthID "
                "watermarking is not supported by torchformers."
            )
        return cls(**value)

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
