"""LoRA on a quantized base (QLoRA, and DoRA on it): gradients pass through the int8/int4 products to
the adapters, the loss falls, and the adapter saves, reloads and merges."""

from __future__ import annotations

import pytest
import torch

from torchformers import LlamaConfig, LlamaForCausalLM
from torchformers.peft import LoraConfig, PeftModel, get_peft_model
from torchformers.quantization import Int4Linear, Int8Linear, quantize

TINY = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}
BATCH = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))


def quantized_base(bits: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return quantize(LlamaForCausalLM.from_config(LlamaConfig(**TINY)), {"bits": bits, "group_size": 32 if bits == 4 else None})


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize(("bits", "layer_class"), [(4, Int4Linear), (8, Int8Linear)])
def test_adapters_on_a_quantized_base_train(bits, layer_class, dora, tmp_path):
    torch.manual_seed(1)
    model = get_peft_model(quantized_base(bits), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                            use_dora=dora))
    assert isinstance(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer, layer_class)
    trainable = [param for param in model.parameters() if param.requires_grad]
    assert all(param.dtype == torch.float32 for param in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    losses = []
    for step in range(20):
        loss = model(input_ids=BATCH, labels=BATCH).loss
        loss.backward()
        if step == 0:
            # Layer 0's adapter reaches the loss only through the quantized layers above it.
            first = model.get_base_model().model.layers[0].self_attn.q_proj
            assert first.lora_B["default"].weight.grad.abs().sum() > 0
            if dora:  # DoRA's row lengths train too (from the dequantized weight's)
                assert first.lora_magnitude_vector["default"].weight.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]

    model.eval()
    with torch.no_grad():
        trained = model(BATCH).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(quantized_base(bits), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(BATCH).logits, trained, atol=1e-5, rtol=0)
        merged = reloaded.merge_and_unload()
        assert isinstance(merged.model.layers[0].self_attn.q_proj, layer_class)
        # Merging quantizes the sum again: the outputs move by about one quantization step.
        error = ((merged(BATCH).logits - trained).norm() / trained.norm()).item()
    assert error < (0.02 if bits == 8 else 0.2)


@pytest.mark.parametrize("bits", [None, 4])
def test_the_trainer_trains_and_saves_only_the_adapter(bits, tmp_path):
    from torchformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    base = LlamaForCausalLM.from_config(LlamaConfig(**TINY)) if bits is None else quantized_base(bits)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = [{"input_ids": row, "labels": row} for row in BATCH.repeat(4, 1)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=30, learning_rate=1e-2,
                             per_device_train_batch_size=4, logging_steps=5, report_to="none", save_strategy="no",
                             use_cpu=True)
    trainer = Trainer(model, args, train_dataset=rows)
    frozen = {name: param.detach().clone() for name, param in model.named_parameters() if not param.requires_grad}
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(param, frozen[name]) for name, param in model.named_parameters() if name in frozen)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()


def test_prepare_model_for_kbit_training_then_adapters_train():
    from torchformers.peft import prepare_model_for_kbit_training

    torch.manual_seed(0)
    model = quantize(LlamaForCausalLM.from_config(LlamaConfig(**TINY)).to(torch.bfloat16), {"bits": 4, "group_size": 32})
    model = prepare_model_for_kbit_training(model)  # peft's default: reentrant checkpointing
    assert not any(param.requires_grad for param in model.parameters())
    assert all(param.dtype == torch.float32 for param in model.parameters())  # norms and embeddings upcast
    assert model.is_gradient_checkpointing
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    peft_model.train()
    loss = peft_model(input_ids=BATCH, labels=BATCH).loss
    loss.backward()
    # Through the checkpointed layers, the first layer's adapter still gets its gradient.
    first = peft_model.get_base_model().model.layers[0].self_attn.q_proj
    assert first.lora_B["default"].weight.grad.abs().sum() > 0
    # The same gradients as without checkpointing.
    with_checkpoints = first.lora_B["default"].weight.grad.clone()
    peft_model.zero_grad()
    peft_model.get_base_model().gradient_checkpointing_disable()
    peft_model(input_ids=BATCH, labels=BATCH).loss.backward()
    torch.testing.assert_close(first.lora_B["default"].weight.grad, with_checkpoints, atol=1e-6, rtol=1e-5)
