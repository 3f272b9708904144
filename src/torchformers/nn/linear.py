"""Linear layers with a faster CPU route for the few-row products of decoding.

A decode step multiplies every weight matrix by one row per sequence. On the CPU,
``F.linear`` hands such a product to BLAS's matrix-vector kernel, which on some machines
(MKL on AMD processors, for one) streams the weight at a third of the memory bandwidth,
and on one thread. Cutting the weight into a few equal blocks and multiplying them as one
batched product takes BLAS's batched matrix-matrix route instead, which streams at close
to full bandwidth and spreads the blocks over the threads. Same product, another kernel:
results agree with ``F.linear`` to float32 rounding.

Only decode steps take this route (one position per sequence, at most
``MAX_DECODE_ROWS`` sequences, float32 on the CPU). Prompts, training and other dtypes
and devices keep the usual kernels, whose results do not depend on where the weights sit
in memory (the batched kernels' last bits do).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from . import rows_product
from .onednn import (
    CAN_PACK_WEIGHTS,
    inference_linear,
    needs_backward,
    onednn_infers,
    onednn_trains,
    pack_weight,
    packed_linear,
    trainable_linear,
)

MAX_DECODE_ROWS = 16
BLOCKS = 4
# A batch's decode step (2 to MAX_DECODE_ROWS rows) goes to oneDNN where it is there: on AMD
# processors MKL's float32 kernels take generic paths (see onednn.py). Prompts stay on MKL,
# whose sums are the reference library's to the last bit. False: MKL's routes throughout.
ONEDNN_SEVERAL_ROWS = True
# The route is measured on MKL's batched GEMM; other BLAS libraries keep the usual kernels.
_BATCHED_ROUTE = torch.backends.mkl.is_available()


def _decode_rows(x: torch.Tensor, weight: torch.Tensor) -> int:
    """The number of rows of ``x`` if the product is a decode step that takes the batched route, else 0."""
    if not (_BATCHED_ROUTE and x.is_cpu and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.is_contiguous()):
        return 0
    features = x.shape[-1]
    rows = x.numel() // features if features else 0
    one_position = rows == 1 or (x.dim() >= 3 and x.shape[-2] == 1)
    return rows if one_position and rows <= MAX_DECODE_ROWS else 0


def _as_columns(x: torch.Tensor, rows: int, features: int) -> torch.Tensor:
    """The rows of ``x`` as the columns of a (BLOCKS, features, rows) operand, without a copy.

    The strides matter: BLAS must see a (features, rows) matrix whose row stride is 1 and
    column stride ``features``; a (features, 1) column built by reshaping gets stride 1 in
    both dimensions and sends MKL down a path six times slower.
    """
    if x.is_contiguous():
        return x.as_strided((BLOCKS, features, rows), (0, 1, features))
    return x.reshape(rows, features).t().expand(BLOCKS, features, rows)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a weight stored (out_features, in_features)."""
    rows = _decode_rows(x, weight)
    if rows > 1 and ONEDNN_SEVERAL_ROWS and onednn_infers(x, weight):
        if torch.compiler.is_compiling():
            return _decode_rows_linear(x, weight, bias)  # inductor cannot lower oneDNN's call itself
        return inference_linear(x, weight, bias)
    out_features, features = weight.shape
    main = out_features - out_features % BLOCKS
    if rows == 0 or main == 0:
        return F.linear(x, weight, bias)
    if rows > 1 and features > out_features and main == out_features:
        # With more inputs than outputs (a down projection), several rows go faster with the rows
        # as the first operand and the weight blocks as the second (measured with MKL).
        weight_blocks = weight.view(BLOCKS, out_features // BLOCKS, features).transpose(1, 2)
        out = torch.bmm(x.reshape(rows, features).expand(BLOCKS, rows, features), weight_blocks)
        out = out.transpose(0, 1).contiguous().view(*x.shape[:-1], out_features)
        return out if bias is None else out + bias
    columns = _as_columns(x, rows, features)
    if main == out_features:
        out = torch.bmm(weight.view(BLOCKS, main // BLOCKS, features), columns)  # (blocks, out/blocks, rows)
        # One row is already in (row, feature) order; several need their features gathered.
        out = out.view(rows, out_features) if rows == 1 else out.permute(2, 0, 1).contiguous()
    else:
        # A few leftover rows of the weight (GPT-2's 50257-token head) go through a small product.
        out = x.new_empty(rows, out_features)
        weight_blocks = weight[:main].view(BLOCKS, main // BLOCKS, features)
        if rows == 1:
            torch.bmm(weight_blocks, columns, out=out[:, :main].view(BLOCKS, main // BLOCKS, 1))
        else:
            out[:, :main] = torch.bmm(weight_blocks, columns).permute(2, 0, 1).reshape(rows, main)
        torch.mm(x.reshape(rows, features), weight[main:].t(), out=out[:, main:])
    out = out.view(*x.shape[:-1], out_features)
    return out if bias is None else out + bias


def linear_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight + bias`` for a weight stored (in_features, out_features), as GPT-2's Conv1D stores it.

    A single row cuts the input features into blocks and sums the partial products; a few
    rows cut the output features. Other inputs use ``torch.addmm`` as before. Inside a
    compiled graph, decode rows without a gradient go through the same kernels as one
    opaque operation: inductor would otherwise turn the one-row blocked product into its
    own loops, which made compiled GPT-2 decoding about 1.5x slower than eager.
    """
    if weight.dim() == 2 and not weight.is_contiguous() and weight.t().is_contiguous():
        # The transpose of an (out, in) weight, as Conv1D keeps it: the routes of (out, in) layers.
        if onednn_trains(x, weight.t()):
            return trainable_linear(x, weight.t(), bias)
        return linear(x, weight.t(), bias)
    if torch.compiler.is_compiling() and _decode_rows(x, weight) and not needs_backward(x, weight, bias):
        return _decode_linear_transposed(x, weight, bias)
    return _linear_transposed(x, weight, bias)


def _linear_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    rows = _decode_rows(x, weight)
    features, out_features = weight.shape
    if rows == 1 and features % BLOCKS == 0:
        partial = torch.bmm(x.reshape(BLOCKS, 1, features // BLOCKS),
                            weight.view(BLOCKS, features // BLOCKS, out_features))
        out = partial.sum(dim=0).view(*x.shape[:-1], out_features)
        return out if bias is None else out + bias
    if rows > 1 and out_features % BLOCKS == 0:
        weight_blocks = weight.view(features, BLOCKS, out_features // BLOCKS).transpose(0, 1)
        out = torch.bmm(x.reshape(rows, features).expand(BLOCKS, rows, features), weight_blocks)
        out = out.transpose(0, 1).contiguous().view(*x.shape[:-1], out_features)
        return out if bias is None else out + bias
    flat = x.reshape(-1, features)
    out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
    return out.view(*x.shape[:-1], out_features)


# Module attributes that caches of eager calls set (the weight's block view, the packed copies of
# packed_for_decoding): traced code never reads them (compiled products find the packed copies at
# run time, through _PACKINGS_BY_WEIGHT), so a compiled step's fingerprint leaves them out
# (generation.utils.model_fingerprint).
EAGER_ONLY_CACHES = frozenset(("_blocks", "_packing"))


class PackedWeight(NamedTuple):
    """A copy of an (out, in) weight laid out for a batch's decode steps, and how to multiply by it."""

    copy: torch.Tensor
    out_features: int
    native: bool  # rows_product's layout and kernel; False: oneDNN's

    @classmethod
    def of(cls, matrices: list[torch.Tensor], rows: int) -> PackedWeight:
        """``matrices`` (out, in), stacked along their outputs, packed for products of ``rows`` rows:
        our kernel's layout where it runs, else oneDNN's."""
        out_features = sum(matrix.shape[0] for matrix in matrices)
        if rows_product.available():
            return cls(rows_product.pack(*matrices), out_features, True)
        return cls(pack_weight(torch.cat(matrices) if len(matrices) > 1 else matrices[0], rows), out_features, False)

    def product(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.native:
            return rows_product.product(x, self.copy, self.out_features, bias)
        return packed_linear(x, self.copy, bias)


def packed_product(module: nn.Module, x: torch.Tensor, source: torch.Tensor, matrix: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor | None:
    """Inside :func:`packed_for_decoding`, a batch's decode product ``x @ matrix.T + bias`` with a
    packed copy of ``matrix`` (out, in), made from the parameter ``source`` on first use and again
    if it changed; None where that does not apply (then the caller multiplies as usual)."""
    packing = module.__dict__.get("_packing")
    if packing is None or not (_decode_rows(x, matrix) > 1 and onednn_infers(x, matrix)):
        return None
    return _packed_copy(packing, source, matrix).product(x, bias)


def _packed_copy(packing: dict, source: torch.Tensor, matrix: torch.Tensor) -> PackedWeight:
    """The layer's packed copy of ``matrix``, made from its parameter ``source`` unless it is there and current."""
    cached = packing.get("weight")
    if cached is None or not unchanged(cached[0], [source]):
        packing["weight"] = cached = (stamp([source]), PackedWeight.of([matrix], packing["rows"]))
    return cached[1]


# The packings of packed_for_decoding blocks by the address of their layer's weight, with that
# parameter: compiled decode steps pass weights, not layers, to their products.
_PACKINGS_BY_WEIGHT: dict[int, tuple[dict, torch.Tensor]] = {}


def _decode_rows_linear_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A batch's decode product in a compiled graph, as one operation the graph calls as it is: with
    the packed copy of a :func:`packed_for_decoding` block where ``weight`` has one, else oneDNN's
    product (inductor's own kernels for these were 1.5x slower than oneDNN's unpacked ones)."""
    entry = _PACKINGS_BY_WEIGHT.get(weight.data_ptr())
    if entry is not None and entry[1].data_ptr() == weight.data_ptr() and entry[1].numel() == weight.numel():
        return _packed_copy(entry[0], entry[1], weight).product(x, bias)
    return inference_linear(x, weight, bias)


def _decode_linear_transposed_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`linear_transposed` of decode rows as one operation that compiled graphs call as it is."""
    return _linear_transposed(x, weight, bias)


# Decode products that compiled graphs call as opaque operations. Registered as plain CPU kernels
# rather than through torch.library.custom_op, whose wrappers cost 15 us a call against 5 (a batch's
# compiled step makes 211 such calls); neither has a backward: they run on rows without a gradient.
_OPS = torch.library.Library("torchformers", "FRAGMENT")
for _name, _impl in (("decode_linear_transposed", _decode_linear_transposed_impl),
                     ("decode_rows_linear", _decode_rows_linear_impl)):
    _OPS.define(f"{_name}(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
    _OPS.impl(_name, _impl, "CPU")
torch.library.register_fake("torchformers::decode_linear_transposed")(
    lambda x, weight, bias: x.new_empty(*x.shape[:-1], weight.shape[1]))
torch.library.register_fake("torchformers::decode_rows_linear")(
    lambda x, weight, bias: x.new_empty(*x.shape[:-1], weight.shape[0]))
_decode_linear_transposed = torch.ops.torchformers.decode_linear_transposed
_decode_rows_linear = torch.ops.torchformers.decode_rows_linear


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and initialization) whose forward uses :func:`linear`.

    A single sequence's decode step, the hottest call of generation, skips the general
    checks and reuses the weight's block view (kept until the weight changes). Inside
    :func:`packed_for_decoding`, a batch's decode steps multiply by a packed copy.
    """

    packs_for_decoding = True  # packed_for_decoding gives it a packed copy (see packed_product)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Linear's argument name
        weight = self.weight
        if torch.compiler.is_compiling():
            return linear(input, weight, self.bias)  # traceable: no cached views, no packed copies
        packed = packed_product(self, input, weight, weight, self.bias)
        if packed is not None:
            return packed
        if input.numel() == input.shape[-1] and input.dtype is torch.float32 and input.is_contiguous():
            blocks = self._weight_blocks(weight)
            if blocks is not None:
                features = input.shape[-1]
                out = torch.bmm(blocks, input.as_strided((BLOCKS, features, 1), (0, 1, features)))
                out = out.view(*input.shape[:-1], weight.shape[0])
                return out if self.bias is None else out + self.bias
        if onednn_trains(input, weight):
            return trainable_linear(input, weight, self.bias)
        return linear(input, weight, self.bias)

    def project_group(self, x: torch.Tensor, layers: tuple[nn.Module, ...]) -> tuple[torch.Tensor, ...] | None:
        """The outputs of ``layers`` (this layer first) as one packed product, or None where that does not apply.

        Inside :func:`packed_for_decoding`, when every layer is a packing :class:`Linear`, a
        batch's decode step multiplies once by the packed concatenation of their weights: one
        product of 960 or 3072 outputs instead of two or three small ones (the packed copy
        exists anyway, so concatenating costs no memory).
        """
        if torch.compiler.is_compiling():
            return None  # compiled steps multiply each layer on its own (see _decode_rows_linear_impl)
        packings = [layer.__dict__.get("_packing") for layer in layers]
        if None in packings or not (_decode_rows(x, self.weight) > 1 and onednn_infers(x, self.weight)):
            return None
        weights = [layer.weight for layer in layers]
        biases = [layer.bias for layer in layers]
        has_bias = [b is not None for b in biases]
        if any(has_bias) and not all(has_bias):
            return None
        sources = weights + biases if all(has_bias) else weights
        group = packings[0].get("group")
        if group is None or not unchanged(group[0], sources):
            bias = torch.cat(biases) if all(has_bias) else None
            packings[0]["group"] = group = (stamp(sources), PackedWeight.of(weights, packings[0]["rows"]),
                                            bias)
        out = group[1].product(x, group[2])
        return out.split([w.shape[0] for w in weights], dim=-1)

    def _weight_blocks(self, weight: torch.Tensor) -> torch.Tensor | None:
        """``weight`` as (BLOCKS, out/BLOCKS, in) for the batched route, or None where it does not apply."""
        cached = self.__dict__.get("_blocks")
        if cached is not None and cached[0] is weight and cached[1] == weight.data_ptr():
            return cached[2]
        usable = (_BATCHED_ROUTE and weight.is_cpu and weight.dtype == torch.float32 and weight.is_contiguous()
                  and weight.shape[0] % BLOCKS == 0)
        blocks = weight.view(BLOCKS, weight.shape[0] // BLOCKS, weight.shape[1]) if usable else None
        self.__dict__["_blocks"] = (weight, weight.data_ptr(), blocks)
        return blocks


def stamp(tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, int, int]]:
    """What a derived copy (a packed or concatenated weight) was made from: each tensor, its
    version (bumped by in-place changes) and its storage (replaced by an assignment to ``.data``)."""
    return [(tensor, _version(tensor), tensor.data_ptr()) for tensor in tensors]


def unchanged(made_from: list[tuple[torch.Tensor, int, int]], tensors: list[torch.Tensor]) -> bool:
    """Whether ``tensors`` are still what :func:`stamp` recorded: the same objects, versions and storage."""
    return len(made_from) == len(tensors) and all(
        old is new and version == _version(new) and address == new.data_ptr()
        for (old, version, address), new in zip(made_from, tensors, strict=True)
    )


def _version(tensor: torch.Tensor) -> int:
    # Tensors made under inference mode keep no version; their object and storage still tell a replacement.
    return -1 if tensor.is_inference() else tensor._version


def project(x: torch.Tensor, layers: tuple[nn.Module, ...]) -> tuple[torch.Tensor, ...]:
    """``layer(x)`` for each of ``layers`` (projections of the same input, such as q, k and v).

    When the first layer has a ``project_group(x, layers)`` method, it may compute them all
    as one product (see :meth:`Linear.project_group`, and int4 layers'); it returns None where
    it cannot, and each layer is called as usual.
    """
    project_group = getattr(layers[0], "project_group", None)
    outputs = project_group(x, layers) if project_group is not None else None
    return outputs if outputs is not None else tuple(layer(x) for layer in layers)


@contextmanager
def packed_for_decoding(model: nn.Module, rows: int) -> Iterator[None]:
    """Within this block, decode steps of ``rows`` sequences (2 to ``MAX_DECODE_ROWS``, CPU
    float32) multiply every :class:`Linear` (and every layer with ``packs_for_decoding``, such as
    GPT-2's Conv1D) by a packed copy of its weight, through :func:`packed_product`: our
    kernel's layout (``rows_product``, AVX-512 CPUs; the first use on a machine builds it, about
    10 s), else oneDNN's.

    Each copy is made on the layer's first such step and dropped on leaving the block, so
    the weights' memory doubles only while the block runs; packing costs about as much as
    several decode steps save, which is why generation enters the
    block only when at least ``PACK_WHEN_STEPS_LEFT`` decode steps lie ahead. Results equal
    ``F.linear``'s to float32 rounding. Compiled decode steps find the copies too (by the
    address of each weight, see ``_decode_rows_linear_impl``).
    """
    layers = [module for module in model.modules() if getattr(module, "packs_for_decoding", False)]
    usable = 1 < rows <= MAX_DECODE_ROWS and (rows_product.available() or CAN_PACK_WEIGHTS)
    registered = {}
    if usable:
        for layer in layers:
            layer.__dict__["_packing"] = packing = {"rows": rows}
            registered[layer.weight.data_ptr()] = (packing, layer.weight)
        _PACKINGS_BY_WEIGHT.update(registered)
    try:
        yield
    finally:
        for layer in layers if usable else ():
            layer.__dict__.pop("_packing", None)
        for address, entry in registered.items():
            if _PACKINGS_BY_WEIGHT.get(address) is entry:
                del _PACKINGS_BY_WEIGHT[address]
