"""The weight-only quantization settings: how many bits, how many weights share a scale, which
layers stay in floating point, and whether products quantize their input rows to int8.

``from_pretrained(..., quantization_config=...)`` and :func:`~torchformers.quantization.quantize`
take a :class:`WeightOnlyConfig` or the dict it writes (``config.json`` records it under
``quantization_config`` with ``"quant_method": "torchformers"``). The reference library's
quantizers (bitsandbytes, GPTQ, AWQ...) store other formats; their configs are refused with an
explanation rather than half-understood.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError, UnsupportedArgumentError

QUANT_METHOD = "torchformers"
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the int4 kernels accept
ACTIVATIONS = ("float", "int8")


def check_activations_value(activations: object, where: str) -> None:
    """Refuse an ``activations`` setting that is neither "float" nor "int8", saying where it came from."""
    if activations not in ACTIVATIONS:
        raise ConfigError(f"{where}: activations must be one of {list(ACTIVATIONS)}, got {activations!r}.")


@dataclass
class WeightOnlyConfig:
    """Quantize linear layers' weights to int8 or int4; activations stay in floating point unless
    ``activations="int8"``.

    Args:
        bits: 8 (symmetric codes in [-128, 127]) or 4 (asymmetric codes in [0, 15] with a
            zero point per group).
        group_size: how many consecutive input features share one scale. ``None`` means one
            scale per output row for int8 (the fast per-channel kernel) and, for int4, the
            largest of 128, 64 and 32 that divides every quantized layer's input size. int4
            takes 32, 64, 128 or 256; int8 takes any divisor of the input size.
        modules_to_not_convert: layers kept in floating point, by name or dotted suffix
            (``"lm_head"``). ``None`` keeps the output embedding and task heads unquantized
            (as the reference's quantizers do); ``[]`` quantizes every linear layer.
        bits_by_module: layers quantized with other bits than ``bits``, ``{name or dotted
            suffix: 8 or 4}`` (a GGUF file loaded with ``dequantize=False`` may keep its output
            layer in int8 and the rest in int4). They share ``group_size``.
        quantized_embeddings: input embeddings (by name) kept as int8/int4 codes
            (:class:`~torchformers.quantization.embedding.QuantizedEmbedding`), with
            ``bits_for(name)`` bits and ``group_size``. A GGUF file loaded with ``dequantize=False``
            keeps its token embedding so when the file stores it as Q8_0, Q4_0 or Q4_1.
        activations: ``"float"`` (the default): products take the input as it is (the CPU
            kernels round it to bfloat16). ``"int8"``: each product quantizes its input rows to
            int8 in blocks of 32 features (a scale per block: its largest magnitude over 127) and
            multiplies integer codes, as llama.cpp does for its quantized types; on CPUs with
            AVX-512 VNNI a C++ kernel compiled on first use runs it (see ``native.py``; decoding SmolLM2's Q4_1
            file ran 1.1-1.2x faster, compiled), elsewhere torch operations with the same arithmetic.
            The quantized layers' input and group sizes must then be multiples of 32. Only the
            products change: the weights and the saved files are the same.
    """

    bits: int = 8
    group_size: int | None = None
    modules_to_not_convert: list[str] | None = field(default=None)
    bits_by_module: dict[str, int] | None = field(default=None)
    quantized_embeddings: list[str] | None = field(default=None)
    activations: str = "float"

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ConfigError(f"WeightOnlyConfig: bits must be 8 or 4, got {self.bits!r}.")
        check_activations_value(self.activations, "WeightOnlyConfig")
        if self.bits_by_module is not None:
            if not isinstance(self.bits_by_module, dict) or not all(
                isinstance(name, str) and bits in (4, 8) for name, bits in self.bits_by_module.items()
            ):
                raise ConfigError("WeightOnlyConfig: bits_by_module must map module names to 8 or 4, got "
                                  f"{self.bits_by_module!r}.")
            self.bits_by_module = dict(self.bits_by_module)
        if self.group_size is not None:
            if not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or self.group_size <= 0:
                raise ConfigError(f"WeightOnlyConfig: group_size must be a positive integer, got {self.group_size!r}.")
            uses_int4 = self.bits == 4 or 4 in (self.bits_by_module or {}).values()
            if uses_int4 and self.group_size not in INT4_GROUP_SIZES:
                raise ConfigError(
                    f"WeightOnlyConfig: int4 group_size must be one of {list(INT4_GROUP_SIZES)}, got {self.group_size}."
                )
        if self.modules_to_not_convert is not None:
            if isinstance(self.modules_to_not_convert, str) or not all(
                isinstance(name, str) for name in self.modules_to_not_convert
            ):
                raise ConfigError("WeightOnlyConfig: modules_to_not_convert must be a list of module names.")
            self.modules_to_not_convert = list(self.modules_to_not_convert)
        if self.quantized_embeddings is not None:
            if isinstance(self.quantized_embeddings, str) or not all(
                isinstance(name, str) for name in self.quantized_embeddings
            ):
                raise ConfigError("WeightOnlyConfig: quantized_embeddings must be a list of module names.")
            self.quantized_embeddings = list(self.quantized_embeddings)

    @property
    def quant_method(self) -> str:
        return QUANT_METHOD

    def to_dict(self) -> dict[str, Any]:
        """The dict ``config.json`` stores under ``quantization_config``."""
        values = {"quant_method": QUANT_METHOD, "bits": self.bits, "group_size": self.group_size,
                  "modules_to_not_convert": self.modules_to_not_convert}
        if self.bits_by_module:
            values["bits_by_module"] = self.bits_by_module
        if self.quantized_embeddings:
            values["quantized_embeddings"] = self.quantized_embeddings
        if self.activations != "float":
            values["activations"] = self.activations
        return values

    def bits_for(self, name: str) -> int:
        """The bits of layer ``name``."""
        for entry, bits in (self.bits_by_module or {}).items():
            if name == entry or name.endswith("." + entry):
                return bits
        return self.bits

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WeightOnlyConfig:
        values = dict(values)
        method = values.pop("quant_method", QUANT_METHOD)
        if method != QUANT_METHOD:
            raise UnsupportedArgumentError(
                f"quantization_config has quant_method={method!r}: torchformers runs its own weight-only int8/int4 "
                f"format only (quant_method {QUANT_METHOD!r}). Load the full-precision checkpoint and pass "
                "quantization_config=WeightOnlyConfig(bits=8) or bits=4 (torchformers.quantization) instead."
            )
        known = {"bits", "group_size", "modules_to_not_convert", "bits_by_module", "quantized_embeddings", "activations"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"quantization_config has keys {unknown} that WeightOnlyConfig does not know; it takes "
                f"{', '.join(sorted(known))}."
            )
        return cls(**values)

    def with_group_size(self, group_size: int | None) -> WeightOnlyConfig:
        return replace(self, group_size=group_size)


def as_weight_only_config(value: WeightOnlyConfig | dict[str, Any] | Any) -> WeightOnlyConfig:
    """A :class:`WeightOnlyConfig` from itself or its dict; anything else is refused with what to pass."""
    if isinstance(value, WeightOnlyConfig):
        return value
    if isinstance(value, dict):
        return WeightOnlyConfig.from_dict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        # Another library's config object (BitsAndBytesConfig...): its quant_method names it in the error.
        return WeightOnlyConfig.from_dict(to_dict())
    raise UnsupportedArgumentError(
        f"quantization_config must be a WeightOnlyConfig or a dict such as {{'bits': 4, 'group_size': 64}}, "
        f"got {type(value).__name__}."
    )
