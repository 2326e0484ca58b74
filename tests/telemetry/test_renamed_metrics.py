"""Engines that export a renamed metric under both names, or only the old one, read from a real Prometheus.

vLLM 0.9-0.11 (``vllm/v1/metrics/loggers.py``) sets ``vllm:gpu_cache_usage_perc`` beside
``vllm:kv_cache_usage_perc`` and observes ``vllm:time_per_output_token_seconds`` beside
``vllm:inter_token_latency_seconds``, with the same labels; older releases export only the old names.
The series are written by hand (``handwritten``: OpenMetrics backfilled with promtool, or scraped
live) so every expected value is exact: a pod counts once whichever names it exports, and a deployment whose pods run old and new
releases side by side counts every pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.domain import TelemetrySnapshot
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S, need_prometheus
from .handwritten import Pod, backfilled, quantile, scraped

pytestmark = pytest.mark.slow


# prompt tokens looked up in the prefix cache and found there, per second: vLLM's counters before
# 0.9 (``vllm:gpu_prefix_cache_*``) and since (``vllm:prefix_cache_*``)
OLD_PREFIX = ("vllm:gpu_prefix_cache_queries", "vllm:gpu_prefix_cache_hits")
NEW_PREFIX = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")


def _prefix(names: tuple[str, str], queries: float, hits: float) -> dict[str, float]:
    return dict(zip(names, (queries, hits), strict=True))


PODS = [
    # vLLM 0.10 beside vLLM 0.8 in one deployment: the new pod exports both names
    Pod(
        "mixed",
        "mixed-a",
        old=True,
        kv=0.6,
        itl_per_s=3.0,
        itl_bucket=1,
        extra=_prefix(NEW_PREFIX, 1000, 500) | _prefix(OLD_PREFIX, 1000, 500),
    ),
    Pod(
        "mixed",
        "mixed-b",
        new=False,
        old=True,
        kv=0.2,
        itl_per_s=1.0,
        itl_bucket=3,
        extra=_prefix(OLD_PREFIX, 1000, 250),
    ),
    Pod(
        "legacy",
        "legacy-a",
        new=False,
        old=True,
        kv=0.3,
        itl_per_s=2.0,
        itl_bucket=2,
        extra=_prefix(OLD_PREFIX, 1000, 250),
    ),
    Pod("current", "current-a", kv=0.5, itl_per_s=2.0, itl_bucket=2, extra=_prefix(NEW_PREFIX, 1000, 800)),
    Pod("agent", "agent-a", engine="sglang", old=True, kv=0.4, itl_per_s=3.0, itl_bucket=1),
    Pod("agent", "agent-b", engine="sglang", new=False, old=True, kv=0.2, itl_per_s=1.0, itl_bucket=3),
    # an SGLang whose two inter-token histograms have different bucket layouts: the old one's
    # buckets must not join the new one's (``or`` matched label sets with ``le``, and the old
    # layout's 40 ms bound moved the p50 of gaps in (25, 50] ms from 37.5 to 32.5 ms)
    Pod(
        "agent2",
        "agent2-a",
        engine="sglang",
        old=True,
        kv=0.4,
        itl_per_s=2.0,
        itl_bucket=2,
        old_bounds=(0.005, 0.04, 0.07, 0.09, 0.1),
    ),
]


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    need_prometheus()
    with backfilled(PODS, tmp_path_factory.mktemp("renamed")) as prom:
        yield prom


def _snapshot(prom: PrometheusServer) -> TelemetrySnapshot:
    return PrometheusSource(prom.url).snapshot(window="15m", at=datetime.fromtimestamp(END_S, UTC))


def test_both_names_of_one_pod_count_once_and_old_only_pods_count_too(renamed: PrometheusServer) -> None:
    snap = _snapshot(renamed)
    got = {d.deployment: d for d in snap.deployments}
    assert {name: d.engine for name, d in got.items()} == {
        "mixed": "vllm", "legacy": "vllm", "current": "vllm", "agent": "sglang", "agent2": "sglang",
    }  # fmt: skip
    # KV usage, the mean over pods: mixed-a once (not 0.467, its two names averaged in as two pods;
    # not 0.6, mixed-b's old name dropped)
    expected_kv = {
        "mixed": 0.4,
        "legacy": 0.3,
        "current": 0.5,
        "agent": 0.4,
    }  # agent-b: SGLang never renamed it
    for name, kv in expected_kv.items():
        assert got[name].signals["kv_cache_usage"] == pytest.approx(kv, rel=1e-6), name
    # inter-token quantiles of the summed histograms: each pod's observations once
    itl = {
        "mixed": [(3.0, 1), (1.0, 3)],
        "legacy": [(2.0, 2)],
        "current": [(2.0, 2)],
        "agent": [(3.0, 1), (1.0, 3)],
        "agent2": [(2.0, 2)],
    }
    for name, pods in itl.items():
        for signal, q in (("itl_p50_ms", 0.5), ("itl_p99_ms", 0.99)):
            want = 1000 * quantile(q, pods)
            assert got[name].signals[signal] == pytest.approx(want, rel=1e-3), (name, signal)
        assert got[name].signals["request_rate_per_s"] == pytest.approx(len(pods), rel=0.02), name
    assert got["mixed"].replicas == 2 and got["mixed"].signals["itl_p50_ms"] == pytest.approx(20.0, rel=1e-3)


def test_vllms_older_prefix_cache_counters_are_read_too(renamed: PrometheusServer) -> None:
    """``vllm:gpu_prefix_cache_hits``/``_queries`` (before 0.9): cached over looked-up prompt tokens,
    a pod that exports both names counted once."""
    got = {d.deployment: d for d in _snapshot(renamed).deployments}
    # mixed: (500 + 250) / (1000 + 1000), not 0.5 (mixed-b's old counters dropped) nor (1000 + 250) / 3000
    for name, rate in (("mixed", 0.375), ("legacy", 0.25), ("current", 0.8)):
        assert got[name].signals["prefix_cache_hit_rate"] == pytest.approx(rate, rel=1e-6), name
    assert "vllm:gpu_prefix_cache_hits_total" in got["legacy"].evidence["prefix_cache_hit_rate"].query


@pytest.fixture(scope="module")
def live() -> Iterator[PrometheusServer]:
    need_prometheus()
    with scraped(PODS) as prom:
        yield prom


def test_analyze_reads_a_fleet_that_exports_both_names(live: PrometheusServer, home: Path) -> None:
    """``analyze`` exited 2 ("vector cannot contain metrics with the same labelset") on such a fleet."""
    result = CliRunner().invoke(
        app, ["analyze", "--cluster", "sim:demo", "--prometheus", live.url, "--window", "5m", "--json"]
    )
    assert result.exit_code == 0, result.output
    snap = PrometheusSource(live.url).snapshot(window="5m")
    assert {d.deployment: d.signals["kv_cache_usage"] for d in snap.deployments} == pytest.approx(
        {"mixed": 0.4, "legacy": 0.3, "current": 0.5, "agent": 0.4, "agent2": 0.4}
    )
