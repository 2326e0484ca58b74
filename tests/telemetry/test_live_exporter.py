"""`servewise sim serve-metrics` in a subprocess, scraped every second by a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servewise.cluster.sim_scenario import load_scenario
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer, binaries, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def exporter() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "servewise.cli", "sim", "serve-metrics", "--scenario", "demo"]
    cmd += ["--port", str(port), "--speed", "1", "--step", "1s", "--duration", "120"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _running_by_deployment(target: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://{target}/metrics", timeout=5).text
    out: dict[tuple[str, str], float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        if fam.name == "vllm:num_requests_running":
            for s in fam.samples:
                out[(s.labels["namespace"], s.labels["pod"].rsplit("-", 2)[0])] += s.value
    return out


def test_live_scrape_reads_back_every_deployment(exporter: str) -> None:
    binaries()
    scenario = load_scenario("demo")
    expected = {(d.namespace, d.name): scenario.serving_config(d).replicas for d in scenario.deployments}
    with PrometheusServer(scrape=[exporter], scrape_interval="1s") as prom:
        source = PrometheusSource(prom.url)
        deadline = time.monotonic() + 45
        snap = None
        while time.monotonic() < deadline:
            time.sleep(2)
            snap = source.snapshot(window="10s")
            ready = [
                d
                for d in snap.deployments
                if d.signals.get("request_rate_per_s", 0.0) > 0 and "ttft_p50_ms" in d.signals
            ]
            if len(ready) == len(expected):
                break
        assert snap is not None
        got = {(d.namespace, d.deployment): d for d in snap.deployments}
        assert set(got) == set(expected)
        direct = _running_by_deployment(exporter)
    for key, replicas in expected.items():
        d = got[key]
        assert d.replicas == replicas
        # p99s may have no observations yet, and the peak's [1d:5m] subquery no 5-minute mark since the start
        optional = {
            "ttft_p99_ms",
            "e2e_p99_ms",
            "itl_p99_ms",
            "request_rate_peak_per_s",
            "requests_waiting_peak",
        }
        assert set(d.missing) <= optional, d.missing
        assert 0.0 <= d.signals["kv_cache_usage"] <= 1.0
        assert 0.0 <= d.signals["gpu_utilization"] <= 1.0
        assert d.signals["request_rate_per_s"] > 0
        assert d.signals["requests_running"] == pytest.approx(direct[key], rel=0.3), key
