"""SLO violations: observed p99s (and p50 TTFT) against the deployment's objectives."""

from __future__ import annotations

from servewise.domain import Finding, Severity
from servewise.domain.histograms import beyond_last_bucket, bucket_holding
from servewise.tools.analyzers.base import AnalysisInput
from servewise.tools.judging import OBSERVED_BY

# SLO field -> the knob that usually moves it (its telemetry signal: judging.OBSERVED_BY)
_KNOBS = {
    "ttft_p50_ms": "max_num_batched_tokens",
    "ttft_p99_ms": "replicas",
    "tpot_p99_ms": "max_num_seqs",
    "e2e_p99_ms": "replicas",
}
CRITICAL_OVER = 1.5  # measured / objective above which a violation is critical


def slo_violations(inp: AnalysisInput) -> list[Finding]:
    slo = inp.deployment.slo
    if slo is None:
        return []
    out = []
    for field, knob in _KNOBS.items():
        signal = OBSERVED_BY[field]
        limit = getattr(slo, field)
        value = inp.signal(signal)
        if limit is None or value is None or value <= limit:
            continue
        ratio = value / limit
        engine = inp.config.engine.value
        severity = Severity.CRITICAL if ratio >= CRITICAL_OVER else Severity.WARNING
        if beyond_last_bucket(engine, signal, value):
            text = (
                f"{signal} is beyond {value:.1f}, the histogram's last finite bucket, against an objective"
                f" of {limit:.1f} (at least {ratio:.2f}x)."
            )
        elif bucket := bucket_holding(engine, signal, value, limit):
            # histogram_quantile interpolates inside the bucket: every p99 in vLLM's (25, 50] ms ITL
            # bucket reads as 49.75, whether the true one is 30 ms or 50 (edge shelf-assistant, 40 ms)
            severity = Severity.WARNING
            text = (
                f"{signal} reads {value:.1f}, interpolated in the histogram's ({bucket[0]:g}, {bucket[1]:g}]"
                f" bucket, which holds the objective of {limit:.1f}: the true p99 lies anywhere in that"
                " bucket, so this may or may not break the SLO; a benchmark tells."
            )
        else:
            text = f"{signal} is {value:.1f} against an objective of {limit:.1f} ({ratio:.2f}x)."
        out.append(
            inp.finding(
                "slo_violation",
                severity,
                text,
                [inp.evidence(signal, limit)],
                knob,
            )
        )
    return out
