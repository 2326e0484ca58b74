"""What analysis finds and what the optimizer proposes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from servewise.domain.config import ServingConfig
from servewise.domain.fleet import DeploymentRef


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Evidence(BaseModel):
    signal: str
    value: float | None
    threshold: float | None = None
    window: str = ""
    query: str = ""


class Finding(BaseModel):
    ref: DeploymentRef
    kind: str = Field(description="analyzer id, e.g. 'kv_saturation'")
    severity: Severity
    summary: str
    evidence: list[Evidence] = Field(default_factory=list)
    suggested_knob: str | None = None


class Impact(BaseModel):
    """Predicted (and, once benchmarked, measured) effect of a change."""

    cost_per_hour_before: float
    cost_per_hour_after: float
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    throughput_tok_s: float | None = None
    uncertainty_pct: float = Field(default=0.0, ge=0, description="± band on latency predictions")
    validated_by: str = Field(default="model", description="'model', 'benchmark:N' ...")


class Proposal(BaseModel):
    id: str
    ref: DeploymentRef
    current: ServingConfig
    proposed: ServingConfig
    summary: str
    predicted: Impact
    measured: Impact | None = None
    findings: list[str] = Field(default_factory=list, description="Finding kinds this addresses")
    risk: str = "low"
    manifest_patch: list[dict[str, object]] = Field(default_factory=list)
    rollback: str = ""
