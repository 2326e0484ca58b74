"""Judging a benchmark against an SLO: the measured / objective ratios, and when a pass is trusted.

One run's p99 is an estimate: it strays from the long-run p99 by a spread that depends on the
config (``verifying.simulated_spread``), and a run far worse than the model predicted says the model
does not know the config's regime. The optimizer and the bench's truth judge with these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from servewise.domain import SLO, BenchmarkResult
from servewise.tools.sizing import meets

# Spread of a real benchmark's p99 beyond the simulator's queueing noise (clocks, tokenizer, network):
# the floor under the simulated spread when a pass is judged.
SPREAD_FLOOR = 0.03


def slo_values(
    ttft_p99_ms: float, tpot_p99_ms: float, e2e_p99_ms: float, ttft_p50_ms: float, network_ms: float
) -> dict[str, float]:
    """Server-side latencies as the SLO reads them: TTFT and end-to-end include the pool's network
    latency, time per output token does not."""
    return {
        "ttft_p99_ms": ttft_p99_ms + network_ms,
        "tpot_p99_ms": tpot_p99_ms,
        "e2e_p99_ms": e2e_p99_ms + network_ms,
        "ttft_p50_ms": ttft_p50_ms + network_ms,
    }


# SLO objective -> the telemetry signal that observes it (the engines' inter-token latency is the
# time per output token)
OBSERVED_BY = {
    "ttft_p50_ms": "ttft_p50_ms",
    "ttft_p99_ms": "ttft_p99_ms",
    "tpot_p99_ms": "itl_p99_ms",
    "e2e_p99_ms": "e2e_p99_ms",
}


def observed_values(
    signals: Mapping[str, float], objectives: Iterable[str] = OBSERVED_BY
) -> dict[str, float]:
    """Telemetry ``signals`` keyed by the SLO objectives they observe (those present)."""
    return {k: signals[OBSERVED_BY[k]] for k in objectives if OBSERVED_BY[k] in signals}


def measured_values(res: BenchmarkResult, network_ms: float) -> dict[str, float]:
    """A benchmark's values as the SLO reads them (``slo_values``)."""
    return slo_values(res.ttft_p99_ms, res.tpot_p99_ms, res.e2e_p99_ms, res.ttft_p50_ms, network_ms)


def requests_ok(res: BenchmarkResult) -> bool:
    """The run served its requests: some completed and at most 1 % failed."""
    return res.completed > 0 and res.failed <= 0.01 * (res.completed + res.failed)


def benchmark_passes(res: BenchmarkResult, slo: SLO, network_ms: float) -> bool:
    return requests_ok(res) and meets(slo, measured_values(res, network_ms))


def slo_ratios(slo: SLO | None, values: dict[str, float]) -> list[float]:
    """Each value / its objective, for the objectives the SLO sets and ``values`` holds."""
    return [values[k] / lim for k, lim in (slo or SLO()).objectives().items() if k in values]


def worst_ratio(slo: SLO | None, values: dict[str, float]) -> float:
    """The largest measured / objective ratio (1.0 = exactly at the SLO)."""
    return max(slo_ratios(slo, values), default=0.0)


def upper_ratio(slo: SLO | None, values: dict[str, float], spread: dict[str, float], z: float) -> float:
    """The worst measured / objective ratio with each metric widened to the upper end of its
    run-to-run spread (coefficient of variation, floored at ``SPREAD_FLOOR``): above 1, the
    long-run p99 may break the objective although this run met it."""
    return max(
        (
            values[k] / lim * (1 + z * max(SPREAD_FLOOR, spread.get(k, SPREAD_FLOOR)))
            for k, lim in (slo or SLO()).objectives().items()
            if k in values
        ),
        default=0.0,
    )


def underpredicted(
    slo: SLO | None, predicted: dict[str, float], measured: dict[str, float], tolerance: float
) -> bool:
    """Whether a metric the SLO sets measured worse than predicted by more than ``tolerance``: the
    model does not know this config's regime (a TP or batching cliff), so one lucky run is all the
    evidence there is for a pass (seed 11: predicted TPOT 50 ms, one run 64, the long run 83)."""
    return any(
        measured.get(k, 0.0) > (1 + tolerance) * predicted[k]
        for k in (slo or SLO()).objectives()
        if predicted.get(k)
    )
