"""Transformer model architectures (catalog entries and searched shapes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class QualityScore(BaseModel):
    """A published eval score for one variant, so 'good enough' can be decided."""

    model_config = ConfigDict(frozen=True)

    quantization: str = Field(description="weights label: bf16, fp8, int8, awq, gptq, int4 ...")
    score: float = Field(description="benchmark score on a 0-100 scale")
    benchmark: str = "mmlu"
    source: str = ""


class ModelSpec(BaseModel):
    """A decoder-only transformer, dense or MoE (Mixtral-style, DeepSeek-style with MLA)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    name: str
    family: str = ""
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="dense FFN width (or per-expert width for MoE)")
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0)
    num_experts: int = Field(default=0, ge=0)
    experts_per_token: int = Field(default=0, ge=0)
    num_shared_experts: int = Field(default=0, ge=0)
    moe_intermediate_size: int = Field(default=0, ge=0)
    first_dense_layers: int = Field(default=0, ge=0, description="leading layers with a dense FFN")
    kv_lora_rank: int = Field(default=0, ge=0, description="MLA latent size (0 = standard attention)")
    rope_head_dim: int = Field(default=0, ge=0, description="MLA decoupled RoPE key dim")
    tie_embeddings: bool = False
    params_b: float | None = Field(default=None, description="published parameter count, billions")
    quality: list[QualityScore] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model {self.id}: num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.num_experts and not (0 < self.experts_per_token <= self.num_experts):
            raise ValueError(f"model {self.id}: experts_per_token must be in 1..num_experts")
        return self

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def quality_for(self, label: str) -> float | None:
        """Score for a weights label, falling back to the 16-bit score when none is published."""
        by_label = {q.quantization: q.score for q in self.quality}
        for key in (label, "bf16", "fp16"):
            if key in by_label:
                return by_label[key]
        return None
