"""apply_rotary with the signed sin table equals the reference library's rotation bit for bit."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from torchformers.nn.rotary import apply_rotary


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("batch", "seq"), [(1, 1), (3, 7)])
def test_rotation_is_bit_equal_to_the_reference(batch, seq, dtype):
    generator = torch.Generator().manual_seed(seq)
    q = torch.randn(batch, 4, seq, 16, generator=generator).to(dtype)
    k = torch.randn(batch, 2, seq, 16, generator=generator).to(dtype)
    angles = torch.rand(batch, seq, 8, generator=generator) * 6
    cos, sin = torch.cat((angles, angles), -1).cos().to(dtype), torch.cat((angles, angles), -1).sin().to(dtype)
    signed_sin = torch.cat((-sin[..., :8], sin[..., 8:]), -1)
    ours = apply_rotary(q, k, cos, signed_sin)
    reference = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
