"""Placement analyzers: tensor-parallel overhead and the wrong GPU class for the load."""

from __future__ import annotations

from servewise.domain import Evidence, Finding, Severity
from servewise.tools.analyzers.base import AnalysisInput

SLOW_FABRIC_GBS = 100.0  # per-GPU interconnect below this (PCIe) makes all-reduces expensive
CHEAPER = 0.75  # an alternative at or below this fraction of the current $/h is worth a look


def tp_overhead(inp: AnalysisInput) -> list[Finding]:
    """TP > 1 where the model fits at half the TP with room for the observed batch."""
    tp = inp.config.tensor_parallel
    half = inp.memory_half_tp
    if tp <= 1 or half is None or not half.fits:
        return []
    running = inp.signal("requests_running")
    need = max(16.0, (running or 0.0) / inp.replicas())
    if half.max_concurrent_seqs < need:
        return []
    slow = inp.hardware is not None and inp.hardware.interconnect_gbs < SLOW_FABRIC_GBS
    fabric = (
        f"{inp.hardware.interconnect} ({inp.hardware.interconnect_gbs:.0f} GB/s)" if inp.hardware else "?"
    )
    return [
        inp.finding(
            "tp_overhead",
            Severity.WARNING if slow else Severity.INFO,
            f"TP={tp} over {fabric}: the model fits at TP={tp // 2} with room for {half.max_concurrent_seqs} "
            f"sequences; two TP={tp // 2} replicas avoid the all-reduce cost per layer.",
            [
                Evidence(
                    signal="tensor_parallel",
                    value=float(tp),
                    threshold=float(tp // 2),
                    window=inp.window,
                    query="config",
                ),
                Evidence(
                    signal="max_concurrent_seqs_at_half_tp",
                    value=float(half.max_concurrent_seqs),
                    threshold=need,
                    window=inp.window,
                    query="perf.memory.plan_memory",
                ),
            ],
            "tensor_parallel",
        )
    ]


def wrong_gpu_class(inp: AnalysisInput) -> list[Finding]:
    """Another GPU class is predicted to serve the observed load for much less."""
    cost = inp.current_cost_per_hour
    if cost is None or cost <= 0 or not inp.alternatives:
        return []
    others = [a for a in inp.alternatives if a.gpu != inp.config.gpu]
    if not others:
        return []
    # Compare with the best sizing on the current class, so over-provisioning is not blamed on the GPU.
    same = [a.cost_per_hour for a in inp.alternatives if a.gpu == inp.config.gpu]
    current, cost = cost, min([cost, *same])
    best = min(others, key=lambda a: a.cost_per_hour)
    if best.cost_per_hour > CHEAPER * cost:
        return []
    load = "observed load" if inp.telemetry is not None else "declared load"  # no telemetry: the manifest's
    on_class = (
        f"{inp.config.gpu} costs ${cost:.2f}/h"
        if cost >= current
        else f"{inp.config.gpu} would cost ${cost:.2f}/h sized for the {load} (${current:.2f}/h now)"
    )
    return [
        inp.finding(
            "wrong_gpu_class",
            Severity.WARNING,
            f"{on_class}; {best.replicas}x {best.gpu} (TP={best.tensor_parallel}) is "
            f"predicted to serve the {load} for ${best.cost_per_hour:.2f}/h.",
            [
                Evidence(
                    signal="cost_per_hour",
                    value=round(best.cost_per_hour, 3),
                    threshold=round(CHEAPER * cost, 3),
                    window=inp.window,
                    query=f"perf.analytical.predict_load(gpu={best.gpu})",
                )
            ],
            "gpu",
        )
    ]


# Knobs in the order a change is named by (the first one that differs).
_KNOBS = (
    "model",
    "quantization.weights",
    "gpu",
    "tensor_parallel",
    "quantization.kv_cache",
    "max_num_seqs",
    "max_num_batched_tokens",
    "replicas",
)


def _knob_value(config: object, knob: str) -> object:
    for part in knob.split("."):
        config = getattr(config, part)
    return config


def cheaper_config(inp: AnalysisInput) -> list[Finding]:
    """The telemetry-calibrated model predicts a much cheaper configuration meeting the SLO."""
    pick, cost = inp.model_pick, inp.current_cost_per_hour
    if pick is None or cost is None or cost <= 0 or pick.cost_per_hour > CHEAPER * cost:
        return []
    changed = [k for k in _KNOBS if _knob_value(inp.config, k) != _knob_value(pick.config, k)]
    if not changed:
        return []
    what = ", ".join(f"{k}: {_knob_value(inp.config, k)} -> {_knob_value(pick.config, k)}" for k in changed)
    return [
        inp.finding(
            "cheaper_config",
            Severity.WARNING,
            f"predicted to meet the SLO at peak load for ${pick.cost_per_hour:.2f}/h instead of ${cost:.2f}/h "
            f"with {what} (model only: `servewise optimize` benchmarks it before proposing).",
            [
                Evidence(
                    signal="cost_per_hour",
                    value=round(pick.cost_per_hour, 3),
                    threshold=round(CHEAPER * cost, 3),
                    window=inp.window,
                    query="optimizer.search(calibrated on telemetry)",
                )
            ],
            changed[0],
        )
    ]
