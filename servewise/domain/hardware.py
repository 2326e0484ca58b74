"""Accelerator and interconnect specifications (catalog entries and hypothetical chips)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servewise.domain.quantization import Dtype


class HardwareSpec(BaseModel):
    """One accelerator as the performance model sees it.

    Throughput numbers are *dense* (no structured sparsity) peak TFLOP/s per dtype, from vendor data
    sheets. ``interconnect_gbs`` is the per-GPU unidirectional bandwidth of the scale-up fabric
    (NVLink / Infinity Fabric) or PCIe when there is none.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    vendor: str = "nvidia"
    memory_gb: float = Field(
        gt=0, description="HBM/GDDR capacity per GPU as marketed (80 for an 80 GB H100), treated as GiB"
    )
    memory_bandwidth_gbs: float = Field(gt=0, description="Peak memory bandwidth, GB/s")
    tflops: dict[Dtype, float] = Field(description="Dense peak TFLOP/s per compute dtype (each > 0)")
    interconnect_gbs: float = Field(gt=0, description="Per-GPU unidirectional scale-up bandwidth, GB/s")
    interconnect: str = "pcie"
    max_gpus_per_node: int = Field(default=8, ge=1)
    price_per_gpu_hour: float = Field(ge=0, description="Typical on-demand $ per GPU-hour")
    edge: bool = False
    hypothetical: bool = False
    aliases: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_bf16(self) -> HardwareSpec:
        if Dtype.BF16 not in self.tflops and Dtype.FP16 not in self.tflops:
            raise ValueError(f"hardware {self.id}: tflops must include bf16 or fp16")
        bad = {k.value: v for k, v in self.tflops.items() if not v > 0}
        if bad:
            raise ValueError(f"hardware {self.id}: tflops must be > 0, got {bad}")
        return self

    def peak_tflops(self, dtype: Dtype) -> float:
        """Peak for ``dtype``; formats without native support run at the 16-bit rate."""
        if dtype in self.tflops:
            return self.tflops[dtype]
        if dtype == Dtype.FP4 and Dtype.FP8 in self.tflops:
            return self.tflops[Dtype.FP8]
        return self.tflops.get(Dtype.BF16) or self.tflops[Dtype.FP16]

    def supports(self, dtype: Dtype) -> bool:
        return dtype in self.tflops

    def scaled(self, new_id: str, **factors: float) -> HardwareSpec:
        """A hypothetical variant: ``scaled('h100-2xbw', memory_bandwidth_gbs=2.0)``."""
        data = self.model_dump()
        for key, factor in factors.items():
            if key == "tflops":
                data["tflops"] = {k: v * factor for k, v in self.tflops.items()}
            else:
                data[key] = getattr(self, key) * factor
        data.update(id=new_id, name=f"{self.name} ({new_id})", hypothetical=True, aliases=[])
        return HardwareSpec.model_validate(data)
