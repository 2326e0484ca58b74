"""What an inference deployment runs: the knobs servewise reads and changes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servewise.domain.quantization import Quantization


class Engine(StrEnum):
    VLLM = "vllm"
    TGI = "tgi"
    SGLANG = "sglang"
    TRTLLM = "trtllm"


class ServingConfig(BaseModel):
    """One replica's engine configuration plus the replica count.

    Ids are catalog ids (``llama-3.1-70b``, ``h100-sxm``); defaults follow vLLM's.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    gpu: str
    quantization: Quantization = Field(default_factory=Quantization)
    engine: Engine = Engine.VLLM
    tensor_parallel: int = Field(default=1, ge=1, le=64)
    pipeline_parallel: int = Field(default=1, ge=1, le=64)
    max_num_seqs: int = Field(default=256, ge=1, le=65536)
    max_num_batched_tokens: int = Field(default=8192, ge=16, le=1 << 21)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0.05, le=1.0)
    max_model_len: int | None = Field(default=None, ge=16)
    replicas: int = Field(default=1, ge=0, le=10000)

    @model_validator(mode="after")
    def _check(self) -> ServingConfig:
        if self.tensor_parallel & (self.tensor_parallel - 1):
            raise ValueError(f"tensor_parallel must be a power of two, got {self.tensor_parallel}")
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_replica * self.replicas

    def with_changes(self, **changes: object) -> ServingConfig:
        """A validated copy with some knobs changed."""
        return ServingConfig.model_validate({**self.model_dump(), **changes})
