"""Combining trained LoRA adapters into a new one, as peft's ``add_weighted_adapter`` does.

Three of peft's combination types are here:

- ``"linear"``: A and B are weighted sums of the adapters' A and B (all of the same rank);
  each weight (times the adapter's scale) is split as a square root between A and B, with
  its sign on A. Cheap, but the product of sums is not the sum of the products.
- ``"cat"``: the adapters' A and B stacked along the rank (the ranks add up); exactly the
  weighted sum of their updates.
- ``"svd"``: the weighted sum of the updates, cut back to ``svd_rank`` (default: the largest
  rank) by a singular value decomposition.

The new adapter has ``lora_alpha = r`` (scale 1), targets the union of the adapters'
targets, and starts frozen and inactive, as in peft. The pruning variants (``ties``,
``dare_*``, ``magnitude_prune``) are refused.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, UnsupportedArgumentError

if TYPE_CHECKING:
    from .lora import LoraModel

COMBINATION_TYPES = ("linear", "cat", "svd")


def add_weighted_adapter(model: LoraModel, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None, svd_clamp: float | None = None,
                         svd_full_matrices: bool = True, **unsupported: Any) -> None:
    """Add ``adapter_name``: ``adapters`` combined with ``weights`` by ``combination_type``."""
    if adapter_name in model.peft_config:
        raise ConfigError(f"an adapter named {adapter_name!r} already exists; pick another name.")
    missing = [name for name in adapters if name not in model.peft_config]
    if missing or not adapters:
        raise ConfigError(f"add_weighted_adapter: no adapter named {missing or adapters!r}; the model has "
                          f"{sorted(model.peft_config)}.")
    if len(weights) != len(adapters):
        raise ConfigError(f"add_weighted_adapter: {len(adapters)} adapters but {len(weights)} weights.")
    configs = [model.peft_config[name] for name in adapters]
    if any(config.use_dora for config in configs):
        raise UnsupportedArgumentError("add_weighted_adapter cannot combine DoRA adapters (their magnitudes do not add).")
    combination_type = "linear" if len(adapters) == 1 else combination_type
    if combination_type not in COMBINATION_TYPES:
        raise UnsupportedArgumentError(
            f"add_weighted_adapter: combination_type={combination_type!r} is not supported; use one of "
            f"{list(COMBINATION_TYPES)}."
        )
    for option in ("density", "majority_sign_method", "svd_driver"):  # peft's defaults say "not used"
        if unsupported.get(option) is None:
            unsupported.pop(option, None)
    if unsupported or svd_clamp is not None:
        asked = sorted(unsupported) + (["svd_clamp"] if svd_clamp is not None else [])
        raise UnsupportedArgumentError(f"add_weighted_adapter() got unsupported arguments {asked}.")
    ranks = [max(config.r, *config.rank_pattern.values()) if config.rank_pattern else config.r for config in configs]
    if combination_type == "linear":
        if len(set(ranks)) != 1:
            raise ConfigError(f"add_weighted_adapter: 'linear' needs adapters of one rank, got ranks {ranks}; use "
                              "'cat' or 'svd'.")
        rank = ranks[0]
    else:
        rank = sum(ranks) if combination_type == "cat" else svd_rank or max(ranks)
    target_kinds = {isinstance(config.target_modules, str) for config in configs}
    if len(target_kinds) > 1:
        raise ConfigError("add_weighted_adapter: the adapters' target_modules mix a regular expression and lists.")
    if target_kinds == {True}:
        targets: Any = "|".join(f"({config.target_modules})" for config in configs)
    else:
        targets = sorted({name for config in configs for name in config.target_modules})
    shared = [wrapper for wrapper in model.saved_modules().values()
              if sum(name in wrapper.modules_to_save for name in adapters) > 1]
    if shared:
        raise ConfigError("add_weighted_adapter: two of the adapters train the same module in full (modules_to_save).")

    # A plain LoRA adapter whatever the first one's init was (PiSSA's would rewrite the frozen weights).
    model.inject_adapter(adapter_name, dataclasses.replace(configs[0], r=rank, lora_alpha=rank, target_modules=targets,
                                                           rank_pattern={}, alpha_pattern={}, init_lora_weights=True))
    for layer in model.lora_layers().values():
        if adapter_name not in layer.adapter_names():
            continue
        new_a, new_b = layer.factors(adapter_name)
        present = [(name, weight) for name, weight in zip(adapters, weights, strict=True)
                   if name in layer.adapter_names()]
        with torch.no_grad():
            new_a.zero_()
            new_b.zero_()
            if combination_type == "cat":
                stacked_a = torch.cat([layer.factors(name)[0] * weight * layer.scaling[name] for name, weight in present])
                stacked_b = torch.cat([layer.factors(name)[1] for name, _ in present], dim=1)
                new_a[: stacked_a.shape[0]] = stacked_a
                new_b[:, : stacked_b.shape[1]] = stacked_b
            elif combination_type == "linear":
                # The weight times the scale, split as a square root between A and B, its sign on A.
                shares = [weight * layer.scaling[name] for name, weight in present]
                roots = [math.sqrt(abs(share)) for share in shares]
                new_a.copy_(_weighted_sum([layer.factors(name)[0] for name, _ in present],
                                          [math.copysign(root, share) for root, share in zip(roots, shares, strict=True)]))
                new_b.copy_(_weighted_sum([layer.factors(name)[1] for name, _ in present], roots))
            else:
                updates = [layer.factors(name)[1] @ layer.factors(name)[0] * layer.scaling[name] for name, _ in present]
                u, singular, vh = torch.linalg.svd(_weighted_sum(updates, [w for _, w in present]),
                                                   full_matrices=svd_full_matrices)
                new_b.copy_(u[:, :rank] @ torch.diag(singular[:rank]))
                new_a.copy_(vh[:rank])
    for name, param in model.named_parameters():
        if adapter_name in name:
            param.requires_grad_(False)


def _weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``sum(w * t)``, summed as peft sums (stacked, scaled, reduced), so the results agree to the bit."""
    stacked = torch.stack(tensors)
    scale = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    return (stacked * scale.view(-1, *([1] * (stacked.dim() - 1)))).sum(dim=0)
