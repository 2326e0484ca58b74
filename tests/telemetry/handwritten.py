"""Engine metrics written by hand, for tests whose expected values must be exact: a few pods with
known KV usage, request rates and inter-token gaps, under new names, old names or both, and
kube-state-metrics mapping them to Deployments (or not). ``history`` writes them as OpenMetrics;
``backfilled`` starts a real Prometheus holding them; ``scraped`` serves their last point live to
one, for commands evaluated now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S

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
    ended_s: float = 0  # its engine series stop this long before END_S (the exporter went down)
    old_bounds: tuple[float, ...] | None = None  # the old ITL histogram's own layout (default BOUNDS)


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


def history(pods: list[Pod], *, owners: bool = True) -> str:
    """OpenMetrics of ``pods`` (labelled ``app=<deployment>``) and, with ``owners``, of
    kube-state-metrics mapping them to Deployments: one sample per ``STEP_S`` over the ``SPAN_S``
    before ``END_S``, each family contiguous, each series in time order."""
    stamps = [END_S - SPAN_S + i * STEP_S for i in range(SPAN_S // STEP_S + 1)]
    families: dict[str, tuple[str, list[str]]] = {}

    def add(family: str, kind: str, lines: list[str]) -> None:
        families.setdefault(family, (kind, []))[1].extend(lines)

    for pod in pods:
        running, requests, kv, itl = NAMES[pod.engine]
        labels = f'namespace="{NS}",pod="{pod.name}",app="{pod.deployment}",model_name="m",engine="0"'
        served = [t for t in stamps if t <= END_S - pod.ended_s]
        elapsed = [(t, t - stamps[0]) for t in served]
        add(running, "gauge", [f"{running}{{{labels}}} 2 {t:.3f}\n" for t in served])
        counters = {requests: 1.0, **pod.extra}
        for family, per_s in counters.items():
            add(
                family, "counter", [f"{family}_total{{{labels}}} {per_s * s:g} {t:.3f}\n" for t, s in elapsed]
            )
        for name, exported in zip(kv, (pod.new, pod.old), strict=True):
            if name and exported:
                add(name, "gauge", [f"{name}{{{labels}}} {pod.kv:g} {t:.3f}\n" for t in served])
        mid = (BOUNDS[pod.itl_bucket] + (BOUNDS[pod.itl_bucket - 1] if pod.itl_bucket else 0)) / 2
        for name, exported, layout in zip(
            itl, (pod.new, pod.old), (BOUNDS, pod.old_bounds or BOUNDS), strict=True
        ):
            if not exported:
                continue
            lines = []
            for t, s in elapsed:  # one point: every bucket, then count and sum
                n = pod.itl_per_s * s
                for le in (*layout, float("inf")):
                    bound = "+Inf" if le == float("inf") else f"{le:g}"
                    lines.append(
                        f'{name}_bucket{{{labels},le="{bound}"}} {n if le >= mid else 0:g} {t:.3f}\n'
                    )
                lines += [
                    f"{name}_count{{{labels}}} {n:g} {t:.3f}\n",
                    f"{name}_sum{{{labels}}} {n * mid:g} {t:.3f}\n",
                ]
            add(name, "histogram", lines)
    for dep in sorted({p.deployment for p in pods}) if owners else ():
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
    for pod in pods if owners else ():
        owner = f'namespace="{NS}",pod="{pod.name}",owner_kind="ReplicaSet",owner_name="{pod.deployment}-rs"'
        add("kube_pod_owner", "gauge", [f"kube_pod_owner{{{owner}}} 1 {t:.3f}\n" for t in stamps])
    text = "".join(f"# TYPE {family} {kind}\n" + "".join(lines) for family, (kind, lines) in families.items())
    return text + "# EOF\n"


def quantile(q: float, pods: list[tuple[float, int]]) -> float:
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


class _Exposition(BaseHTTPRequestHandler):
    """``/metrics``: ``text`` in the text format 0.0.4."""

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


@contextmanager
def backfilled(pods: list[Pod], folder: Path, *, owners: bool = True) -> Iterator[PrometheusServer]:
    """A Prometheus whose TSDB holds ``pods``' history (written to ``folder`` and backfilled)."""
    path = folder / "history.om"
    path.write_text(history(pods, owners=owners))
    with PrometheusServer(backfill=[path]) as prom:
        yield prom


@contextmanager
def scraped(pods: list[Pod], *, owners: bool = True) -> Iterator[PrometheusServer]:
    """A Prometheus scraping ``pods`` live (their history's last point, without timestamps), once it
    holds every pod's running-requests series."""
    last = f" {END_S:.3f}\n"
    text = "".join(
        line[: -len(last)] + "\n" if line.endswith(last) else line
        for line in history(pods, owners=owners).splitlines(keepends=True)
        if line.startswith("# TYPE") or line.endswith(last)
    )
    handler = type("Exposition", (_Exposition,), {"text": text})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PrometheusServer(scrape=[f"127.0.0.1:{server.server_address[1]}"]) as prom:
            source = PrometheusSource(prom.url)
            running = " or ".join(f"count by (pod) ({names[0]})" for names in NAMES.values())
            deadline = time.monotonic() + 30
            while not source.query(f"count({running}) >= {len(pods)}"):
                assert time.monotonic() < deadline, prom.log_tail()
                time.sleep(0.5)
            yield prom
    finally:
        server.shutdown()
