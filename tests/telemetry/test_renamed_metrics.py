"""Engines that export a renamed metric under both names, or only the old one, read from a real Prometheus.

vLLM 0.9-0.11 (``vllm/v1/metrics/loggers.py``) sets ``vllm:gpu_cache_usage_perc`` beside
``vllm:kv_cache_usage_perc`` and observes ``vllm:time_per_output_token_seconds`` beside
``vllm:inter_token_latency_seconds``, with the same labels; older releases export only the old names.
The history below is written by hand (OpenMetrics, backfilled with promtool) so every expected value
is exact: a pod counts once whichever names it exports, and a deployment whose pods run old and new
releases side by side counts every pod.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.domain import TelemetrySnapshot
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S, need_prometheus

pytestmark = pytest.mark.slow
STEP_S = 30
SPAN_S = 1800  # half an hour of history before END_S
BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1)  # vLLM's first inter-token buckets (both names have them)
NS = "apps"


@dataclass
class Pod:
    """One engine pod: which names it exports, its KV usage and its inter-token gaps (``itl_per_s``
    observations per second, all in the bucket ending at ``BOUNDS[itl_bucket]``)."""

    deployment: str
    name: str
    engine: str = "vllm"
    new: bool = True  # exports the new names
    old: bool = False  # exports the old names
    kv: float = 0.5
    itl_per_s: float = 1.0
    itl_bucket: int = 1
    extra: dict[str, float] = field(default_factory=dict)  # more counters: family -> increase per second


NAMES = {  # engine -> (running, requests counter, KV gauge new/old, ITL histogram new/old)
    "vllm": (
        "vllm:num_requests_running",
        "vllm:request_success",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    ),
    "sglang": (
        "sglang:num_running_reqs",
        "sglang:num_requests",
        ("sglang:token_usage", None),
        ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    ),
}
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
]


def _history(pods: list[Pod]) -> str:
    """OpenMetrics of ``pods`` and of kube-state-metrics mapping them to Deployments, one sample
    per ``STEP_S`` over the ``SPAN_S`` before ``END_S``; each family contiguous, each series in time order."""
    stamps = [END_S - SPAN_S + i * STEP_S for i in range(SPAN_S // STEP_S + 1)]
    families: dict[str, tuple[str, list[str]]] = {}

    def add(family: str, kind: str, lines: list[str]) -> None:
        families.setdefault(family, (kind, []))[1].extend(lines)

    for pod in pods:
        running, requests, kv, itl = NAMES[pod.engine]
        labels = f'namespace="{NS}",pod="{pod.name}",model_name="m",engine="0"'
        elapsed = [(t, t - stamps[0]) for t in stamps]
        add(running, "gauge", [f"{running}{{{labels}}} 2 {t:.3f}\n" for t in stamps])
        counters = {requests: 1.0, **pod.extra}
        for family, per_s in counters.items():
            add(
                family, "counter", [f"{family}_total{{{labels}}} {per_s * s:g} {t:.3f}\n" for t, s in elapsed]
            )
        for name, exported in zip(kv, (pod.new, pod.old), strict=True):
            if name and exported:
                add(name, "gauge", [f"{name}{{{labels}}} {pod.kv:g} {t:.3f}\n" for t in stamps])
        mid = (BOUNDS[pod.itl_bucket] + (BOUNDS[pod.itl_bucket - 1] if pod.itl_bucket else 0)) / 2
        for name, exported in zip(itl, (pod.new, pod.old), strict=True):
            if not exported:
                continue
            lines = []
            for t, s in elapsed:  # one point: every bucket, then count and sum
                n = pod.itl_per_s * s
                for i, le in enumerate((*BOUNDS, float("inf"))):
                    bound = "+Inf" if le == float("inf") else f"{le:g}"
                    lines.append(
                        f'{name}_bucket{{{labels},le="{bound}"}} {n if i >= pod.itl_bucket else 0:g} {t:.3f}\n'
                    )
                lines += [
                    f"{name}_count{{{labels}}} {n:g} {t:.3f}\n",
                    f"{name}_sum{{{labels}}} {n * mid:g} {t:.3f}\n",
                ]
            add(name, "histogram", lines)
    for dep in sorted({p.deployment for p in pods}):
        owner = f'namespace="{NS}",replicaset="{dep}-rs",owner_kind="Deployment",owner_name="{dep}"'
        add(
            "kube_replicaset_owner",
            "gauge",
            [f"kube_replicaset_owner{{{owner}}} 1 {t:.3f}\n" for t in stamps],
        )
        replicas = sum(1 for p in pods if p.deployment == dep)
        spec = f'namespace="{NS}",deployment="{dep}"'
        add(
            "kube_deployment_spec_replicas",
            "gauge",
            [f"kube_deployment_spec_replicas{{{spec}}} {replicas} {t:.3f}\n" for t in stamps],
        )
    for pod in pods:
        owner = f'namespace="{NS}",pod="{pod.name}",owner_kind="ReplicaSet",owner_name="{pod.deployment}-rs"'
        add("kube_pod_owner", "gauge", [f"kube_pod_owner{{{owner}}} 1 {t:.3f}\n" for t in stamps])
    text = "".join(f"# TYPE {family} {kind}\n" + "".join(lines) for family, (kind, lines) in families.items())
    return text + "# EOF\n"


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    need_prometheus()
    path = tmp_path_factory.mktemp("renamed") / "renamed.om"
    path.write_text(_history(PODS))
    with PrometheusServer(backfill=[path]) as prom:
        yield prom


def _snapshot(prom: PrometheusServer) -> TelemetrySnapshot:
    return PrometheusSource(prom.url).snapshot(window="15m", at=datetime.fromtimestamp(END_S, UTC))


def _quantile(q: float, pods: list[tuple[float, int]]) -> float:
    """Prometheus' histogram_quantile of the summed per-second observations ``(per_s, bucket)``."""
    total = sum(n for n, _ in pods)
    rank, below = q * total, 0.0
    for i, le in enumerate(BOUNDS):
        inside = sum(n for n, b in pods if b == i)
        if below + inside >= rank:
            low = BOUNDS[i - 1] if i else 0.0
            return low + (le - low) * (rank - below) / inside
        below += inside
    raise AssertionError("beyond the last bucket")


