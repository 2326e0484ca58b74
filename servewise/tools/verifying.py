"""Second opinion on the few best candidates: the discrete-event simulator at the calibrated efficiency.

The analytical model prunes thousands of shapes; tails (p99) under bursty Poisson arrivals are
what the simulator models better, so before spending a benchmark the optimizer asks the simulator
for the p99s of the cheapest candidates (mean over two seeds of 200 requests after a warm-up).
"""

from __future__ import annotations

from functools import lru_cache

from servewise.domain import ServingConfig, Workload
from servewise.errors import ServewiseError
from servewise.perf.efficiency import Efficiency
from servewise.tools.calibrating import Calibration

SEEDS = (101, 202)
NUM_REQUESTS = 200
WARMUP_REQUESTS = 50  # sent first and not counted, as a benchmark warms the server up


def simulated_p99(
    cal: Calibration, config: ServingConfig, share: Workload, network_ms: float = 0.0
) -> dict[str, float]:
    """Simulated p99s of one replica of ``config`` at ``share`` (its part of the load)."""
    return dict(_simulate(config.with_changes(replicas=1), share, cal.efficiency(config), network_ms))


@lru_cache(maxsize=20_000)
def _simulate(
    config: ServingConfig, share: Workload, eff: Efficiency, network_ms: float
) -> tuple[tuple[str, float], ...]:
    from servewise.perf.simulator import simulate_config

    totals = {"ttft_p99_ms": 0.0, "tpot_p99_ms": 0.0, "e2e_p99_ms": 0.0, "ttft_p50_ms": 0.0}
    try:
        for seed in SEEDS:
            total = NUM_REQUESTS + WARMUP_REQUESTS
            r = simulate_config(
                config, share, num_requests=total, seed=seed, efficiency=eff,
                warmup_fraction=WARMUP_REQUESTS / total,
            )  # fmt: skip
            if r.completed < 0.99 * r.num_requests:
                return (("failed", 1.0),)
            totals["ttft_p99_ms"] += r.ttft_ms.p99 + network_ms
            totals["tpot_p99_ms"] += r.tpot_ms.p99
            totals["e2e_p99_ms"] += r.e2e_ms.p99 + network_ms
            totals["ttft_p50_ms"] += r.ttft_ms.p50 + network_ms
    except ServewiseError:
        return (("failed", 1.0),)
    return tuple((k, v / len(SEEDS)) for k, v in totals.items())
