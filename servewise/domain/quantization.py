"""Numeric formats for weights and the KV cache."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator


class Dtype(StrEnum):
    """Storage formats, named as in the measurements CSV and the catalog."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"
    FP4 = "fp4"

    @property
    def bytes(self) -> float:
        return _BYTES[self]

    @classmethod
    def parse(cls, text: str) -> Dtype:
        """Accept engine spellings (``auto``, ``float16``, ``fp8_e4m3``, ``awq``, ``w4a16`` ...)."""
        key = text.strip().lower().replace("-", "_")
        if key in _ALIASES:
            return _ALIASES[key]
        try:
            return cls(key)
        except ValueError:
            raise ValueError(f"unknown dtype {text!r}; expected one of {[d.value for d in cls]}") from None


_BYTES = {
    Dtype.BF16: 2.0,
    Dtype.FP16: 2.0,
    Dtype.FP8: 1.0,
    Dtype.INT8: 1.0,
    Dtype.INT4: 0.5,
    Dtype.FP4: 0.5,
}

# Weight-quantization methods that store int4 weights (method is kept on Quantization.method).
INT4_METHODS = {"awq", "gptq", "w4a16", "awq_marlin", "gptq_marlin", "marlin", "bitsandbytes"}

_ALIASES = {
    "auto": Dtype.BF16,
    "bfloat16": Dtype.BF16,
    "float16": Dtype.FP16,
    "half": Dtype.FP16,
    "fp8_e4m3": Dtype.FP8,
    "fp8_e5m2": Dtype.FP8,
    "float8": Dtype.FP8,
    "w8a8": Dtype.INT8,
    "smoothquant": Dtype.INT8,
    "nvfp4": Dtype.FP4,
    "mxfp4": Dtype.FP4,
    **{m: Dtype.INT4 for m in INT4_METHODS},
}


class Quantization(BaseModel):
    """Weight and KV-cache formats of a serving configuration.

    ``method`` keeps the quantization scheme (``awq``, ``gptq``...) when the dtype alone loses it.
    Activations follow the weights for fp8/int8/fp4 (W8A8-style kernels) and stay 16-bit for int4
    weight-only methods (W4A16), which is what the performance model assumes.
    """

    model_config = ConfigDict(frozen=True)

    weights: Dtype = Dtype.BF16
    kv_cache: Dtype = Dtype.BF16
    method: str | None = None

    @field_validator("weights", "kv_cache", mode="before")
    @classmethod
    def _parse_dtype(cls, value: object) -> object:
        return Dtype.parse(value) if isinstance(value, str) else value

    @property
    def compute_dtype(self) -> Dtype:
        """The dtype the matrix multiplies run in."""
        if self.weights in (Dtype.FP8, Dtype.INT8, Dtype.FP4):
            return self.weights
        return Dtype.BF16

    @property
    def label(self) -> str:
        w = self.method or self.weights.value
        return w if self.kv_cache == Dtype.BF16 else f"{w}+kv-{self.kv_cache.value}"
