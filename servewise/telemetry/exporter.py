"""``/metrics`` of the twin with prometheus_client: a custom collector over the twin's state.

``serve_metrics`` starts the HTTP server and advances the twin in real time x ``speed``. Samples
carry no timestamps (Prometheus stamps them at scrape time), so with ``speed`` > 1 the rates a
Prometheus computes are ``speed`` times the twin's own rates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from servewise.cluster.sim import SimCluster
from servewise.telemetry.twin_series import twin_families

log = logging.getLogger(__name__)


class TwinCollector(Collector):
    """Yields the twin's vLLM, DCGM and kube-state-metrics families at each scrape."""

    def __init__(self, sim: SimCluster, lock: threading.Lock) -> None:
        self.sim = sim
        self.lock = lock

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            families = twin_families(self.sim)
        for fam in families:
            metric = Metric(fam.name, fam.help, fam.type)
            for name, labels, value in fam.samples:
                metric.add_sample(name, dict(labels), value)
            yield metric


def registry_for(sim: SimCluster, lock: threading.Lock | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TwinCollector(sim, lock or threading.Lock()))
    return registry


def serve_metrics(
    sim: SimCluster,
    *,
    port: int,
    addr: str = "127.0.0.1",
    speed: float = 1.0,
    tick_s: float = 0.5,
    duration_s: float | None = None,
) -> None:
    """Serve ``/metrics`` on ``addr:port`` and advance the twin until interrupted (or ``duration_s``)."""
    lock = threading.Lock()
    server, thread = start_http_server(port, addr=addr, registry=registry_for(sim, lock))
    log.info("serving the twin's metrics on http://%s:%d/metrics (speed x%g)", addr, port, speed)
    started = last = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(tick_s)
            now = time.monotonic()
            with lock:
                sim.advance((now - last) * speed, persist=False)
            last = now
    finally:
        server.shutdown()
        thread.join(timeout=5)
