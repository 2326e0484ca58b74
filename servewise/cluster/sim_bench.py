"""What a benchmark Job measures on the twin (before measurement noise is added)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servewise.domain import ServingConfig, Workload
from servewise.perf.efficiency import Efficiency

# p99/p50 and p50/mean ratios used when only the analytical model is available.
_P99_OVER_MEAN = {"ttft": 2.2, "tpot": 1.35, "e2e": 1.6}
_P50_OVER_MEAN = {"ttft": 0.85, "tpot": 0.97, "e2e": 0.95}


@dataclass(frozen=True)
class Measurement:
    completed: int
    throughput_tok_s: float
    request_throughput_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float
    duration_s: float
    method: str


WARMUP_SHARE = 0.25  # requests sent before measuring, as a share of the measured ones (at least 50)


def warmup_requests(num_requests: int) -> int:
    return max(50, round(WARMUP_SHARE * num_requests))


def measure(
    config: ServingConfig, workload: Workload, num_requests: int, eff: Efficiency, rng: np.random.Generator
) -> Measurement:
    """One replica of ``config`` under ``workload`` at efficiency ``eff``.

    Uses the discrete-event simulator (``servewise.perf.simulator.simulate_config``) when it is
    available, else the analytical model's steady state. Statistics cover ``num_requests`` requests
    sent after ``warmup_requests(num_requests)`` warm-up requests (a warm server, as the fleet is).
    """
    try:
        from servewise.perf.simulator import simulate_config
    except ImportError:
        return _analytical(config, workload, num_requests, eff)
    # A benchmark harness warms the server up before it measures: the first requests would meet an
    # empty queue and make the tail look better than the steady state the fleet then serves.
    warm = warmup_requests(num_requests)
    total = num_requests + warm
    res = simulate_config(
        config, workload, num_requests=total, efficiency=eff, seed=int(rng.integers(2**31)),
        warmup_fraction=warm / total,
    )  # fmt: skip
    return Measurement(
        completed=round(res.completed * num_requests / total),
        throughput_tok_s=res.throughput_tok_s,
        request_throughput_per_s=res.request_throughput_per_s,
        ttft_p50_ms=res.ttft_ms.p50,
        ttft_p99_ms=res.ttft_ms.p99,
        tpot_p50_ms=res.tpot_ms.p50,
        tpot_p99_ms=res.tpot_ms.p99,
        e2e_p99_ms=res.e2e_ms.p99,
        duration_s=res.duration_s,
        method="simulator",
    )


def _analytical(config: ServingConfig, workload: Workload, num_requests: int, eff: Efficiency) -> Measurement:
    from servewise.perf.analytical import predict, predict_load

    in_len, out_len = int(workload.input_len.mean), int(workload.output_len.mean)
    if workload.concurrency is not None:
        p = predict(
            config, input_len=in_len, output_len=out_len, concurrency=workload.concurrency, efficiency=eff
        )
        ttft, tpot, e2e, req_s, tok_s = (
            p.ttft_ms,
            p.tpot_ms,
            p.e2e_ms,
            p.request_throughput_per_s,
            p.throughput_tok_s,
        )
    else:
        rate = workload.arrival_rate_per_s or 1.0
        lp = predict_load(
            config, input_len=in_len, output_len=out_len, arrival_rate_per_s=rate, efficiency=eff
        )
        req_s = min(rate, lp.capacity_rate_per_s) if lp.capacity_rate_per_s > 0 else rate
        ttft, tpot, e2e, tok_s = lp.ttft_ms, lp.tpot_ms, lp.e2e_ms, lp.throughput_tok_s
    return Measurement(
        completed=num_requests,
        throughput_tok_s=tok_s,
        request_throughput_per_s=req_s,
        ttft_p50_ms=ttft * _P50_OVER_MEAN["ttft"],
        ttft_p99_ms=ttft * _P99_OVER_MEAN["ttft"],
        tpot_p50_ms=tpot * _P50_OVER_MEAN["tpot"],
        tpot_p99_ms=tpot * _P99_OVER_MEAN["tpot"],
        e2e_p99_ms=e2e * _P99_OVER_MEAN["e2e"],
        duration_s=num_requests / req_s if req_s > 0 else 0.0,
        method="analytical",
    )
