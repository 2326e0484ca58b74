"""Deterministic bottleneck analyzers over telemetry, config and rollout status."""

from __future__ import annotations

from servewise.domain import Finding
from servewise.tools.analyzers.base import AnalysisInput, Analyzer, GpuAlternative, ModelPick
from servewise.tools.analyzers.health import coverage_notes, pod_failures, replica_imbalance
from servewise.tools.analyzers.load import (
    decode_memory_bound,
    kv_saturation,
    over_provisioned,
    prefill_bound,
    queueing,
    under_batched,
)
from servewise.tools.analyzers.placement import cheaper_config, tp_overhead, wrong_gpu_class
from servewise.tools.analyzers.slo import slo_violations

ANALYZERS: dict[str, Analyzer] = {
    "pod_failures": pod_failures,
    "slo_violations": slo_violations,
    "kv_saturation": kv_saturation,
    "queueing": queueing,
    "prefill_bound": prefill_bound,
    "decode_memory_bound": decode_memory_bound,
    "under_batched": under_batched,
    "over_provisioned": over_provisioned,
    "tp_overhead": tp_overhead,
    "replica_imbalance": replica_imbalance,
    "wrong_gpu_class": wrong_gpu_class,
    "cheaper_config": cheaper_config,
}

_ORDER = {"critical": 0, "warning": 1, "info": 2}


def run_analyzers(inp: AnalysisInput) -> list[Finding]:
    """Every analyzer on one deployment, most severe first (stable within a severity)."""
    found = [f for analyzer in ANALYZERS.values() for f in analyzer(inp)]
    return sorted(found, key=lambda f: _ORDER[f.severity.value])


__all__ = ["ANALYZERS", "AnalysisInput", "GpuAlternative", "ModelPick", "coverage_notes", "run_analyzers"]
