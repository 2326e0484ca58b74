"""SLO violations: observed p99s (and p50 TTFT) against the deployment's objectives."""

from __future__ import annotations

from servewise.domain import Finding, Severity
from servewise.domain.histograms import beyond_last_bucket
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
        text = (
            f"{signal} is beyond {value:.1f}, the histogram's last finite bucket, against an objective of "
            f"{limit:.1f} (at least {ratio:.2f}x)."
            if beyond_last_bucket(inp.config.engine.value, signal, value)
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
