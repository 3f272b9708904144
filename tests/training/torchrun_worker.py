"""A tiny causal-LM training run, launched by test_distributed.py under torchrun (2 processes) and run
in-process with the doubled batch; both save the final weights and the test predictions."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from training_cases import TINY_LLAMA, lm_rows


def run(output_dir: str, batch_size: int) -> None:
    from torchformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_config(LlamaConfig(**TINY_LLAMA))
    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=4,
                             max_grad_norm=0, save_strategy="no", disable_tqdm=True, logging_steps=2,
                             per_device_eval_batch_size=2, report_to="none")
    # Plain SGD: the update is proportional to the gradient, so any error in how the processes'
    # losses are scaled and averaged shows in the weights.
    trainer = Trainer(model, args, train_dataset=lm_rows(32, 1), optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.5}))
    trainer.train()
    trainer.save_model(output_dir)
    # 9 rows over 2 processes: the second gets a repeated row, which the gathering must drop.
    predictions = trainer.predict(lm_rows(9, 2)).predictions
    if trainer.is_world_process_zero():
        np.save(os.path.join(output_dir, "predictions.npy"), predictions)
        with open(os.path.join(output_dir, "log_history.json"), "w") as handle:
            json.dump(trainer.state.log_history, handle)
    trainer.end()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
