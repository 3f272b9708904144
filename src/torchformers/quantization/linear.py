"""Linear layers whose weights are int8 or int4 codes with bfloat16 scales.

Activations stay in floating point by default. With ``activations="int8"`` each product
quantizes its input rows to int8 in blocks of 32 (as llama.cpp does) and multiplies integer
codes (see ``native.py``): faster CPU decoding, at the cost of that rounding of the input.

A weight row is cut into groups of ``group_size`` input features and each group has a scale
(int4 also a zero point):

- int8: ``weight = code * scale`` with codes in [-128, 127]; one group per row (per channel)
  unless a group size is given (GGUF ``Q8_0`` is int8 in groups of 32, ``scale = d``).
- int4: ``weight = (code - 8) * scale + zero`` with codes in [0, 15], the convention of the
  int4 kernels PyTorch ships. GGUF ``Q4_0`` is ``scale = d, zero = 0``; ``Q4_1`` (``code * d + m``)
  is ``scale = d, zero = m + 8 * d``; both in groups of 32.

Products run on PyTorch's kernels where one fits: ``_weight_int8pack_mm`` (per-channel int8,
CPU), ``_weight_int4pack_mm_for_cpu`` and ``_weight_int4pack_mm`` (int4 on the CPU and on
CUDA GPUs from compute capability 8.0); grouped int8 (group sizes the int4 kernels take) runs
on the int4 kernels as two planes of nibbles (see :class:`Int8Linear`). They are fast with
bfloat16 activations only (their float32 paths are scalar loops), so the input is cast to
bfloat16 and the output back to the input's dtype. Elsewhere (another device, a shape a kernel
refuses) the layer dequantizes the weight and calls ``F.linear``. Layers with int8 activations
always run ``native.product``, on every machine (its torch fallback has the same arithmetic).

Checkpoints hold a portable layout, the same on every machine (the state dict):

- ``weight``: int8 codes (out, in), or for int4 uint8 (out, in / 2) with two codes per byte,
  the even input feature in the high nibble and the odd one in the low nibble (the layout
  ``_convert_weight_to_int4pack`` takes);
- ``weight_scale`` and, for int4, ``weight_zero``: bfloat16 (out, in / group_size);
- ``bias`` when the layer has one, in the model's dtype.

In memory, int4 codes (and grouped int8's planes) sit in the kernel's own layout, which depends
on the machine (the CPU kernel tiles by its vector width) and is not documented; it is
converted back to the portable one when a state dict is taken, the weight is dequantized or
the layer moves. Layers with int8 activations keep the portable layout (int8 codes offset by
128 to unsigned bytes).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, TorchformersError, WeightsMismatchError
from ..nn.linear import stamp, unchanged
from ..nn.onednn import needs_backward
from . import native
from .config import INT4_GROUP_SIZES, check_activations_value

KERNEL_DTYPE = torch.bfloat16
# The ``kernel`` of layers whose activations are quantized to int8 (native.product).
INT8_ACTIVATIONS = "int8_activations"
SCALE_DTYPE = torch.bfloat16
# Quantizing this many weights at a time bounds the float temporaries of large layers.
_QUANTIZE_CHUNK = 1 << 24


def check_group_size(name: str, in_features: int, group_size: int) -> None:
    """Refuse a group size that does not divide a layer's input features, naming the layer."""
    if in_features % group_size:
        fitting = [size for size in (256, 128, 64, 32) if in_features % size == 0]
        hint = f"group sizes that divide it: {fitting}" if fitting else "quantize it per channel or skip it"
        raise ConfigError(
            f"{name or 'layer'} has {in_features} input features, which group_size={group_size} does not divide; "
            f"{hint} (or add it to modules_to_not_convert)."
        )


def check_activations(name: str, in_features: int, group_size: int, activations: str) -> None:
    """Refuse an activations setting a layer cannot run, naming the layer."""
    check_activations_value(activations, name or "layer")
    if activations == "int8" and not native.kernel_fits(in_features, group_size):
        raise ConfigError(
            f"{name or 'layer'} has {in_features} input features in groups of {group_size}; int8 activations take "
            f"multiples of {native.BLOCK} (up to {native.MAX_FEATURES}) for both. Add it to modules_to_not_convert, "
            "or keep activations='float'."
        )


