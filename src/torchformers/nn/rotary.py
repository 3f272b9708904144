"""Rotary position embeddings (RoPE) and the scaling variants configs ask for.

``rope_parameters`` reads both spellings of the settings: the current ``rope_parameters``
dict and the older ``rope_theta`` + ``rope_scaling`` keys, so files from any era load.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
# Keys a scaling type cannot do without.
_REQUIRED_KEYS = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
    "yarn": ("factor",),
}


def rope_parameters(config: Any) -> dict[str, Any]:
    """The config's RoPE settings as one dict with ``rope_type`` and ``rope_theta`` filled in."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_type", params.pop("type", "default"))
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    if params["rope_type"] in ("llama3", "yarn"):
        params.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    return params


def validate_rope_parameters(params: dict[str, Any]) -> None:
    rope_type = params["rope_type"]
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"rope type {rope_type!r} is not supported; supported types are {ROPE_TYPES}.")
    missing = [key for key in _REQUIRED_KEYS.get(rope_type, ()) if params.get(key) is None]
    if missing:
        raise ConfigError(f"rope type {rope_type!r} needs {missing} in rope_parameters / rope_scaling.")
    factor = params.get("factor")
    if factor is not None and (not isinstance(factor, (int, float)) or factor < 1.0 and rope_type != "yarn"):
        raise ConfigError(f"rope factor must be a number >= 1, got {factor!r}.")


def _default_inv_freq(base: float, dim: int) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float) / dim))


def compute_inv_freq(
    params: dict[str, Any], head_dim: int, max_position_embeddings: int, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for one head and the factor that scales cos and sin.

    Always computed on the CPU (they are tiny), also while a model is built on the meta
    device, where some of these ops would pull in torch's slow-to-import decompositions.

    ``seq_len`` matters only to ``dynamic`` scaling, whose base grows with the sequence.
    """
    rope_type = params["rope_type"]
    base = params["rope_theta"]
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    if rope_type == "default":
        return _default_inv_freq(base, dim), 1.0
    factor = params["factor"]
    if rope_type == "linear":
        return _default_inv_freq(base, dim) / factor, 1.0
    if rope_type == "dynamic":
        seq_len = max(seq_len or 0, max_position_embeddings)
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        return _default_inv_freq(base, dim), 1.0
    if rope_type == "llama3":
        return _llama3_inv_freq(params, base, dim), 1.0
    return _yarn_inv_freq(params, base, dim, max_position_embeddings)


def _llama3_inv_freq(params: dict[str, Any], base: float, dim: int) -> torch.Tensor:
    inv_freq = _default_inv_freq(base, dim)
    factor = params["factor"]
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    context = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are stretched by `factor`, short ones kept, the band between blended.
    scaled = torch.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_band = ~(wavelen < context / high) * ~(wavelen > context / low)
    return torch.where(in_band, blended, scaled)


def _yarn_inv_freq(params: dict[str, Any], base: float, dim: int, max_positions: int) -> tuple[torch.Tensor, float]:
    factor = params["factor"]
    original = params["original_max_position_embeddings"]
    if factor is None:
        factor = max_positions / original

    def magnitude_scale(scale: float, mscale: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(magnitude_scale(factor, mscale) / magnitude_scale(factor, mscale_all_dim))
        else:
            attention_factor = magnitude_scale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        # The dimension whose wavelength makes `rotations` turns over the original context.
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # keeps the ramp finite

    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").to(dtype=torch.float) / dim)
    extrapolated = 1.0 / pos_freqs
    interpolated = 1.0 / (factor * pos_freqs)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    keep_extrapolated = 1 - ramp
    inv_freq = interpolated * (1 - keep_extrapolated) + extrapolated * keep_extrapolated
    return inv_freq, attention_factor


class RotaryEmbedding(nn.Module):
    """Produces the cos and the signed sin tables for given positions (see :func:`apply_rotary`).

    ``inv_freq`` is a non-persistent buffer: it is computed, never loaded, so models built on
    the meta device call :meth:`reset_buffers` once their weights are in place.
    """

    def __init__(self, head_dim: int, params: dict[str, Any], max_position_embeddings: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.params = params
        self.rope_type = params["rope_type"]
        self.max_position_embeddings = max_position_embeddings
        inv_freq, self.attention_scaling = compute_inv_freq(params, head_dim, max_position_embeddings)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.cached_seq_len = max_position_embeddings

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        inv_freq, self.attention_scaling = compute_inv_freq(self.params, self.head_dim, self.max_position_embeddings)
        self.inv_freq = inv_freq.to(device)
        self.cached_seq_len = self.max_position_embeddings

    def _update_dynamic(self, position_ids: torch.Tensor) -> None:
        # Dynamic NTK grows the base past the trained length and returns to it for short inputs.
        seq_len = int(position_ids.max()) + 1
        if seq_len > self.cached_seq_len:
            inv_freq, _ = compute_inv_freq(self.params, self.head_dim, self.max_position_embeddings, seq_len)
            self.inv_freq = inv_freq.to(self.inv_freq.device)
            self.cached_seq_len = seq_len
        elif seq_len < self.max_position_embeddings < self.cached_seq_len:
            self.reset_buffers(self.inv_freq.device)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rope_type == "dynamic":
            self._update_dynamic(position_ids)
        freqs = position_ids[..., None].float() * self.inv_freq.float()
        angles = torch.cat((freqs, freqs), dim=-1)
        cos = angles.cos() * self.attention_scaling
        sin = angles.sin() * self.attention_scaling
        half = sin.shape[-1] // 2
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.to(dtype), signed_sin.to(dtype)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys shaped (batch, heads, seq, head_dim) by tables shaped (batch, seq, head_dim).

    The usual form is ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = [-x2, x1]``.
    Here the sign sits in the table (``signed_sin = [-sin1, sin2]``, made once per step) and
    the halves swap with one ``roll``: four operations per tensor instead of seven, on the
    path of every decode step, with bit-identical results (negating either factor of a
    product gives the same float).
    """
    cos, signed_sin = cos.unsqueeze(1), signed_sin.unsqueeze(1)
    half = q.shape[-1] // 2
    return q * cos + q.roll(half, -1) * signed_sin, k * cos + k.roll(half, -1) * signed_sin
