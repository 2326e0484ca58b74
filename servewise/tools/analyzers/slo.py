"""SLO violations: observed p99s (and p50 TTFT) against the deployment's objectives."""

from __future__ import annotations

from servewise.domain import Finding, Severity
from servewise.domain.histograms import SIGNAL_BUCKETS_MS
from servewise.tools.analyzers.base import AnalysisInput

# SLO field -> (telemetry signal, knob that usually moves it)
_PAIRS = {
    "ttft_p50_ms": ("ttft_p50_ms", "max_num_batched_tokens"),
    "ttft_p99_ms": ("ttft_p99_ms", "replicas"),
    "tpot_p99_ms": ("itl_p99_ms", "max_num_seqs"),
    "e2e_p99_ms": ("e2e_p99_ms", "replicas"),
}
CRITICAL_OVER = 1.5  # measured / objective above which a violation is critical


def _beyond_last_bucket(engine: str, signal: str, value: float) -> bool:
    """Whether ``value`` is the last finite bucket bound of the engine's histogram for ``signal``:
    ``histogram_quantile`` answers that bound when the quantile lies beyond it (the +Inf bucket), so
    the true value is only known to be at least that."""
    bounds = SIGNAL_BUCKETS_MS.get(engine, {}).get(signal)
    return bounds is not None and value >= max(bounds)


def slo_violations(inp: AnalysisInput) -> list[Finding]:
    slo = inp.deployment.slo
    if slo is None:
        return []
    out = []
    for field, (signal, knob) in _PAIRS.items():
        limit = getattr(slo, field)
        value = inp.signal(signal)
        if limit is None or value is None or value <= limit:
            continue
        ratio = value / limit
        text = (
            f"{signal} is beyond {value:.1f}, the histogram's last finite bucket, against an objective of "
            f"{limit:.1f} (at least {ratio:.2f}x)."
            if _beyond_last_bucket(inp.config.engine.value, signal, value)
            else f"{signal} is {value:.1f} against an objective of {limit:.1f} ({ratio:.2f}x)."
        )
        out.append(
            inp.finding(
                "slo_violation",
                Severity.CRITICAL if ratio >= CRITICAL_OVER else Severity.WARNING,
                text,
                [inp.evidence(signal, limit)],
                knob,
            )
        )
    return out
