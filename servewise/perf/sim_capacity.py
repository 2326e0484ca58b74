"""Capacity search: the highest arrival rate one replica sustains within an SLO, by simulation.

A rate is *sustainable* when a simulated run at that Poisson rate meets every SLO objective (p50/p99
statistics of the run) and the queue does not grow: inside the arrival window the replica completes
at least ``STABLE_COMPLETION_RATIO`` of the requests that arrive. The search brackets the answer
from the analytical model's capacity estimate (or by doubling from 1 req/s) and bisects. All runs use
the same seed, so arrival gaps are the same random draws scaled by ``1 / rate`` (common random
numbers): the verdict is monotone in the rate up to the model's own behaviour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from servewise.domain import SLO, ServingConfig, Workload
from servewise.errors import DoesNotFitError, InputError, UnknownIdError
from servewise.perf.catalog import Catalog
from servewise.perf.efficiency import Efficiency
from servewise.perf.interfaces import IterationCost
from servewise.perf.sim_metrics import completion_ratio, slo_violations, summarize
from servewise.perf.simulator import replica_setup, simulate_trace

log = logging.getLogger(__name__)

STABLE_COMPLETION_RATIO = 0.97
MAX_DOUBLINGS = 40
MIN_RATE_FRACTION = 1e-4  # below guess * this, a failing SLO is reported as capacity 0


def max_sustainable_rate(
    config: ServingConfig,
    workload: Workload,
    slo: SLO,
    *,
    num_requests: int = 1000,
    seed: int = 0,
    tol: float = 0.02,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
    cost: IterationCost | None = None,
    kv_capacity_tokens: int | None = None,
) -> float:
    """Highest Poisson arrival rate (requests/s to this one replica) that meets ``slo`` and is stable.

    Lengths and prefix sharing come from ``workload`` (its arrival process is replaced by Poisson
    arrivals at the searched rate). ``cost`` and ``kv_capacity_tokens`` override the catalog-built
    replica (both or neither). Returns 0.0 when even a nearly idle replica misses the SLO.
    ``tol`` is the relative width of the final bracket.
    """
    if not 0 < tol < 1:
        raise InputError(f"must be in (0, 1), got {tol}", field="tol")
    if (cost is None) != (kv_capacity_tokens is None):
        raise InputError("give both cost and kv_capacity_tokens, or neither", field="cost")
    guess = None
    if cost is None or kv_capacity_tokens is None:
        setup = replica_setup(config, workload, efficiency=efficiency, catalog=catalog)
        cost, kv_capacity_tokens = setup.cost, setup.kv_capacity_tokens
        guess = _analytical_capacity(config, workload, efficiency, catalog)
    kv_tokens = kv_capacity_tokens

    def sustainable(rate: float) -> bool:
        open_loop = workload.model_copy(
            update={"arrival_rate_per_s": rate, "concurrency": None, "trace": None, "arrival": "poisson"}
        )
        trace = simulate_trace(
            config, open_loop, cost=cost, kv_capacity_tokens=kv_tokens, num_requests=num_requests, seed=seed
        )
        ratio = completion_ratio(trace)
        broken = slo_violations(summarize(trace), slo)
        ok = ratio >= STABLE_COMPLETION_RATIO and not broken
        log.debug("rate %.4g req/s: completion ratio %.3f, violations %s -> %s", rate, ratio, broken, ok)
        return ok

    start = guess if guess and math.isfinite(guess) and guess > 0 else 1.0
    lo, hi = _bracket(sustainable, start)
    if hi == 0.0:
        return 0.0
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        if sustainable(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _bracket(check: Callable[[float], bool], start: float) -> tuple[float, float]:
    """(lo, hi) with ``check(lo)`` true and ``check(hi)`` false; (0, 0) when no rate passes."""
    if check(start):
        lo, hi = start, 2.0 * start
        for _ in range(MAX_DOUBLINGS):
            if not check(hi):
                return lo, hi
            lo, hi = hi, 2.0 * hi
        return lo, lo
    hi, rate = start, start / 2.0
    while rate >= start * MIN_RATE_FRACTION:
        if check(rate):
            return rate, hi
        hi, rate = rate, rate / 2.0
    return 0.0, 0.0


def _analytical_capacity(
    config: ServingConfig, workload: Workload, efficiency: Efficiency | None, catalog: Catalog | None
) -> float | None:
    """The analytical model's saturation rate for the mean lengths (a starting point only)."""
    from servewise.perf.analytical import predict_load

    try:
        pred = predict_load(
            config,
            input_len=max(int(round(workload.input_len.mean)), 1),
            output_len=max(int(round(workload.output_len.mean)), 1),
            arrival_rate_per_s=1.0,
            efficiency=efficiency,
            catalog=catalog,
        )
    except (DoesNotFitError, UnknownIdError, InputError) as exc:
        log.debug("no analytical capacity estimate: %s", exc)
        return None
    return float(pred.capacity_rate_per_s)
