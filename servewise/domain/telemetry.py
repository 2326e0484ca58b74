"""One snapshot of fleet telemetry, the same shape whichever source produced it."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field

from servewise.domain.fleet import DeploymentRef

# Canonical signal names (docs/telemetry.md, `servewise telemetry snapshot --json`).
SIGNALS: tuple[str, ...] = (
    "requests_running",
    "requests_waiting",
    "requests_waiting_peak",
    "kv_cache_usage",
    "request_rate_per_s",
    "request_rate_peak_per_s",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "preemptions_per_s",
    "prefix_cache_hit_rate",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_p99_ms",
    "prompt_len_p99",
    "output_len_p99",
    "gpu_utilization",
    "gpu_memory_used_bytes",
    "replicas_available",
)

# Per-pod values travel in ``DeploymentTelemetry.signals`` as ``pod/<pod-name>/<signal>``.
POD_PREFIX = "pod/"


class SignalEvidence(BaseModel):
    """Where a value came from: the PromQL expression or the twin query."""

    query: str
    window: str = ""


class DeploymentTelemetry(BaseModel):
    deployment: str
    namespace: str = "default"
    engine: str | None = Field(default=None, description="whose metric names the signals were read under")
    replicas: int | None = None
    signals: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    evidence: dict[str, SignalEvidence] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def get(self, name: str) -> float | None:
        return self.signals.get(name)


class TelemetrySnapshot(BaseModel):
    source: str = Field(description="'sim:SCENARIO' or the Prometheus URL")
    taken_at: datetime
    window: str = "15m"
    deployments: list[DeploymentTelemetry] = Field(default_factory=list)
    queries: int = Field(default=0, description="number of backend queries used")
    notes: list[str] = Field(default_factory=list, description="what the whole snapshot could not read")

    def for_deployment(self, name: str, namespace: str | None = None) -> DeploymentTelemetry | None:
        for d in self.deployments:
            if d.deployment == name and (namespace is None or d.namespace == namespace):
                return d
        return None

    def for_workload(self, ref: DeploymentRef) -> DeploymentTelemetry | None:
        """The telemetry of a workload: under its own name, or for a KServe InferenceService under
        the Deployment KServe runs its predictor in (``<name>-predictor`` in RawDeployment mode,
        ``<name>-predictor-00001-deployment`` for a Knative revision, ``-predictor-default`` for one
        created before KServe 0.11; the busiest when several revisions serve), renamed to the
        InferenceService."""
        own = self.for_deployment(ref.name, ref.namespace)
        if own is not None or ref.kind != "InferenceService":
            return own
        pattern = re.compile(rf"{re.escape(ref.name)}-predictor(-default)?(-[0-9]+-deployment)?")
        found = [
            d for d in self.deployments if d.namespace == ref.namespace and pattern.fullmatch(d.deployment)
        ]
        if not found:
            return None
        best = max(found, key=lambda d: (d.signals.get("request_rate_per_s") or 0.0, d.deployment))
        note = f"read from {best.deployment}, the Deployment KServe runs {ref.name}'s predictor in"
        if len(found) > 1:
            names = ", ".join(sorted(d.deployment for d in found))
            note += f" (the busiest of {len(found)}: {names}; the others' traffic is not counted)"
        return best.model_copy(update={"deployment": ref.name, "notes": [*best.notes, note]}, deep=True)
