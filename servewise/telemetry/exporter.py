"""``/metrics`` of the twin with prometheus_client: a custom collector over the twin's state.

``serve_metrics`` starts the HTTP server and advances the twin in real time x ``speed``. Samples
carry no timestamps (Prometheus stamps them at scrape time), so with ``speed`` > 1 the rates a
Prometheus computes are ``speed`` times the twin's own rates.

The endpoint always answers in the classic text format (0.0.4), as vLLM's own endpoint does in
practice: prometheus_client 0.26 escapes ``:`` to ``_`` in *OpenMetrics* sample names (while
keeping it in ``# TYPE``), which would rename ``vllm:...`` series when Prometheus negotiates
OpenMetrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from servewise.cluster.sim import SimCluster
from servewise.errors import InputError
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


def metrics_server(registry: CollectorRegistry, addr: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering ``GET /metrics`` with ``registry`` in the classic text format."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("metrics: " + format, *args)

    try:
        return ThreadingHTTPServer((addr, port), Handler)
    except (OSError, OverflowError) as exc:  # the port is taken or out of range, or the address not ours
        raise InputError(
            f"cannot listen on {addr}:{port}: {getattr(exc, 'strerror', None) or exc}; pick another --port"
            " (or --addr)",
            field="--port",
        ) from exc


def serve_metrics(
    sim: SimCluster,
    *,
    port: int,
    addr: str = "127.0.0.1",
    speed: float = 1.0,
    tick_s: float = 0.5,
    duration_s: float | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``/metrics`` on ``addr:port`` and advance the twin until interrupted (or ``duration_s``);
    ``on_listening`` is called with the bound port (``port`` 0: the one the system picked)."""
    lock = threading.Lock()
    server = metrics_server(registry_for(sim, lock), addr, port)
    if on_listening is not None:
        on_listening(int(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="twin-metrics")
    thread.start()
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
