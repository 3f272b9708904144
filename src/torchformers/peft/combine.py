"""Combining trained LoRA adapters into a new one, as peft's ``add_weighted_adapter`` does.

Three ways to combine, and pruning on top of two of them:

- ``"linear"``: A and B are weighted sums of the adapters' A and B (all of the same rank);
  each weight (times the adapter's scale) is split as a square root between A and B, with
  its sign on A. Cheap, but the product of sums is not the sum of the products.
- ``"cat"``: the adapters' A and B stacked along the rank (the ranks add up); exactly the
  weighted sum of their updates.
- ``"svd"``: the weighted sum of the updates, cut back to ``svd_rank`` (default: the largest
  rank) by a singular value decomposition; ``svd_clamp`` clips both factors at that quantile
  of their values.
- ``"ties"``, ``"dare_linear"``, ``"dare_ties"``, ``"magnitude_prune"`` combine the factors as
  ``"linear"`` does, and their ``*_svd`` forms the updates as ``"svd"`` does, after pruning each
  adapter's tensor to a fraction ``density`` of its entries: the largest magnitudes
  (``magnitude_prune``, ``ties``), or entries kept at random with probability ``density`` and
  divided by it (``dare_*``, which draws from torch's generator: seed it to repeat a merge). The
  ``ties`` forms then keep, for each entry, only the adapters whose sign agrees with the
  elected one (the sign of the sum, ``majority_sign_method="total"``, or of the count of signs,
  ``"frequency"``) and average those weighted entries.

The new adapter has ``lora_alpha = r`` (scale 1), targets the union of the adapters'
targets, and starts frozen and inactive, as in peft.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, UnsupportedArgumentError

if TYPE_CHECKING:
    from .lora import LoraModel

# How each kind of merge sums the adapters' tensors (after pruning them, for all but "linear").
_MERGES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
COMBINATION_TYPES = (*_MERGES, "cat", "svd", *(f"{merge}_svd" for merge in _MERGES[1:]))


def add_weighted_adapter(model: LoraModel, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None, svd_clamp: float | None = None,
                         svd_full_matrices: bool = True, svd_driver: str | None = None, density: float | None = None,
                         majority_sign_method: str = "total") -> None:
    """Add ``adapter_name``: ``adapters`` combined with ``weights`` by ``combination_type`` (see the module's docstring).

    ``svd_driver`` picks a CUDA solver in peft; the CPU has one, so only None is taken.
    """
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
    merge = "linear" if combination_type in ("cat", "svd") else combination_type.removesuffix("_svd")
    if merge != "linear" and (density is None or not 0 <= density):
        raise ConfigError(f"add_weighted_adapter: {combination_type!r} prunes each adapter to a fraction `density` "
                          f"of its entries; pass a density between 0 and 1 (got {density!r}).")
    if majority_sign_method not in ("total", "frequency"):
        raise ConfigError(f"add_weighted_adapter: majority_sign_method must be 'total' or 'frequency', got "
                          f"{majority_sign_method!r}.")
    if svd_driver is not None:
        raise UnsupportedArgumentError(f"add_weighted_adapter: svd_driver={svd_driver!r} chooses a CUDA solver; "
                                       "leave it None.")
    if svd_clamp is not None and not combination_type.endswith("svd"):
        raise ConfigError(f"add_weighted_adapter: svd_clamp applies to the svd combinations, not {combination_type!r}.")
    ranks = [max(config.r, *config.rank_pattern.values()) if config.rank_pattern else config.r for config in configs]
    if combination_type in _MERGES:
        if len(set(ranks)) != 1:
            raise ConfigError(f"add_weighted_adapter: {combination_type!r} needs adapters of one rank, got ranks "
                              f"{ranks}; use 'cat' or an svd combination.")
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

    from .lora import LoraEmbedding

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
            elif combination_type in _MERGES:
                # The weight times the scale, split as a square root between A and B, its sign on A.
                shares = [weight * layer.scaling[name] for name, weight in present]
                roots = [math.sqrt(abs(share)) for share in shares]
                signed_roots = [math.copysign(root, share) for root, share in zip(roots, shares, strict=True)]
                new_a.copy_(_merged([layer.factors(name)[0] for name, _ in present], signed_roots, merge, density,
                                    majority_sign_method))
                new_b.copy_(_merged([layer.factors(name)[1] for name, _ in present], roots, merge, density,
                                    majority_sign_method))
            else:
                updates = [layer.factors(name)[1] @ layer.factors(name)[0] * layer.scaling[name] for name, _ in present]
                # peft prunes updates in the frozen weight's layout, (in, out) for Conv1D and embeddings: random
                # masks are drawn in that order.
                stored_transposed = layer.fan_in_fan_out or isinstance(layer, LoraEmbedding)
                if stored_transposed:
                    updates = [update.t().contiguous() for update in updates]
                update = _merged(updates, [w for _, w in present], merge, density, majority_sign_method)
                u, singular, vh = torch.linalg.svd(update.t() if stored_transposed else update,
                                                   full_matrices=svd_full_matrices)
                u, vh = u[:, :rank] @ torch.diag(singular[:rank]), vh[:rank]
                if svd_clamp is not None:
                    limit = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), svd_clamp)
                    u, vh = u.clamp(-limit, limit), vh.clamp(-limit, limit)
                new_b.copy_(u)
                new_a.copy_(vh)
    for name, param in model.named_parameters():
        if adapter_name in name:
            param.requires_grad_(False)


def _merged(tensors: list[torch.Tensor], weights: list[float], merge: str, density: float | None,
            majority_sign_method: str) -> torch.Tensor:
    """The adapters' ``tensors`` merged with ``weights`` by ``merge`` (one of ``_MERGES``), computed in peft's
    order of operations (prune each, stack, weigh, reduce), so the results agree to the bit."""
    if merge != "linear" and density is not None and density < 1:
        tensors = [_pruned(tensor, density, at_random=merge.startswith("dare")) for tensor in tensors]
    stacked = torch.stack(tensors)
    scale = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    weighted = stacked * scale.view(-1, *([1] * (stacked.dim() - 1)))
    if not merge.endswith("ties"):
        return weighted.sum(dim=0)
    # Elect a sign per entry from the unweighted (pruned) tensors, then average the weighted entries that agree.
    signs = stacked.sign()
    votes = stacked.sum(dim=0) if majority_sign_method == "total" else signs.sum(dim=0)
    agrees = signs == torch.where(votes >= 0, 1, -1)
    return (weighted * agrees).sum(dim=0) / torch.clamp(agrees.sum(dim=0), min=1.0)


def _pruned(tensor: torch.Tensor, density: float, at_random: bool) -> torch.Tensor:
    """``tensor`` with all but a fraction ``density`` of its entries zeroed: the largest in magnitude, or a
    random draw (each kept with probability ``density`` and divided by it, so the expectation is unchanged)."""
    if at_random:
        return tensor * torch.bernoulli(torch.full_like(tensor, density)) / density
    keep = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    keep[torch.topk(tensor.abs().reshape(-1), k=int(density * tensor.numel())).indices] = 1
    return tensor * keep.view(tensor.shape)
