"""Two CPU processes under torchrun (gloo, DDP) train to the same weights as one process with the doubled batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torchrun_worker import run

from torchformers.training.trainer import ShardSampler

WORKER = Path(__file__).with_name("torchrun_worker.py")


def test_two_processes_match_one_with_the_doubled_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
               str(tmp_path / "two"), "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run(str(tmp_path / "one"), 4)

    two, one = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert two.keys() == one.keys()
    assert max((two[name] - one[name]).abs().max().item() for name in one) < 1e-6
    # Rank 0 alone wrote, and logged the loss averaged over both processes.
    history = [json.loads((tmp_path / name / "log_history.json").read_text()) for name in ("two", "one")]
    losses = [[entry["loss"] for entry in h if "loss" in entry] for h in history]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    # Predictions gathered from both processes, in dataset order, without the padding row.
    predictions = [np.load(tmp_path / name / "predictions.npy") for name in ("two", "one")]
    assert predictions[0].shape == predictions[1].shape == (9, 12, 64)
    np.testing.assert_allclose(predictions[0], predictions[1], atol=1e-5)


def test_shard_sampler_splits_an_epoch_like_distributed_sampler():
    dataset = list(range(11))
    for rank in range(3):
        ours = ShardSampler(11, shuffle=True, seed=5, num_replicas=3, rank=rank)
        reference = torch.utils.data.DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=True, seed=5)
        for epoch in range(2):
            ours.set_epoch(epoch)
            reference.set_epoch(epoch)
            assert list(ours) == list(reference)
    sampler = ShardSampler(11, shuffle=False, seed=0)
    sampler.skip = 4
    assert list(sampler) == list(range(4, 11)) and list(sampler) == list(range(11))  # skipping applies once
