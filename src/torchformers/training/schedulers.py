"""Learning-rate schedules: a warmup, then a decay, as multipliers of the optimizer's learning rate.

Each schedule is a ``torch.optim.lr_scheduler.LambdaLR`` whose multiplier is a ``functools.partial`` of a
module-level function, so its ``state_dict()`` holds plain numbers only and a checkpoint's
``scheduler.pt`` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import enum
import math
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import ConfigError, UnsupportedArgumentError


class SchedulerType(str, enum.Enum):
    """The values ``lr_scheduler_type`` accepts."""

    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"

    def __str__(self) -> str:
        return self.value


def _warmup_fraction(step: int, warmup_steps: int) -> float:
    return step / max(1, warmup_steps)


def _constant(step: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, *, num_warmup_steps: int) -> float:
    return _warmup_fraction(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def _progress(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """How far past the warmup ``step`` is, as a fraction of the decay phase."""
    return (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)


def _linear(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return _warmup_fraction(step, num_warmup_steps)
    return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))


def _cosine(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float) -> float:
    if step < num_warmup_steps:
        return _warmup_fraction(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def _cosine_with_restarts(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: int) -> float:
    if step < num_warmup_steps:
        return _warmup_fraction(step, num_warmup_steps)
    progress = _progress(step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def _polynomial(
    step: int, *, num_warmup_steps: int, num_training_steps: int, lr_end: float, power: float, lr_init: float
) -> float:
    if step < num_warmup_steps:
        return _warmup_fraction(step, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init
    remaining = 1 - (step - num_warmup_steps) / (num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init  # LambdaLR multiplies by lr_init


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    """The optimizer's learning rate, unchanged."""
    return LambdaLR(optimizer, _constant, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    """A linear warmup from 0 over ``num_warmup_steps``, then the optimizer's learning rate."""
    return LambdaLR(optimizer, partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps), last_epoch)


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """A linear warmup from 0, then a linear decay to 0 at ``num_training_steps``."""
    schedule = partial(_linear, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """A linear warmup, then a cosine from the learning rate to 0 (``num_cycles=0.5``: half a wave)."""
    schedule = partial(_cosine, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                       num_cycles=num_cycles)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1,
    last_epoch: int = -1,
) -> LambdaLR:
    """A linear warmup, then ``num_cycles`` cosine decays to 0, each restarting at the full learning rate."""
    schedule = partial(_cosine_with_restarts, num_warmup_steps=num_warmup_steps,
                       num_training_steps=num_training_steps, num_cycles=num_cycles)
    return LambdaLR(optimizer, schedule, last_epoch)


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, lr_end: float = 1e-7,
    power: float = 1.0, last_epoch: int = -1,
) -> LambdaLR:
    """A linear warmup, then a polynomial decay of degree ``power`` to ``lr_end``."""
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ConfigError(f"lr_end ({lr_end}) must be smaller than the initial learning rate ({lr_init}).")
    schedule = partial(_polynomial, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                       lr_end=lr_end, power=power, lr_init=lr_init)
    return LambdaLR(optimizer, schedule, last_epoch)


_SCHEDULES = {
    SchedulerType.LINEAR: get_linear_schedule_with_warmup,
    SchedulerType.COSINE: get_cosine_schedule_with_warmup,
    SchedulerType.COSINE_WITH_RESTARTS: get_cosine_with_hard_restarts_schedule_with_warmup,
    SchedulerType.POLYNOMIAL: get_polynomial_decay_schedule_with_warmup,
    SchedulerType.CONSTANT: get_constant_schedule,
    SchedulerType.CONSTANT_WITH_WARMUP: get_constant_schedule_with_warmup,
}


def scheduler_type(name: str | SchedulerType) -> SchedulerType:
    """``name`` as a SchedulerType; an unknown name raises and lists the supported ones."""
    try:
        return SchedulerType(name)
    except ValueError:
        raise UnsupportedArgumentError(
            f"lr_scheduler_type={str(name)!r} is not supported; choose one of {[t.value for t in SchedulerType]}."
        ) from None


def get_scheduler(
    name: str | SchedulerType,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LambdaLR:
    """The schedule called ``name`` for ``optimizer``.

    ``scheduler_specific_kwargs`` go to the schedule function (``num_cycles`` for the cosines, ``lr_end``
    and ``power`` for the polynomial one); a keyword the schedule does not take raises TypeError.
    """
    kind = scheduler_type(name)
    schedule = _SCHEDULES[kind]
    if kind is SchedulerType.CONSTANT:
        return schedule(optimizer)
    if num_warmup_steps is None:
        raise ConfigError(f"The {kind.value} schedule needs num_warmup_steps.")
    extra = dict(scheduler_specific_kwargs or {})
    if kind is SchedulerType.CONSTANT_WITH_WARMUP:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, **extra)
    if num_training_steps is None:
        raise ConfigError(f"The {kind.value} schedule needs num_training_steps.")
    return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **extra)
