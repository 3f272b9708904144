"""Learning-rate schedules against the reference library's, step by step."""

from __future__ import annotations

import io

import pytest
import torch

from torchformers import get_scheduler
from torchformers.errors import ConfigError, UnsupportedArgumentError

transformers = pytest.importorskip("transformers")

CASES = [
    ("linear", {}), ("cosine", {}), ("cosine", {"num_cycles": 1.5}), ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {"power": 2.0, "lr_end": 1e-4}), ("constant", {}), ("constant_with_warmup", {}),
]


def learning_rates(get, name, extra, steps=30):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = get(name, optimizer, num_warmup_steps=5, num_training_steps=25, scheduler_specific_kwargs=extra)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates, scheduler


@pytest.mark.parametrize(("name", "extra"), CASES)
def test_schedule_matches_the_reference(name, extra):
    ours, scheduler = learning_rates(get_scheduler, name, extra)
    expected, _ = learning_rates(transformers.get_scheduler, name, extra)
    assert ours == pytest.approx(expected, abs=1e-12)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["last_epoch"] == 30


def test_bad_schedules_raise():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UnsupportedArgumentError, match="choose one of"):
        get_scheduler("warmup_stable_decay", optimizer, 1, 10)
    with pytest.raises(ConfigError, match="needs num_training_steps"):
        get_scheduler("linear", optimizer, num_warmup_steps=1)
    with pytest.raises(ConfigError, match="lr_end"):
        get_scheduler("polynomial", optimizer, 1, 10, scheduler_specific_kwargs={"lr_end": 1.0})
