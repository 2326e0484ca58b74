"""What every analyzer sees and the helpers they share.

An analyzer is a pure function ``(AnalysisInput) -> list[Finding]``: deterministic, no I/O. The
facts that need the performance model (memory plan, cheaper GPU alternatives) are computed by the
caller (``servewise.tools.analyzing``) and handed in, so analyzers stay testable on hand-built
snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from servewise.domain import (
    POD_PREFIX,
    DeploymentTelemetry,
    Evidence,
    Finding,
    HardwareSpec,
    InferenceDeployment,
    MemoryPlan,
    RolloutStatus,
    ServingConfig,
    Severity,
)


@dataclass(frozen=True)
class GpuAlternative:
    """The cheapest predicted way to serve the observed load on another GPU class."""

    gpu: str
    tensor_parallel: int
    replicas: int
    cost_per_hour: float


@dataclass(frozen=True)
class ModelPick:
    """The optimizer's model-only pick for the observed load (telemetry-calibrated, not benchmarked)."""

    config: ServingConfig
    pool: str
    cost_per_hour: float


@dataclass(frozen=True)
class AnalysisInput:
    deployment: InferenceDeployment
    telemetry: DeploymentTelemetry | None
    window: str = "15m"
    rollout: RolloutStatus | None = None
    hardware: HardwareSpec | None = None
    memory: MemoryPlan | None = None
    memory_half_tp: MemoryPlan | None = None
    alternatives: tuple[GpuAlternative, ...] = ()
    current_cost_per_hour: float | None = None
    model_pick: ModelPick | None = None
    # the model's prefill time of one mean prompt on one replica with nothing else running (ms)
    prefill_ms: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def config(self) -> ServingConfig:
        return self.deployment.config

    def signal(self, name: str) -> float | None:
        return None if self.telemetry is None else self.telemetry.get(name)

    def evidence(self, name: str, threshold: float | None = None) -> Evidence:
        """Evidence for one signal, with the query and window it came from."""
        value = self.signal(name)
        query, window = "", self.window
        if self.telemetry is not None and name in self.telemetry.evidence:
            src = self.telemetry.evidence[name]
            query, window = src.query, src.window or self.window
        return Evidence(signal=name, value=value, threshold=threshold, window=window, query=query)

    def pod_signals(self) -> dict[str, dict[str, float]]:
        """``{pod: {signal: value}}`` from ``pod/<pod>/<signal>`` keys; empty when absent."""
        out: dict[str, dict[str, float]] = {}
        if self.telemetry is None:
            return out
        for key, value in self.telemetry.signals.items():
            if key.startswith(POD_PREFIX):
                pod, _, sig = key[len(POD_PREFIX) :].rpartition("/")
                if pod and sig:
                    out.setdefault(pod, {})[sig] = value
        return out

    def replicas(self) -> int:
        if self.telemetry is not None and self.telemetry.replicas:
            return self.telemetry.replicas
        return max(self.deployment.config.replicas, 1)

    def finding(
        self,
        kind: str,
        severity: Severity,
        summary: str,
        evidence: list[Evidence],
        knob: str | None,
    ) -> Finding:
        return Finding(
            ref=self.deployment.ref,
            kind=kind,
            severity=severity,
            summary=summary,
            evidence=evidence,
            suggested_knob=knob,
        )


Analyzer = Callable[[AnalysisInput], list[Finding]]


def mean_input_len(inp: AnalysisInput) -> float | None:
    """Mean prompt length: observed (prompt tokens / requests) or the declared workload."""
    rate, prompt = inp.signal("request_rate_per_s"), inp.signal("prompt_tokens_per_s")
    if rate and prompt is not None and rate > 0:
        return prompt / rate
    wl = inp.deployment.workload
    return wl.input_len.mean if wl is not None else None


def mean_output_len(inp: AnalysisInput) -> float | None:
    rate, gen = inp.signal("request_rate_per_s"), inp.signal("generation_tokens_per_s")
    if rate and gen is not None and rate > 0:
        return gen / rate
    wl = inp.deployment.workload
    return wl.output_len.mean if wl is not None else None
