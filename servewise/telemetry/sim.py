"""``TelemetrySource`` reading the twin directly, with the same semantics as the PromQL reader.

Gauges are averaged over the window's samples, counters become rates over the window (first to
last sample, as ``rate()`` does on aligned samples), and quantiles come from the summed histogram
buckets with Prometheus' ``histogram_quantile`` interpolation, so both sources agree on one twin.
"""

from __future__ import annotations

import math

import numpy as np

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_metrics import GAUGES, HISTOGRAMS, LAYOUT, fold_length_bins
from servewise.domain import POD_PREFIX, SIGNALS, DeploymentTelemetry, SignalEvidence, TelemetrySnapshot
from servewise.perf.catalog import get_catalog
from servewise.telemetry.promql import PEAK_SIGNALS, PEAK_STEP, window_seconds

PEAK_STEP_S = window_seconds(PEAK_STEP)
_RATES = {
    "request_rate_per_s": "requests",
    "prompt_tokens_per_s": "prompt_tokens",
    "generation_tokens_per_s": "generation_tokens",
    "preemptions_per_s": "preemptions",
}
_QUANTILES = {
    "ttft_p50_ms": ("ttft", 0.5),
    "ttft_p99_ms": ("ttft", 0.99),
    "itl_p50_ms": ("itl", 0.5),
    "itl_p99_ms": ("itl", 0.99),
    "e2e_p99_ms": ("e2e", 0.99),
}
_LENGTHS = {"prompt_len_p99": "prompt_len", "output_len_p99": "output_len"}
_GAUGES = {
    "requests_running": "running",
    "requests_waiting": "waiting",
    "kv_cache_usage": "kv_usage",
    "gpu_utilization": "gpu_utilization",
    "gpu_memory_used_bytes": "gpu_memory_used_bytes",
}


def histogram_quantile(q: float, bounds: tuple[float, ...], counts: np.ndarray) -> float:
    """Prometheus' ``histogram_quantile`` on per-bin counts (last bin = +Inf); NaN when empty."""
    cum = np.cumsum(counts)
    total = float(cum[-1]) if len(cum) else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    i = int(np.searchsorted(cum, rank, side="left"))
    if i >= len(bounds):  # the +Inf bucket: Prometheus answers the highest finite bound
        return float(bounds[-1])
    lower = 0.0 if i == 0 else bounds[i - 1]
    below = 0.0 if i == 0 else float(cum[i - 1])
    in_bucket = float(cum[i]) - below
    if in_bucket <= 0:
        return float(bounds[i])
    return lower + (bounds[i] - lower) * (rank - below) / in_bucket


