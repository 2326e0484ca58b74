"""Latency distributions the twin's fleet serves: the same discrete-event simulator a benchmark runs.

A benchmark Job on the twin (``sim_bench.measure``) runs ``servewise.perf.simulator`` on one
replica at the true efficiency. The fleet must serve the same physics, or a candidate that passes
its benchmark fails on the fleet for no reason the product could see. So while a replica's queue
is stable, each deployment's per-request TTFT, time per output token and E2E latency at one
moment are *samples* of that simulator at the replica's arrival rate (the workload's length
distributions, prefix share and Poisson arrivals; a warm-up share of the requests dropped), and
the fleet's histograms are drawn from those samples. An overloaded replica (no steady state to
simulate) keeps the analytical model's latencies (``sim_metrics.LatencyDraw.make``).

Profiles are cached per configuration, workload and arrival-rate bucket (5 % wide); all buckets
of one deployment share a seed (common random numbers), so the tails move smoothly with the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from servewise.domain import ServingConfig, Workload
from servewise.errors import ServewiseError
from servewise.perf.efficiency import Efficiency

PROFILE_REQUESTS = 1000  # 8 samples above the p99 after the warm-up
WARMUP_FRACTION = 0.2  # a benchmark's and the fleet's queue start warm, not empty
STABLE_COMPLETION = 0.98  # completions per arrival below this: the queue grows (no steady state)
_RATE_BUCKET = 0.05  # tails move slowly with the rate; a simulator run costs ~0.05-0.2 s


@dataclass(frozen=True)
class LatencySamples:
    """Per-request latencies (seconds) of one replica in steady state; ``tpot_weight`` is the
    number of inter-token gaps behind each ``tpot_s`` (what an ITL histogram counts)."""

    ttft_s: np.ndarray
    tpot_s: np.ndarray
    tpot_weight: np.ndarray
    e2e_s: np.ndarray

    def percentile_ms(self, name: str, q: float) -> float:
        """The ``q``-th percentile (0-100) of ``ttft``, ``e2e`` or token-weighted ``tpot``, in ms."""
        if name == "tpot":
            return 1e3 * weighted_percentile(self.tpot_s, self.tpot_weight, q)
        return 1e3 * float(np.percentile(getattr(self, f"{name}_s"), q))


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    if cum.size == 0 or cum[-1] <= 0:
        return 0.0
    idx = int(np.searchsorted(cum, q / 100.0 * cum[-1]))
    return float(values[order][min(idx, len(order) - 1)])


def rate_bucket(rate_per_s: float) -> int:
    return round(math.log(max(rate_per_s, 1e-6)) / _RATE_BUCKET)


def replica_latencies(
    config: ServingConfig, workload: Workload, rate_per_s: float, eff: Efficiency, seed: int
) -> LatencySamples | None:
    """Steady-state latency samples of one replica at ``rate_per_s`` (bucketed), or None when its
    queue does not settle (overload) or the simulator cannot run the configuration."""
    if rate_per_s <= 0:
        return None
    return _replica_latencies(
        config.with_changes(replicas=1), workload.model_copy(update={"arrival_rate_per_s": 1.0}),
        rate_bucket(rate_per_s), eff, seed,
    )  # fmt: skip


@lru_cache(maxsize=4096)
def _replica_latencies(
    config: ServingConfig, workload: Workload, bucket: int, eff: Efficiency, seed: int
) -> LatencySamples | None:
    from servewise.perf.sim_metrics import completion_ratio, request_latencies
    from servewise.perf.simulator import replica_setup, simulate_trace

    wl = workload.model_copy(update={"arrival_rate_per_s": math.exp(bucket * _RATE_BUCKET)})
    try:
        setup = replica_setup(config, wl, efficiency=eff)
        trace = simulate_trace(
            config, wl, cost=setup.cost, kv_capacity_tokens=setup.kv_capacity_tokens,
            num_requests=PROFILE_REQUESTS, seed=seed,
        )  # fmt: skip
    except ServewiseError:
        return None
    if completion_ratio(trace, WARMUP_FRACTION) < STABLE_COMPLETION:
        return None
    lat = request_latencies(trace, WARMUP_FRACTION)
    skip = int(len(trace.finish_s) * WARMUP_FRACTION)
    out = trace.output_len[skip:][~np.isnan(trace.finish_s[skip:])]
    multi = out > 1
    return LatencySamples(
        ttft_s=lat.ttft_ms / 1e3,
        tpot_s=lat.tpot_ms[multi] / 1e3,
        tpot_weight=(out[multi] - 1).astype(np.float64),
        e2e_s=lat.e2e_ms / 1e3,
    )


def sample_bin_probs(
    bounds: tuple[float, ...], values_s: np.ndarray, scale: float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Share of ``values_s * scale`` in each histogram bin (``le`` bounds, +Inf last)."""
    idx = np.searchsorted(np.asarray(bounds), values_s * scale, side="left")
    counts = np.bincount(idx, weights=weights, minlength=len(bounds) + 1).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts
