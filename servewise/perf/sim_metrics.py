"""Turn an engine trace into the statistics users read: latencies, throughput, goodput, cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servewise.domain import SLO, LatencyStats, SimulationResult
from servewise.errors import InputError
from servewise.perf.sim_engine import EngineTrace


@dataclass(frozen=True)
class RequestLatencies:
    """Per-request latencies (ms) of the completed requests kept for statistics."""

    ttft_ms: np.ndarray
    tpot_ms: np.ndarray  # nan for single-token outputs (no inter-token gap)
    e2e_ms: np.ndarray


def request_latencies(trace: EngineTrace, warmup_fraction: float = 0.0) -> RequestLatencies:
    """Latencies of completed requests, skipping the first ``warmup_fraction`` of requests by arrival."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise InputError(f"must be in [0, 1), got {warmup_fraction}", field="warmup_fraction")
    skip = int(len(trace.finish_s) * warmup_fraction)
    arrival = trace.arrival_s[skip:]
    first = trace.first_token_s[skip:]
    finish = trace.finish_s[skip:]
    out = trace.output_len[skip:]
    done = ~np.isnan(finish)
    arrival, first, finish, out = arrival[done], first[done], finish[done], out[done]
    gaps = np.where(out > 1, out - 1, 1)
    tpot = np.where(out > 1, (finish - first) / gaps, np.nan)
    return RequestLatencies(
        ttft_ms=(first - arrival) * 1e3,
        tpot_ms=tpot * 1e3,
        e2e_ms=(finish - arrival) * 1e3,
    )


def latency_stats(values_ms: np.ndarray) -> LatencyStats:
    """Mean and percentiles, ignoring ``nan``; all zeros when there is no value."""
    values = values_ms[~np.isnan(values_ms)]
    if values.size == 0:
        return LatencyStats(mean=0.0, p50=0.0, p90=0.0, p99=0.0)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return LatencyStats(mean=float(values.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


def meets_slo_per_request(lat: RequestLatencies, slo: SLO) -> np.ndarray:
    """Which requests meet every per-request objective (the p99 limits applied to each request).

    A p50 TTFT objective is a statement about the median, not about one request, so it is checked on
    the aggregate only (see :func:`slo_violations`).
    """
    ok = np.ones(lat.ttft_ms.shape, dtype=bool)
    if slo.ttft_p99_ms is not None:
        ok &= lat.ttft_ms <= slo.ttft_p99_ms
    if slo.tpot_p99_ms is not None:
        ok &= np.nan_to_num(lat.tpot_ms, nan=0.0) <= slo.tpot_p99_ms
    if slo.e2e_p99_ms is not None:
        ok &= lat.e2e_ms <= slo.e2e_p99_ms
    return ok


def slo_violations(result: SimulationResult, slo: SLO) -> list[str]:
    """Objectives the run's aggregate statistics break (names of the SLO fields)."""
    return slo.violations(
        {
            "ttft_p50_ms": result.ttft_ms.p50,
            "ttft_p99_ms": result.ttft_ms.p99,
            "tpot_p99_ms": result.tpot_ms.p99,
            "e2e_p99_ms": result.e2e_ms.p99,
        }
    )


def summarize(
    trace: EngineTrace,
    *,
    slo: SLO | None = None,
    price_per_hour: float = 0.0,
    warmup_fraction: float = 0.0,
) -> SimulationResult:
    """The ``SimulationResult`` of one run.

    Rates are over the whole run (first arrival to last completion). Latency statistics, goodput and
    SLO attainment use the requests after the warm-up fraction.
    """
    if price_per_hour < 0:
        raise InputError(f"must be >= 0, got {price_per_hour}", field="price_per_hour")
    done = ~np.isnan(trace.finish_s)
    completed = int(done.sum())
    start = float(np.nanmin(trace.arrival_s)) if completed else 0.0
    duration = max(trace.end_s - start, 0.0)
    out_tokens = float(trace.output_len[done].sum())
    per_s = 1.0 / duration if duration > 0 else 0.0
    lat = request_latencies(trace, warmup_fraction)
    goodput = attainment = None
    if slo is not None:
        ok = meets_slo_per_request(lat, slo)
        attainment = float(ok.mean()) if ok.size else 0.0
        kept_span = _span(trace, warmup_fraction)
        goodput = float(ok.sum()) / kept_span if kept_span > 0 else 0.0
    cost = price_per_hour * duration / 3600.0 / (out_tokens / 1e6) if out_tokens > 0 else 0.0
    return SimulationResult(
        num_requests=int(trace.finish_s.shape[0]),
        completed=completed,
        duration_s=duration,
        throughput_tok_s=out_tokens * per_s,
        request_throughput_per_s=completed * per_s,
        ttft_ms=latency_stats(lat.ttft_ms),
        tpot_ms=latency_stats(lat.tpot_ms),
        e2e_ms=latency_stats(lat.e2e_ms),
        goodput_per_s=goodput,
        slo_attainment=attainment,
        kv_usage_mean=trace.kv_usage_mean,
        kv_usage_peak=trace.kv_usage_peak,
        preemptions=trace.preemptions,
        gpu_busy_fraction=min(trace.busy_s / duration, 1.0) if duration > 0 else 0.0,
        cost_per_1m_output_tokens=cost,
    )


def _span(trace: EngineTrace, warmup_fraction: float) -> float:
    """Seconds from the first kept request's arrival to the run's end."""
    skip = int(len(trace.finish_s) * warmup_fraction)
    return float(trace.end_s - np.nanmin(trace.arrival_s[skip:]))


def completion_ratio(trace: EngineTrace, warmup_fraction: float = 0.2) -> float:
    """Completions per arrival inside the arrival window (after warm-up): ~1 when the queue is stable.

    Over ``[t_w, t_last]`` (``t_w`` the arrival of the first request after the warm-up, ``t_last`` the
    last arrival) a stable replica completes about as many requests as arrive; an overloaded one
    completes only its service rate's worth while the queue grows.
    """
    arrival = trace.arrival_s
    n = arrival.shape[0]
    skip = min(int(n * warmup_fraction), n - 2)
    if skip < 0:
        return 1.0
    t_w, t_last = float(arrival[skip]), float(np.nanmax(arrival))
    arrived = int(np.count_nonzero((arrival > t_w) & (arrival <= t_last)))
    if arrived == 0 or t_last <= t_w:
        return 1.0
    finish = trace.finish_s
    completed = int(np.count_nonzero((finish > t_w) & (finish <= t_last)))
    return completed / arrived