# -- codes and scales -------------------------------------------------------------------------
def quantize_weight(
    weight: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Codes, scales and (int4) zero points of a float weight (out, in), one scale per group of inputs.

    Scales are rounded to bfloat16 before the codes are chosen, so the codes fit the scales
    that are stored.
    """
    out_features, in_features = weight.shape
    groups = in_features // group_size
    rows_per_chunk = max(1, _QUANTIZE_CHUNK // max(in_features, 1))
    codes, scales, zeros = [], [], []
    for rows in weight.detach().split(rows_per_chunk):
        grouped = rows.float().reshape(-1, groups, group_size)
        if bits == 8:
            scale = (grouped.abs().amax(-1) / 127).to(SCALE_DTYPE).float()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            code = (grouped / scale[..., None]).round().clamp(-128, 127).to(torch.int8)
        else:
            low, high = grouped.amin(-1), grouped.amax(-1)
            scale = ((high - low) / 15).to(SCALE_DTYPE).float()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = (low + 8 * scale).to(SCALE_DTYPE).float()
            code = ((grouped - zero[..., None]) / scale[..., None] + 8).round().clamp(0, 15).to(torch.uint8)
            zeros.append(zero.to(SCALE_DTYPE))
        codes.append(code.reshape(-1, in_features))
        scales.append(scale.to(SCALE_DTYPE))
    zero_points = torch.cat(zeros) if zeros else None
    return torch.cat(codes).reshape(out_features, in_features), torch.cat(scales), zero_points


def dequantize_weight(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The float weight (out, in) that codes (out, in) and per-group scales (out, groups) stand for."""
    out_features, in_features = codes.shape
    grouped = codes.reshape(out_features, scale.shape[1], -1).to(torch.float32)
    if zero is None:
        weight = grouped * scale.float()[..., None]
    else:
        weight = (grouped - 8) * scale.float()[..., None] + zero.float()[..., None]
    return weight.reshape(out_features, in_features).to(dtype)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes (out, in) as uint8 (out, in / 2): even input feature in the high nibble, odd in the low."""
    codes = codes.to(torch.uint8)
    return (codes[:, 0::2] << 4) | codes[:, 1::2]


def unpack_nibbles(pairs: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: uint8 codes (out, in)."""
    return torch.stack((pairs >> 4, pairs & 15), dim=-1).reshape(pairs.shape[0], -1)


# -- int4 kernel layouts ------------------------------------------------------------------------
def _int4_kernel(device: torch.device, out_features: int, in_features: int, group_size: int) -> str | None:
    """Which int4 kernel serves a layer on ``device``: "cpu", "cuda", or None for dequantize-and-matmul."""
    if group_size not in INT4_GROUP_SIZES or in_features % group_size:
        return None
    if device.type == "cpu":
        return "cpu" if out_features % 16 == 0 else None
    if device.type == "cuda" and out_features % 8 == 0 and torch.cuda.get_device_capability(device) >= (8, 0):
        return "cuda"
    return None


def _inner_k_tiles(in_features: int) -> int:
    # The CUDA layout tiles the input features by 16 * inner_k_tiles; a group size of at least
    # 32 dividing in_features guarantees 2 fits.
    return next(tiles for tiles in (8, 4, 2) if in_features % (16 * tiles) == 0)


# Rows converted to or from the CPU kernel's layout at a time (when its rows are independent),
# bounding the int32 temporaries of large layers (an output layer over a big vocabulary).
_LAYOUT_CHUNK = 1 << 22


@functools.lru_cache(maxsize=16)
def _independent_rows(in_features: int) -> int | None:
    """Rows the CPU layout packs on their own: a multiple of 64 such that packing ``n * rows`` rows
    equals stacking the packings of ``n`` blocks of ``rows``, or None where that does not hold.

    The layout tiles the output features in blocks of 64 on this machine's build; rather than
    rely on it, two blocks are packed together and apart and compared.
    """
    probe = torch.randint(0, 16, (128, in_features), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    together = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
    apart = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(half, 1) for half in probe.split(64)]
    if together.shape[0] != 128 or not torch.equal(together, torch.cat(apart)):
        return None
    return max(64, _LAYOUT_CHUNK // in_features // 64 * 64)


def _row_blocks(kernel: str | None, rows: int, in_features: int) -> int:
    """How many rows to convert at a time between the codes and ``kernel``'s layout."""
    block = _independent_rows(in_features) if kernel == "cpu" and rows > 64 else None
    return block or rows


def _to_kernel_layout(kernel: str | None, codes: torch.Tensor) -> torch.Tensor:
    if kernel == "cpu":
        block = _row_blocks(kernel, codes.shape[0], codes.shape[1])
        return torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(part.to(torch.int32), 1)
                          for part in codes.split(block)])
    if kernel == "cuda":
        return torch.ops.aten._convert_weight_to_int4pack(pack_nibbles(codes), _inner_k_tiles(codes.shape[1]))
    return pack_nibbles(codes)


