"""Second opinion on the few best candidates: the discrete-event simulator at the calibrated efficiency.

The analytical model prunes thousands of shapes; tails (p99) under bursty Poisson arrivals are
what the simulator models better, so before spending a benchmark the optimizer asks the simulator
for the p99s of the cheapest candidates (mean over two seeds of 200 requests after a warm-up).

It also says how far one benchmark's p99 can stray from the long-run p99 (``simulated_spread``):
a p99 from 1000 requests under queueing moves 3-80 % run to run depending on the config (KV-cache
preemption bursts make TTFT tails the widest), so a single pass is only as good as that spread.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from servewise.domain import ServingConfig, Workload
from servewise.errors import ServewiseError
from servewise.perf.efficiency import Efficiency
from servewise.tools.calibrating import Calibration
from servewise.tools.judging import slo_values

SEEDS = (101, 202)
# Independent simulated runs behind one spread estimate. A p99's run-to-run distribution has a heavy
# right tail (a burst of long prompts), which a few runs miss: for bench seed 11's TP=4 A100 pick,
# 8 runs of 2000 requests put the TPOT p99's spread at 4-6 %, 24 runs at 11-12 % and 64 runs at
# 10.5 % (its long run is 1.02 x the objective; two benchmarks read 0.83 and 0.89).
SPREAD_SEEDS = tuple(range(301, 325))
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
    runs: list[dict[str, float]] = []
    try:
        for values, complete in _runs(config, share, eff, NUM_REQUESTS, network_ms, SEEDS):
            if not complete:
                return (("failed", 1.0),)
            runs.append(values)
    except ServewiseError:
        return (("failed", 1.0),)
    return tuple((k, sum(r[k] for r in runs) / len(SEEDS)) for k in runs[0])


def _runs(
    config: ServingConfig,
    share: Workload,
    eff: Efficiency,
    requests: int,
    network_ms: float,
    seeds: tuple[int, ...],
) -> Iterator[tuple[dict[str, float], bool]]:
    """One simulated benchmark per seed, warmed up as a benchmark is (a quarter of the requests,
    at least ``WARMUP_REQUESTS``): the values the SLO reads (network latency included) and whether
    it completed 99 % of its requests. Raises what the simulator raises."""
    from servewise.perf.simulator import simulate_config

    warm = max(WARMUP_REQUESTS, requests // 4)
    for seed in seeds:
        r = simulate_config(
            config, share, num_requests=requests + warm, seed=seed, efficiency=eff,
            warmup_fraction=warm / (requests + warm),
        )  # fmt: skip
        values = slo_values(r.ttft_ms.p99, r.tpot_ms.p99, r.e2e_ms.p99, r.ttft_ms.p50, network_ms)
        yield values, r.completed >= 0.99 * r.num_requests


def simulated_spread(
    cal: Calibration, config: ServingConfig, share: Workload, requests: int, network_ms: float = 0.0
) -> dict[str, float]:
    """The simulator's run-to-run coefficient of variation of each p99 (and the TTFT p50) that one
    benchmark of ``requests`` requests measures on one replica of ``config`` at ``share``: the
    spread of a p99 estimate, from independent simulated runs (``_runs``). Empty when the
    simulator cannot run the config."""
    return dict(_spread(config.with_changes(replicas=1), share, cal.efficiency(config), requests, network_ms))


@lru_cache(maxsize=4_000)
def _spread(
    config: ServingConfig, share: Workload, eff: Efficiency, requests: int, network_ms: float
) -> tuple[tuple[str, float], ...]:
    try:
        runs = [values for values, _ in _runs(config, share, eff, requests, network_ms, SPREAD_SEEDS)]
    except ServewiseError:
        return ()
    series = {k: [r[k] for r in runs] for k in runs[0]}
    return tuple((k, float(np.std(v, ddof=1) / np.mean(v))) for k, v in series.items() if np.mean(v) > 0)
