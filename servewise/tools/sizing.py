"""Size one shape for a load: the fewest replicas whose predicted p99s meet the SLO.

Predictions are the analytical open-loop model with the deployment's calibration; p99s are the
predicted means times the calibrated tail factors, plus the pool's network latency on TTFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from servewise.domain import SLO, InferenceDeployment, ServingConfig, Workload
from servewise.errors import InputError, ServewiseError
from servewise.tools.calibrating import Calibration, predict_with
from servewise.tools.search_space import SearchPolicy, Shape


@dataclass(frozen=True)
class Load:
    """The load to size for: mean lengths, a p99 output length, and the total peak rate (+headroom)."""

    input_len: float
    output_len: float
    output_len_p99: float
    rate_per_s: float
    observed_rate_per_s: float

    def rate_per_replica(self, replicas: int) -> float:
        """One replica's share of the rate (a benchmark's arrival rate for a candidate)."""
        return self.rate_per_s / max(replicas, 1)

    def workload(self, base: Workload | None) -> Workload:
        if base is None:
            return Workload.fixed(round(self.input_len), round(self.output_len), rate=self.rate_per_s)
        return base.model_copy(update={"arrival_rate_per_s": self.rate_per_s, "concurrency": None})


def load_for(
    dep: InferenceDeployment,
    observed_rate: float | None,
    policy: SearchPolicy,
    peak_rate: float | None = None,
) -> Load:
    wl = dep.workload
    if wl is None:
        raise InputError(
            f"deployment {dep.ref.key} has no workload to size for: none declared, and its telemetry does "
            "not show the load it is offered",
            field="workload",
        )
    rates = [r for r in (peak_rate, observed_rate, wl.arrival_rate_per_s) if r]
    if not rates:
        raise InputError(f"deployment {dep.ref.key}: no observed or declared arrival rate", field="workload")
    peak = peak_rate if peak_rate else max(rates)
    sample = wl.output_len.sample(np.random.default_rng(0), 4000)
    return Load(
        input_len=float(wl.input_len.mean),
        output_len=float(wl.output_len.mean),
        output_len_p99=float(np.percentile(sample, 99)),
        rate_per_s=peak * (1 + policy.headroom),
        observed_rate_per_s=observed_rate or wl.arrival_rate_per_s or peak,
    )


@dataclass(frozen=True)
class Forecast:
    ttft_p99_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float
    ttft_p50_ms: float
    saturated: bool
    capacity_rate_per_s: float

    def as_dict(self) -> dict[str, float]:
        return {
            "ttft_p99_ms": self.ttft_p99_ms,
            "tpot_p99_ms": self.tpot_p99_ms,
            "e2e_p99_ms": self.e2e_p99_ms,
            "ttft_p50_ms": self.ttft_p50_ms,
        }


def forecast(cal: Calibration, config: ServingConfig, load: Load, network_ms: float = 0.0) -> Forecast:
    """Predicted p99s of ``config`` (with its replicas) at the load's total rate."""
    per_replica = load.rate_per_replica(config.replicas)
    p = predict_with(cal, config, load.input_len, load.output_len, per_replica)
    ttft99 = p.ttft_ms * cal.tail(config, "ttft") + network_ms
    tpot99 = p.tpot_ms * cal.tail(config, "tpot")
    return Forecast(
        ttft_p99_ms=ttft99,
        tpot_p99_ms=tpot99,
        e2e_p99_ms=ttft99 + max(load.output_len_p99 - 1, 0) * p.tpot_ms,
        ttft_p50_ms=p.ttft_ms + network_ms,
        saturated=p.saturated,
        capacity_rate_per_s=p.capacity_rate_per_s,
    )


def meets(slo: SLO, values: dict[str, float], margin: float = 1.0) -> bool:
    return not any(
        values[name] > margin * limit for name, limit in slo.objectives().items() if name in values
    )


@dataclass(frozen=True)
class Sized:
    shape: Shape
    config: ServingConfig  # with replicas
    forecast: Forecast
    cost_per_hour: float


def size(
    shape: Shape, load: Load, slo: SLO, cal: Calibration, policy: SearchPolicy, *, extra: int = 0
) -> Sized | None:
    """Fewest replicas meeting the SLO (plus ``extra``); None when the pool cannot hold enough.

    Latency falls as replicas are added, so a binary search between the capacity bound and the
    most replicas the pool holds finds the fewest that meet the SLO.
    """
    net = shape.pool.network_latency_ms
    max_n = min(policy.max_replicas, shape.available_gpus // shape.config.gpus_per_replica)
    if max_n < 1:
        return None

    def ok(n: int) -> Forecast | None:
        try:
            fc = forecast(cal, shape.config.with_changes(replicas=n), load, net)
        except ServewiseError:
            return None
        return fc if not fc.saturated and meets(slo, fc.as_dict(), policy.slo_margin) else None

    try:
        cap = forecast(cal, shape.config, load, net).capacity_rate_per_s
    except ServewiseError:
        return None
    lo = max(1, math.ceil(load.rate_per_s / cap)) if cap > 0 else max_n
    if lo > max_n:
        return None
    hi = min(max_n, 2 * lo + 2)  # most shapes pass within a few replicas of the capacity bound
    if ok(hi) is None:
        if hi == max_n or ok(max_n) is None:
            return None
        lo, hi = hi + 1, max_n
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    n = min(lo + extra, max_n)
    cfg = shape.config.with_changes(replicas=n)
    return Sized(shape, cfg, forecast(cal, cfg, load, net), cfg.total_gpus * shape.price_per_gpu_hour)