def _nibbles_in_storage_order(packed: torch.Tensor) -> torch.Tensor:
    stored = packed.contiguous().view(torch.uint8).reshape(-1)
    return torch.stack((stored >> 4, stored & 15), dim=1).reshape(-1)


@functools.lru_cache(maxsize=16)
def _kernel_nibble_sources(kernel: str, out_features: int, in_features: int, device: torch.device) -> torch.Tensor:
    """For each nibble of a kernel-layout weight, in storage order, the flat index (row * in + column)
    of the code it holds.

    The layout is read off the kernel's own packing function instead of being written down
    here, since it changes with the machine: codes whose values are the base-16 digits of
    their positions are packed, one digit at a time, and the digits found at each nibble
    spell out where it came from. Layers of one shape share the result.
    """
    count = out_features * in_features
    index_dtype = torch.int32 if count < 2**31 else torch.int64
    positions = torch.arange(count, dtype=index_dtype, device=device)
    sources = torch.zeros(count, dtype=index_dtype, device=device)
    for shift in range(0, max(count - 1, 1).bit_length(), 4):
        digits = ((positions >> shift) & 15).to(torch.uint8).reshape(out_features, in_features)
        sources |= _nibbles_in_storage_order(_to_kernel_layout(kernel, digits)).to(index_dtype) << shift
    covered = torch.zeros(count, dtype=torch.bool, device=device).index_fill_(0, sources.long(), True)
    if sources.numel() != count or not bool(covered.all()):
        raise TorchformersError(
            f"torchformers cannot read the {kernel} int4 kernel's weight layout for a ({out_features}, {in_features}) "
            "weight with this PyTorch build: packing is not a rearrangement of the codes. Please report it."
        )
    return sources


