"""RMSNorm equals the reference library's LlamaRMSNorm bit for bit, in float32 (torch.rms_norm) and
in half precision (the reference's order of casts)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from torchformers.nn.norms import RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 576), (8, 1, 64), (2, 37, 96)])
def test_rms_norm_is_bit_equal_to_the_reference(shape, dtype):
    generator = torch.Generator().manual_seed(shape[1])
    weight = torch.randn(shape[-1], generator=generator).to(dtype)
    x = (3 * torch.randn(*shape, generator=generator)).to(dtype)
    ours, reference = RMSNorm(shape[-1], eps=1e-5).to(dtype), LlamaRMSNorm(shape[-1], eps=1e-5).to(dtype)
    with torch.no_grad():
        ours.weight.copy_(weight)
        reference.weight.copy_(weight)
        assert torch.equal(ours(x), reference(x))


def test_rms_norm_gradients_match_the_reference():
    x = torch.randn(3, 4, 32, requires_grad=True)
    ours, reference = RMSNorm(32), LlamaRMSNorm(32)
    (ours(x) * torch.arange(32.0)).sum().backward()
    ours_grads = (x.grad.clone(), ours.weight.grad)
    x.grad = None
    (reference(x) * torch.arange(32.0)).sum().backward()
    torch.testing.assert_close(ours_grads[0], x.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_grads[1], reference.weight.grad, atol=1e-5, rtol=1e-6)