class SimTelemetrySource:
    """Snapshots of a ``SimCluster`` at its current time."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.name = f"sim:{cluster.scenario.name}"

    def snapshot(self, *, window: str = "15m") -> TelemetrySnapshot:
        seconds = window_seconds(window)
        sim = self.cluster
        times, gauges, totals = sim.history.window(sim.now_s, seconds)
        covered = float(times[-1] - times[0]) if len(times) > 1 else 0.0
        short = covered < seconds - sim.step_s - 1e-6
        deployments = []
        lookbacks: dict[int, str] = {}
        for i, key in enumerate(sim.keys):
            dep = sim.deployment_state(key)
            tel = DeploymentTelemetry(
                deployment=dep.name,
                namespace=dep.namespace,
                engine=dep.spec.engine.value,
                replicas=dep.spec.replicas,
            )
            values: dict[str, float] = {}
            live = gauges[:, i, GAUGES.index("ready_pods")] > 0 if len(times) else np.zeros(0, bool)
            if len(times):  # as avg_over_time of kube-state-metrics' available replicas
                values["replicas_available"] = float(np.mean(gauges[:, i, GAUGES.index("ready_pods")]))
            if live.any():
                for signal, gauge in _GAUGES.items():
                    values[signal] = float(np.mean(gauges[live, i, GAUGES.index(gauge)]))
            live_idx = np.nonzero(live)[0]
            if len(live_idx) >= 2:
                first, last = live_idx[0], live_idx[-1]
                span = float(times[last] - times[first])
                delta = totals[last, i] - totals[first, i]
                for signal, counter in _RATES.items():
                    values[signal] = float(delta[LAYOUT.counter[counter]]) / span
                queried = float(delta[LAYOUT.counter["prefix_queries"]])
                if queried > 0:  # prefix caching on: the share of prompt tokens found cached
                    values["prefix_cache_hit_rate"] = float(delta[LAYOUT.counter["prefix_hits"]]) / queried
                for signal, (hist, q) in _QUANTILES.items():
                    value = histogram_quantile(q, HISTOGRAMS[hist], delta[LAYOUT.bins[hist]])
                    if math.isfinite(value):
                        values[signal] = value * 1000.0
                context = get_catalog().served_context(dep.serving)
                for signal, hist in _LENGTHS.items():  # bounds up to the server's context, as exported
                    bounds, bins = fold_length_bins(delta[LAYOUT.bins[hist]], context)
                    value = histogram_quantile(0.99, bounds, bins)
                    if math.isfinite(value):
                        values[signal] = value
            if "request_rate_per_s" in values and "requests_waiting" in values:
                # under 5 minutes of history: the window's own
                peak = _peaks(sim, i) or (values["request_rate_per_s"], values["requests_waiting"], window)
                values["request_rate_peak_per_s"] = max(peak[0], values["request_rate_per_s"])
                values["requests_waiting_peak"] = max(peak[1], values["requests_waiting"])
                lookbacks[i] = peak[2]
            for pod in sim.pods.get(key, []):  # the twin keeps no per-pod history: its pods now
                tel.signals[f"{POD_PREFIX}{pod.name}/requests_running"] = float(pod.running)
            if short:
                tel.notes.append(f"the twin's history covers {covered:.0f} s of the {window} window")
            for signal in SIGNALS:
                if signal in values:
                    tel.signals[signal] = values[signal]
                    over = lookbacks.get(i, window) if signal in PEAK_SIGNALS else window
                    tel.evidence[signal] = SignalEvidence(query=f"twin:{signal}", window=over)
                else:
                    tel.missing.append(signal)
            deployments.append(tel)
        return TelemetrySnapshot(
            source=self.name, taken_at=sim.now, window=window, deployments=deployments, queries=1
        )


def _peaks(sim: SimCluster, index: int) -> tuple[float, float, str] | None:
    """The busiest 5 minutes of requests and the longest 5-minute mean queue in the twin's whole
    history (its lookback: all it keeps), over the 5 minutes before each multiple of 5 minutes
    (where PromQL's ``[1d:5m]`` subquery evaluates), and that lookback as a duration; None before
    one such window is complete."""
    times, gauges, totals = sim.history.window(sim.now_s, sim.history.span_s)
    live = gauges[:, index, GAUGES.index("ready_pods")] > 0 if len(times) else np.zeros(0, bool)
    times, counts = times[live], totals[live, index, LAYOUT.counter["requests"]]
    waiting = gauges[live, index, GAUGES.index("waiting")]
    if len(times) < 2:
        return None
    marks = np.arange(math.ceil(times[0] / PEAK_STEP_S) * PEAK_STEP_S, times[-1] + 1e-6, PEAK_STEP_S)
    ends = np.searchsorted(times, marks + 1e-6, side="right") - 1  # the last sample at each mark
    starts = np.searchsorted(times, times[ends] - PEAK_STEP_S - 1e-6)
    spans = times[ends] - times[starts]
    full = (spans > 0) & (spans >= max(PEAK_STEP_S - sim.step_s, PEAK_STEP_S / 2) - 1e-6)
    if not full.any():
        return None
    ends, starts, spans = ends[full], starts[full], spans[full]
    rates = (counts[ends] - counts[starts]) / spans
    queues = [float(np.mean(waiting[a + 1 : b + 1])) for a, b in zip(starts, ends, strict=True)]
    return float(rates.max()), max(queues), f"{max(round(times[-1] - times[0]), 1)}s"