def _codes_from_layout(kernel: str | None, packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    if kernel is None:
        return unpack_nibbles(packed)
    block = _row_blocks(kernel, out_features, in_features)
    codes = torch.empty(out_features, in_features, dtype=torch.uint8, device=packed.device)
    for start in range(0, out_features, block):
        rows = min(block, out_features - start)
        sources = _kernel_nibble_sources(kernel, rows, in_features, packed.device)
        part = packed if rows == out_features else packed[start:start + rows]
        codes[start:start + rows].view(-1)[sources] = _nibbles_in_storage_order(part)
    return codes


# -- layers -------------------------------------------------------------------------------------
def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, copied if its data does not start on a 64-byte boundary.

    The CPU int8 kernel (torch 2.13) loads its operands with aligned vector instructions and
    crashes on views into a checkpoint's memory map or a sliced buffer; fresh tensors from
    torch's allocator are 64-byte aligned.
    """
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


class _DequantizedGradient(torch.autograd.Function):
    """The quantized product with a gradient for its input (the codes themselves are frozen), so
    adapters below a quantized layer train (QLoRA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer = layer
        return layer._matmul(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output @ ctx.layer.dequantize(grad_output.dtype), None


class QuantizedLinear(nn.Module):
    """What int8 and int4 layers share: the bias, the gradient route, and converting between the
    in-memory tensors and the checkpoint layout (state dicts, device moves)."""

    bits: ClassVar[int]

    def __init__(self, in_features: int, out_features: int, group_size: int | None, bias: bool,
                 device: torch.device | str | None = None, activations: str = "float") -> None:
        super().__init__()
        group_size = in_features if group_size is None else group_size
        check_group_size(type(self).__name__, in_features, group_size)
        check_activations(type(self).__name__, in_features, group_size, activations)
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.activations = activations
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    # What subclasses provide.
    def checkpoint_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """{name: (shape, dtype)} of the tensors a checkpoint holds for this layer (without the bias)."""
        raise NotImplementedError

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """This layer's tensors in the checkpoint layout (without the bias)."""
        raise NotImplementedError

    def set_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take tensors in the checkpoint layout, on the device the layer is to run on."""
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (out, in) the codes stand for."""
        raise NotImplementedError

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # Shared behaviour.
    @property
    def device(self) -> torch.device:
        return next(iter(self._buffers.values())).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_backward(x):
            output = _DequantizedGradient.apply(x, self)
        else:
            output = self._matmul(x)
        return output if self.bias is None else output + self.bias

    def _dequantized_linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(x.dtype))

    def _kernel_call(self, x: torch.Tensor, kernel: Any, *args: Any, aligned: bool = False,
                     twice: bool = False) -> torch.Tensor:
        """``kernel(x2d, *args)`` on bfloat16 rows, reshaped and cast back to ``x``'s shape and dtype.

        ``aligned`` copies rows that do not start on a 64-byte boundary (the int8 kernel needs
        it); ``twice`` feeds each row twice, side by side (grouped int8's two planes).
        """
        rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
        if twice:
            rows = torch.cat((rows, rows), dim=1)
        elif aligned:
            rows = _aligned(rows)
        return kernel(rows, *args).to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def merge_delta(self, delta: torch.Tensor) -> None:
        """Add ``delta`` (out, in) to the weight and quantize again (merging an adapter; rounds)."""
        weight = self.dequantize(torch.float32) + delta.to(device=self.device, dtype=torch.float32)
        codes, scale, zero = quantize_weight(weight, self.bits, self.group_size)
        self._set_codes(codes, scale, zero)

    def _set_codes(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> None:
        raise NotImplementedError

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for name, tensor in self.checkpoint_tensors().items():
            destination[prefix + name] = tensor
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        layout = self.checkpoint_layout()
        tensors = {}
        for name, (shape, dtype) in layout.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            tensor = state_dict[key]
            if tensor.dtype != dtype and not (dtype.is_floating_point and tensor.is_floating_point()):
                raise WeightsMismatchError(
                    f"{key!r} holds {tensor.dtype} values where a {self.bits}-bit quantized layer keeps {dtype}: "
                    "the checkpoint was not saved with this quantization. Load it without quantization_config, "
                    "or pass the config it was saved with."
                )
            if tuple(tensor.shape) != shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(tensor.shape)}, "
                                  f"the quantized layer expects {shape}.")
                continue
            tensors[name] = tensor
        if len(tensors) == len(layout):
            self.set_checkpoint_tensors(tensors)
        if self.bias is not None:
            key = prefix + "bias"
            if key not in state_dict:
                missing_keys.append(key)
            elif local_metadata.get("assign_to_params_buffers", False):
                self.bias = nn.Parameter(state_dict[key], requires_grad=self.bias.requires_grad)
            else:
                with torch.no_grad():
                    self.bias.copy_(state_dict[key])
        if strict:
            own = set(layout) | {"bias"}
            unexpected_keys.extend(
                key for key in state_dict
                if key.startswith(prefix) and "." not in key[len(prefix):] and key[len(prefix):] not in own
            )

    def _leave_group(self) -> None:
        """Empty the joined product this layer belongs to (see Int4Linear.project_group): its tensors change."""
        group = self.__dict__.pop("_in_group", None)
        if group is not None:
            group.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> QuantizedLinear:
        self._leave_group()
        # Codes and scales follow device moves but not dtype casts (model.half() must not round the
        # scales: fn sees them as int16), and int4 codes moving to another device leave the kernel
        # layout, which belongs to one device, and are packed again there.
        moves = fn(torch.empty(0, dtype=torch.int16, device=self.device)).device != self.device
        tensors = self.checkpoint_tensors() if moves else dict(self._buffers)
        for name in self._buffers:
            self._buffers[name] = None
        super()._apply(fn, recurse)  # the bias, as for any parameter
        converted = {
            name: fn(tensor.view(torch.int16)).view(tensor.dtype) if tensor.is_floating_point() else fn(tensor)
            for name, tensor in tensors.items()
        }
        if moves:
            self.set_checkpoint_tensors(converted)
        else:
            self._buffers.update(converted)
        return self

    def extra_repr(self) -> str:
        text = (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")
        return text if self.activations == "float" else text + f", activations={self.activations!r}"


class Int8Linear(QuantizedLinear):
    """A linear layer with int8 weights: one bfloat16 scale per output row (per channel), or per
    group of ``group_size`` inputs.

    PyTorch's int8 kernel takes one scale per row only. Grouped int8 (GGUF ``Q8_0``) runs on the
    int4 kernel instead, as two planes of nibbles that together hold each code exactly: with
    ``code = 16 * high + low`` (``high`` in [-8, 7], ``low`` in [0, 15]), the high plane has
    scale ``16 * d`` and zero point 0, the low plane scale ``d`` and zero point ``8 * d``, and
    the input is fed to both (twice the int4 work, the same bytes as the int8 codes). The
    planes replace the codes in memory; the checkpoint layout is unchanged.
    """

    bits = 8

    def __init__(self, in_features: int, out_features: int, group_size: int | None = None, bias: bool = True,
                 device: torch.device | str | None = None, activations: str = "float") -> None:
        super().__init__(in_features, out_features, group_size, bias, device, activations)
        groups = in_features // self.group_size
        # None: plain codes, dequantized for each product; "int8": the per-channel kernel;
        # "cpu" or "cuda": the two planes on that int4 kernel; INT8_ACTIVATIONS: codes + 128 as
        # uint8, for native.product.
        self.kernel: str | None = None
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
                             persistent=False)
        self.register_buffer("weight_scale", torch.ones(out_features, groups, dtype=SCALE_DTYPE, device=device),
                             persistent=False)
        if activations == "int8":
            self._set_codes(self.weight, self.weight_scale, None)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                   activations: str = "float") -> Int8Linear:
        """A layer over int8 codes (out, in) and scales (out, groups); the group size follows from the shapes."""
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, in_features // scale.shape[1], bias=bias is not None, device="meta",
                    activations=activations)
        layer.set_checkpoint_tensors({"weight": codes, "weight_scale": scale})
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    def checkpoint_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        groups = self.in_features // self.group_size
        return {"weight": ((self.out_features, self.in_features), torch.int8),
                "weight_scale": ((self.out_features, groups), SCALE_DTYPE)}

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        if self.kernel == INT8_ACTIVATIONS:
            return {"weight": native.signed_codes(self.weight), "weight_scale": self.weight_scale}
        if self.kernel not in ("cpu", "cuda"):
            return {"weight": self.weight, "weight_scale": self.weight_scale}
        planes = _codes_from_layout(self.kernel, self.packed, self.out_features, 2 * self.in_features)
        high, low = planes.to(torch.int16).split(self.in_features, dim=1)
        codes = ((high - 8) * 16 + low).to(torch.int8)
        groups = self.in_features // self.group_size
        return {"weight": codes, "weight_scale": self.scale_and_zero[groups:, :, 0].t().contiguous()}

    def set_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._set_codes(tensors["weight"], tensors["weight_scale"], None)

    def _set_codes(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> None:
        codes = codes.to(torch.int8)
        scale = scale.to(device=codes.device, dtype=SCALE_DTYPE)
        self._buffers.clear()
        self.kernel = None
        if self.activations == "int8":
            self.kernel = INT8_ACTIVATIONS
            if codes.is_cpu:
                native.load_kernel()
            self.register_buffer("weight", native.offset_codes(codes), persistent=False)
            self.register_buffer("weight_scale", scale.contiguous(), persistent=False)
            return
        if not codes.is_meta:
            if codes.is_cpu and self.group_size == self.in_features and self.in_features % 16 == 0:
                # The kernel reads past the end of rows whose length is not a multiple of 16 (it crashes).
                self.kernel = "int8"
            elif self.group_size != self.in_features:
                self.kernel = _int4_kernel(codes.device, self.out_features, 2 * self.in_features, self.group_size)
        if self.kernel in ("cpu", "cuda"):
            codes16 = codes.to(torch.int16)
            planes = torch.cat(((codes16 >> 4) + 8, codes16 & 15), dim=1).to(torch.uint8)
            self.register_buffer("packed", _to_kernel_layout(self.kernel, planes), persistent=False)
            scale_and_zero = torch.cat((torch.stack((scale * 16, torch.zeros_like(scale)), dim=-1),
                                        torch.stack((scale, scale * 8), dim=-1)), dim=1)
            self.register_buffer("scale_and_zero", scale_and_zero.transpose(0, 1).contiguous(), persistent=False)
        else:
            self.register_buffer("weight", _aligned(codes.contiguous()), persistent=False)
            self.register_buffer("weight_scale", scale.contiguous(), persistent=False)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        tensors = self.checkpoint_tensors()
        return dequantize_weight(tensors["weight"], tensors["weight_scale"], None, dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == INT8_ACTIVATIONS:
            return native.product(x, self.weight, self.weight_scale, None, self.group_size)
        if self.kernel == "int8" and x.is_cpu:
            return self._kernel_call(x, torch._weight_int8pack_mm, self.weight, self.weight_scale.view(-1),
                                     aligned=True)
        if self.kernel == "cpu" and x.is_cpu:
            return self._kernel_call(x, torch._weight_int4pack_mm_for_cpu, self.packed, self.group_size,
                                     self.scale_and_zero, twice=True)
        if self.kernel == "cuda" and x.is_cuda:
            return self._kernel_call(x, torch._weight_int4pack_mm, self.packed, self.group_size, self.scale_and_zero,
                                     twice=True)
        return self._dequantized_linear(x)


class Int4Linear(QuantizedLinear):
    """A linear layer with int4 weights in groups of ``group_size`` inputs, each with a bfloat16 scale and zero point."""

    bits = 4

    def __init__(self, in_features: int, out_features: int, group_size: int = 64, bias: bool = True,
                 device: torch.device | str | None = None, activations: str = "float") -> None:
        if in_features % 2:
            raise ConfigError(f"Int4Linear needs an even number of input features, got {in_features}.")
        super().__init__(in_features, out_features, group_size, bias, device, activations)
        groups = in_features // self.group_size
        self.kernel: str | None = None
        self.register_buffer("packed", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device),
                             persistent=False)
        self.register_buffer("scale_and_zero", torch.zeros(groups, out_features, 2, dtype=SCALE_DTYPE, device=device),
                             persistent=False)
        if activations == "int8":
            zeros = torch.zeros(out_features, groups, dtype=SCALE_DTYPE, device=device)
            self._set_codes(torch.zeros(out_features, in_features, dtype=torch.uint8, device=device), zeros, zeros)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   bias: torch.Tensor | None = None, activations: str = "float") -> Int4Linear:
        """A layer over codes (out, in) in [0, 15] and per-group scales and zero points (out, groups)."""
        out_features, in_features = codes.shape
        layer = cls(in_features, out_features, in_features // scale.shape[1], bias=bias is not None, device="meta",
                    activations=activations)
        layer._set_codes(codes, scale, zero)
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    def checkpoint_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        groups = (self.out_features, self.in_features // self.group_size)
        return {"weight": ((self.out_features, self.in_features // 2), torch.uint8),
                "weight_scale": (groups, SCALE_DTYPE), "weight_zero": (groups, SCALE_DTYPE)}

    def codes(self) -> torch.Tensor:
        """The int4 codes (out, in) as uint8 values in [0, 15]."""
        kernel = None if self.kernel == INT8_ACTIVATIONS else self.kernel  # the checkpoint layout
        return _codes_from_layout(kernel, self.packed, self.out_features, self.in_features)

    def _scale_and_zero(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scales and zero points (out, groups), views where the layout allows."""
        if self.kernel == INT8_ACTIVATIONS:
            return self.weight_scale, self.weight_zero
        scale, zero = self.scale_and_zero.permute(2, 1, 0)
        return scale, zero

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        pairs = self.packed if self.kernel in (None, INT8_ACTIVATIONS) else pack_nibbles(self.codes())
        scale, zero = self._scale_and_zero()
        return {"weight": pairs, "weight_scale": scale.contiguous(), "weight_zero": zero.contiguous()}

    def set_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._set_codes(unpack_nibbles(tensors["weight"]), tensors["weight_scale"], tensors["weight_zero"])

    def _set_codes(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> None:
        self._leave_group()
        device = codes.device
        if self.activations == "int8":
            # The checkpoint layout, which native.product reads; scales and zero points (out, groups).
            self.kernel = INT8_ACTIVATIONS
            if codes.is_cpu:
                native.load_kernel()
            self._buffers.clear()
            self.register_buffer("packed", pack_nibbles(codes), persistent=False)
            for name, values in (("weight_scale", scale), ("weight_zero", zero)):
                self.register_buffer(name, values.to(device=device, dtype=SCALE_DTYPE).contiguous(), persistent=False)
            return
        self.kernel = None if codes.is_meta else _int4_kernel(device, self.out_features, self.in_features,
                                                                 self.group_size)
        self.packed = _to_kernel_layout(self.kernel, codes)
        # The kernels read (groups, out, 2): each group's scale and zero point side by side.
        self.scale_and_zero = torch.stack((scale, zero), dim=-1).to(device=device, dtype=SCALE_DTYPE).transpose(0, 1)
        self.scale_and_zero = self.scale_and_zero.contiguous()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_weight(self.codes(), *self._scale_and_zero(), dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == INT8_ACTIVATIONS:
            return native.product(x, self.packed, self.weight_scale, self.weight_zero, self.group_size)
        if self.kernel == "cpu" and x.is_cpu:
            return self._kernel_call(x, torch._weight_int4pack_mm_for_cpu, self.packed, self.group_size,
                                     self.scale_and_zero)
        if self.kernel == "cuda" and x.is_cuda:
            return self._kernel_call(x, torch._weight_int4pack_mm, self.packed, self.group_size, self.scale_and_zero)
        return self._dequantized_linear(x)

    def project_group(self, x: torch.Tensor, layers: tuple[nn.Module, ...]) -> tuple[torch.Tensor, ...] | None:
        """``layer(x)`` for each of ``layers`` (this layer first; projections of the same input, such
        as q, k and v) as one int4 kernel call, or None where that does not apply.

        One call over the concatenated rows costs less than one per layer (per-call overhead, and
        one cast of ``x`` to bfloat16 instead of several): +12% decode speed on SmolLM2's Q4_1 file.
        Layers with int8 activations join their rows, scales and zero points (the checkpoint layout,
        row by row) and quantize ``x`` once. The CPU layout packs rows in independent blocks, so the concatenation is the layers' packed
        rows one after another; on first use each layer's codes become a view into the group's, so
        their memory does not grow. The scales are copied into the group (a quarter of the codes'
        size): concatenating them at each call cost more than the grouping saved, and layers holding
        strided views of them would not reach the kernel inside compiled graphs. Applies to CPU
        layers (int4 CPU kernel or int8 activations) without bias that share input size and group size, with no gradient to record.
        Compiled graphs use a group an eager call made (generate's prompt always runs eagerly):
        inside them the stamps cannot be read, so a member that loads, merges or moves empties
        the group it belongs to.
        """
        sizes = [layer.out_features for layer in layers]
        if torch.compiler.is_compiling():
            # The group an eager call made. getattr rather than __dict__: dynamo guards attribute reads
            # (a group made or emptied later recompiles the step) but not reads of __dict__. A member
            # replaced since (an adapter wrapping it) does not point at the group.
            group = getattr(self, "_in_group", None)
            if (not group or not x.is_cpu or needs_backward(x)
                    or not all(getattr(layer, "_in_group", None) is group for layer in layers)):
                return None
            return self._group_product(x, group, sizes)
        if (not x.is_cpu or needs_backward(x)
                or not all(type(layer) is Int4Linear and layer.kernel == self.kernel and layer.bias is None
                           and layer.in_features == self.in_features and layer.group_size == self.group_size
                           for layer in layers)):
            return None
        if self.kernel != INT8_ACTIVATIONS and (
                self.kernel != "cpu" or any(size % 64 for size in sizes) or _independent_rows(self.in_features) is None):
            return None
        group = self.__dict__.get("_in_group")
        if not group or not unchanged(group["made_from"], _group_sources(layers)):
            # Built outside inference mode: the layers' buffers stay ordinary tensors (trainable around).
            with torch.inference_mode(False):
                joined = {name: torch.cat([layer._buffers[name] for layer in layers], dim=dim)
                          for name, dim in self._group_buffers().items()}
            start = 0
            for layer, size in zip(layers, sizes, strict=True):
                # Members' buffers that are row blocks of the group's become views into it.
                for name, dim in self._group_buffers().items():
                    if dim == 0:
                        layer._buffers[name] = joined[name][start:start + size]
                start += size
            group = {"made_from": stamp(_group_sources(layers)), **joined}
            for layer in layers:  # this layer first
                layer.__dict__["_in_group"] = group  # the same dict: a member that changes empties it
        return self._group_product(x, group, sizes)

    def _group_buffers(self) -> dict[str, int]:
        """The buffers a group joins, by the dimension that holds the output rows."""
        if self.kernel == INT8_ACTIVATIONS:
            return {"packed": 0, "weight_scale": 0, "weight_zero": 0}
        return {"packed": 0, "scale_and_zero": 1}

    def _group_product(self, x: torch.Tensor, group: dict, sizes: list[int]) -> tuple[torch.Tensor, ...]:
        if self.kernel == INT8_ACTIVATIONS:
            out = native.product(x, group["packed"], group["weight_scale"], group["weight_zero"], self.group_size)
        else:
            rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
            out = torch._weight_int4pack_mm_for_cpu(rows, group["packed"], self.group_size, group["scale_and_zero"])
            out = out.to(x.dtype)
        return out.view(*x.shape[:-1], sum(sizes)).split(sizes, dim=-1)


def _group_sources(layers: tuple[nn.Module, ...]) -> list[torch.Tensor]:
    """The buffers an int4 group is made from: a group is rebuilt when any of them changed."""
    return [layer._buffers[name] for layer in layers for name in layer._group_buffers()]


QUANTIZED_LINEAR_CLASSES: dict[int, type[QuantizedLinear]] = {8: Int8Linear, 4: Int4Linear}


def quantized_linear(weight: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int | None,
                     name: str = "", activations: str = "float") -> QuantizedLinear:
    """A quantized layer for a float weight (out, in) and bias; the layer takes over the bias tensor."""
    out_features, in_features = weight.shape
    layer_class = QUANTIZED_LINEAR_CLASSES[bits]
    group_size = in_features if group_size is None else group_size
    check_group_size(name, in_features, group_size)
    if bits == 4 and in_features % 2:
        raise ConfigError(f"{name or 'layer'} has an odd number of input features ({in_features}); int4 needs an even one.")
    check_activations(name, in_features, group_size, activations)
    layer = layer_class(in_features, out_features, group_size, bias=bias is not None, device="meta",
                        activations=activations)
    layer._set_codes(*quantize_weight(weight, bits, group_size))
    if bias is not None:
        layer.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
    return layer