def test_both_names_of_one_pod_count_once_and_old_only_pods_count_too(renamed: PrometheusServer) -> None:
    snap = _snapshot(renamed)
    got = {d.deployment: d for d in snap.deployments}
    assert {name: d.engine for name, d in got.items()} == {
        "mixed": "vllm", "legacy": "vllm", "current": "vllm", "agent": "sglang",
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
    }
    for name, pods in itl.items():
        for signal, q in (("itl_p50_ms", 0.5), ("itl_p99_ms", 0.99)):
            want = 1000 * _quantile(q, pods)
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


class _Exposition(BaseHTTPRequestHandler):
    """``/metrics`` of ``PODS`` now: the history's last point, without timestamps (text format 0.0.4)."""

    text = ""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name)
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def scraped() -> Iterator[PrometheusServer]:
    """A Prometheus scraping ``PODS`` live, so that a command evaluated now (``analyze``) reads them."""
    need_prometheus()
    last = f" {END_S:.3f}\n"
    _Exposition.text = "".join(
        line[: -len(last)] + "\n" if line.endswith(last) else line
        for line in _history(PODS).splitlines(keepends=True)
        if line.startswith("# TYPE") or line.endswith(last)
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PrometheusServer(scrape=[f"127.0.0.1:{server.server_address[1]}"]) as prom:
            source = PrometheusSource(prom.url)
            deadline = time.monotonic() + 30
            while not source.query("count(vllm:gpu_cache_usage_perc) >= 2"):  # both of mixed's pods
                assert time.monotonic() < deadline, prom.log_tail()
                time.sleep(0.5)
            yield prom
    finally:
        server.shutdown()


def test_analyze_reads_a_fleet_that_exports_both_names(scraped: PrometheusServer, home: Path) -> None:
    """``analyze`` exited 2 ("vector cannot contain metrics with the same labelset") on such a fleet."""
    result = CliRunner().invoke(
        app, ["analyze", "--cluster", "sim:demo", "--prometheus", scraped.url, "--window", "5m", "--json"]
    )
    assert result.exit_code == 0, result.output
    snap = PrometheusSource(scraped.url).snapshot(window="5m")
    assert {d.deployment: d.signals["kv_cache_usage"] for d in snap.deployments} == pytest.approx(
        {"mixed": 0.4, "legacy": 0.3, "current": 0.5, "agent": 0.4}
    )
