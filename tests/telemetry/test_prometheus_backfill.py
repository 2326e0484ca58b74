"""A real Prometheus holding 2 h of backfilled `demo` history, read back with PrometheusSource."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_metrics import GAUGES, HISTOGRAMS, LAYOUT
from servewise.domain import POD_PREFIX, SIGNALS, TelemetrySnapshot
from servewise.telemetry.names import ENGINE_NAMES, SGLANG_NAMES, TGI_NAMES
from servewise.telemetry.prometheus import PrometheusSource
from servewise.telemetry.promql import PEAK_SIGNALS
from servewise.telemetry.sim import SimTelemetrySource, histogram_quantile

pytestmark = pytest.mark.slow
GAUGE_SIGNALS = {
    "requests_running", "requests_waiting", "kv_cache_usage", "gpu_utilization", "gpu_memory_used_bytes",
}  # fmt: skip
QUANTILE_SIGNALS = {"ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p99_ms"}


def _twin_window_histograms(sim: SimCluster, key: str, seconds: float = 900) -> dict[str, np.ndarray]:
    """Per-bucket counts of the twin's histograms over the window, as SimTelemetrySource sums them."""
    times, gauges, totals = sim.history.window(sim.now_s, seconds)
    i = sim.keys.index(key)
    live = np.nonzero(gauges[:, i, GAUGES.index("ready_pods")] > 0)[0]
    delta = totals[live[-1], i] - totals[live[0], i]
    return {hist: delta[LAYOUT.bins[hist]] for hist in HISTOGRAMS}


def _prom_snapshot(b: Any, window: str = "15m", **kwargs: object) -> TelemetrySnapshot:
    at = datetime.fromtimestamp(b.export.end_s, UTC)
    return PrometheusSource(b.prom.url, **kwargs).snapshot(window=window, at=at)  # type: ignore[arg-type]


def test_prometheus_and_the_twin_agree_within_5_percent(backfilled: Any) -> None:
    prom = _prom_snapshot(backfilled)
    sim = SimTelemetrySource(backfilled.sim).snapshot(window="15m")
    # one probe per engine (only vLLM's series are there), then one per signal + replicas + running
    # requests and request rate per pod + the peak's span, whatever the fleet size
    assert prom.queries == len(ENGINE_NAMES) + len(SIGNALS) + 5
    assert {d.engine for d in prom.deployments} == {"vllm"}
    assert {(d.namespace, d.deployment) for d in prom.deployments} == {
        (d.namespace, d.deployment) for d in sim.deployments
    }
    compared = 0
    for p in prom.deployments:
        s = sim.for_deployment(p.deployment, p.namespace)
        assert s is not None and p.replicas == s.replicas
        pods = {k: v for k, v in p.signals.items() if k.startswith(POD_PREFIX)}
        if f"{p.namespace}/{p.deployment}" != backfilled.rolled:
            # each pod's window average and rate (the twin keeps no per-pod history to compare with);
            # over a window with the same pods throughout they add up to the deployment's
            for signal in ("requests_running", "request_rate_per_s"):
                per_pod = [v for k, v in pods.items() if k.endswith(f"/{signal}")]
                assert len(per_pod) == p.replicas, (p.deployment, signal)
                assert sum(per_pod) == pytest.approx(p.signals[signal], rel=1e-6)
        for name, value in p.signals.items():
            if name in pods:
                continue
            if (
                f"{p.namespace}/{p.deployment}" == backfilled.rolled
                and name in GAUGE_SIGNALS | QUANTILE_SIGNALS
            ):
                # gauges of a deployment rolled mid-window cover only its new pods, and its quantiles
                # carry rate()'s extrapolation of series born and ended inside the window (next test)
                continue
            expected, compared = s.signals[name], compared + 1
            if name in PEAK_SIGNALS:  # Prometheus looks back 2 h, the twin keeps 1 h: it sees more
                now = s.signals[
                    "request_rate_per_s" if name == "request_rate_peak_per_s" else "requests_waiting"
                ]
                assert value >= 0.95 * max(expected, now) - 1e-6, (p.deployment, name)
            else:
                assert value == pytest.approx(expected, rel=0.05, abs=1e-6), f"{p.deployment}.{name}"
    assert compared >= 8 * (len(SIGNALS) - 2)


def test_snapshot_matches_the_twins_ground_truth(backfilled: Any) -> None:
    """Request rates follow the scenario's traffic; KV usage and ITL follow the hidden-truth model."""
    prom = {(d.namespace, d.deployment): d for d in _prom_snapshot(backfilled).deployments}
    sim = backfilled.sim
    window = np.arange(sim.now_s - 900, sim.now_s + 1, 30.0)
    for key in sim.keys:
        spec, dep = sim.specs[key], sim.deployment_state(key)
        got = prom[(dep.namespace, dep.name)]
        offered = float(np.mean([spec.workload.rate_at(t) for t in window]))
        load = spec.workload
        truth = sim.truth.replica_state(
            dep.serving,
            load.input_len.mean * (1 - load.prefix_share if dep.serving.enable_prefix_caching else 1),
            load.output_len.mean,
            offered / dep.serving.replicas,
        )
        if not truth.saturated:
            # Poisson arrivals: a 15-minute count of N requests is off by ~1/sqrt(N); allow 4 sigma
            tolerance = max(0.12, 4.0 / float(np.sqrt(max(offered * 900.0, 1.0))))
            assert got.signals["request_rate_per_s"] == pytest.approx(offered, rel=tolerance), key
            # the busiest 5 minutes (to each multiple of 5 minutes) of the 2 h: the highest of 24 noisy
            # counts of ~300 x rate requests each, so above the offered peak by up to ~4 sigma
            marks = np.arange(backfilled.export.start_s + 300, sim.now_s + 1, 300)
            marks = marks[marks % 300 == 0]
            peak = max(
                float(np.mean([spec.workload.rate_at(t) for t in np.arange(m - 300, m, 10)])) for m in marks
            )
            top = 1 + 4.0 / float(np.sqrt(peak * 300.0))
            assert 0.9 * peak <= got.signals["request_rate_peak_per_s"] <= top * peak, key
        assert got.signals["kv_cache_usage"] == pytest.approx(truth.kv_usage, rel=0.25, abs=0.03), key
        # ITL p50 through coarse buckets: within the bucket-interpolation error. While a replica keeps
        # up, the twin's latencies are its benchmark simulator's (sim_latency), else the analytical model's
        profile = sim.truth.latencies(dep.serving, key, load, offered / dep.serving.replicas)
        itl = profile.percentile_ms("tpot", 50) if profile is not None else truth.tpot_ms
        assert got.signals["itl_p50_ms"] == pytest.approx(itl, rel=0.5), key
        if dep.namespace != backfilled.dropped_namespace:
            assert got.signals["gpu_memory_used_bytes"] > 1e9


def test_missing_series_are_listed_never_zero(backfilled: Any) -> None:
    snap = _prom_snapshot(backfilled)
    legal = next(d for d in snap.deployments if d.namespace == backfilled.dropped_namespace)
    assert {"gpu_utilization", "gpu_memory_used_bytes"} <= set(legal.missing)
    assert "gpu_utilization" not in legal.signals
    others = [d for d in snap.deployments if d.namespace != backfilled.dropped_namespace]
    assert all("gpu_utilization" in d.signals for d in others)
    # reading the vLLM fleet with SGLang names: every engine signal is missing, GPU signals remain
    sgl = _prom_snapshot(backfilled, names=SGLANG_NAMES)
    for d in sgl.deployments:
        assert "requests_running" in d.missing and "ttft_p99_ms" in d.missing
        assert "requests_running" not in d.signals
        assert not [n for n in d.notes if "no metric" in n]  # SGLang has a metric for every signal
        assert d.engine is None  # GPU series only: no engine to name
    for d in _prom_snapshot(backfilled, names=TGI_NAMES).deployments:
        assert d.engine is None and not [n for n in d.notes if "no metric" in n]


def test_a_window_with_no_traffic_data_reports_everything_missing(backfilled: Any) -> None:
    before = datetime.fromtimestamp(backfilled.export.start_s - 3600, UTC)
    snap = PrometheusSource(backfilled.prom.url).snapshot(window="5m", at=before)
    assert snap.deployments == []


def test_pods_replaced_mid_window_still_count_and_stale_ones_drop_out(backfilled: Any) -> None:
    """rag-search's pods were replaced 8 min before the end: its rates cover old and new pods
    (each counter restarting at 0), its gauges only the pods that exist now."""
    ns, name = backfilled.rolled.split("/")
    at = datetime.fromtimestamp(backfilled.export.end_s, UTC)
    source = PrometheusSource(backfilled.prom.url)
    pods = source.query(f'count(last_over_time(vllm:request_success_total{{namespace="{ns}"}}[15m]))', at=at)
    assert float(pods[0]["value"][1]) == 4  # two old pods (stale now) and two new ones
    prom = _prom_snapshot(backfilled).for_deployment(name, ns)
    sim = SimTelemetrySource(backfilled.sim).snapshot(window="15m").for_deployment(name, ns)
    assert prom is not None and sim is not None and prom.replicas == 2
    assert any("pods came or went within the 15m window (4 pods' series" in n for n in prom.notes), prom.notes
    steady = _prom_snapshot(backfilled).for_deployment("chat-assistant", "chat")
    assert steady is not None and not any("pods came or went" in n for n in steady.notes)
    for signal in ("request_rate_per_s", "generation_tokens_per_s", "ttft_p50_ms", "itl_p50_ms"):
        assert prom.signals[signal] == pytest.approx(sim.signals[signal], rel=0.05), signal
    # A p99 sits in sparse tail buckets, and rate() extrapolates each bucket series that begins or
    # ends inside the window by its own amount: 15 s or up to 33 s (Prometheus' 1.1 x sample-interval
    # cliff). A new pod's le=0.1 and le=+Inf series can thus differ by 5 % more than they counted, and
    # the p99 moves to the next bucket (1.4-1.6 x the twin's at 2 of 48 times of day). Both p99s must
    # still rank between the twin's p98 and its slowest populated bucket.
    twin = _twin_window_histograms(backfilled.sim, backfilled.rolled)
    for signal, hist in (("ttft_p99_ms", "ttft"), ("itl_p99_ms", "itl")):
        low, high = (1000 * histogram_quantile(q, HISTOGRAMS[hist], twin[hist]) for q in (0.98, 1.0))
        assert low <= prom.signals[signal] <= high, (signal, low, prom.signals[signal], high)
    # gauges: the new pods' 6 minutes vs the twin's whole window (same per-pod load, so close)
    for signal in GAUGE_SIGNALS:
        assert prom.signals[signal] == pytest.approx(sim.signals[signal], rel=0.25), signal
    assert backfilled.sim.deployment_state(backfilled.rolled).serving.max_num_seqs == 128
