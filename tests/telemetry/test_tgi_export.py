"""A TGI deployment in the twin is exported under TGI's own names, and a real Prometheus reads it as
TGI: the engine probe finds it, and its signals are the twin's for those TGI publishes.

TGI has no KV-usage, TTFT, preemption or prefix-cache series, and its counters carry no ``_total``;
the twin's inter-token histogram stands in for TGI's per-request mean time per token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servewise.telemetry.exporter import registry_for
from servewise.telemetry.openmetrics import write_history
from servewise.telemetry.prometheus import PrometheusSource
from servewise.telemetry.sim import SimTelemetrySource
from servewise.testing.prometheus import PrometheusServer

from .conftest import History, need_prometheus, scenario_twin

pytestmark = pytest.mark.slow
SCENARIO = {
    "name": "tgi-and-vllm",
    "seed": 5,
    "pools": [{"name": "l40s-pool", "gpu": "l40s", "nodes": 2, "gpus_per_node": 4, "zone": "us-east-1a"}],
    "deployments": [
        {
            "name": "assistant",
            "namespace": "hf",
            "pool": "l40s-pool",
            "config": {"model": "llama-3.1-8b", "engine": "tgi", "replicas": 2, "max_num_seqs": 64},
            "workload": {
                "input_len": {"kind": "lognormal", "mean": 1200, "std": 500, "min": 32, "max": 6000},
                "output_len": {"kind": "lognormal", "mean": 250, "std": 120, "min": 8, "max": 1500},
                "rate_per_s": 1.5,
            },
        },
        {
            "name": "chat",
            "namespace": "apps",
            "pool": "l40s-pool",
            "config": {"model": "llama-3.1-8b", "replicas": 1, "max_num_seqs": 64},
            "workload": {
                "input_len": {"kind": "lognormal", "mean": 800, "std": 300, "min": 32, "max": 4000},
                "output_len": {"kind": "lognormal", "mean": 200, "std": 80, "min": 8, "max": 1000},
                "rate_per_s": 0.8,
            },
        },
    ],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    need_prometheus()
    root = tmp_path_factory.mktemp("tgi")
    sim = scenario_twin(root, SCENARIO, hours=1.0, step_s=30.0)
    export = write_history(sim, root / "tgi.om", hours=1.0, step_s=30.0)
    with PrometheusServer(backfill=[export.path]) as prom:
        yield History(sim, export, prom)


def test_the_twin_exports_tgi_under_tgis_names(fleet: History) -> None:
    text = Path(fleet.export.path).read_text()
    assert "# TYPE tgi_request_success unknown" in text  # a counter without _total: untyped
    assert 'tgi_request_success{namespace="hf",pod="assistant-' in text
    assert 'tgi_request_mean_time_per_token_duration_bucket{namespace="hf",pod="assistant-' in text
    assert 'vllm:num_requests_running{namespace="hf"' not in text
    assert 'vllm:num_requests_running{namespace="apps",pod="chat-' in text
    from prometheus_client import generate_latest

    live = generate_latest(registry_for(fleet.sim)).decode()  # the live exporter: the classic format
    assert "# TYPE tgi_request_success untyped" in live and "tgi_request_success_total" not in live


def test_prometheus_reads_the_tgi_deployment_as_tgi(fleet: History) -> None:
    at = datetime.fromtimestamp(fleet.export.end_s, UTC)
    source = PrometheusSource(fleet.prom.url)
    assert [n.engine for n in source.engines_present("15m", at)] == ["vllm", "tgi"]
    prom = source.snapshot(window="15m", at=at)
    twin = SimTelemetrySource(fleet.sim).snapshot(window="15m")
    got, want = prom.for_deployment("assistant", "hf"), twin.for_deployment("assistant", "hf")
    assert got is not None and want is not None and got.engine == "tgi" and got.replicas == 2
    assert {"kv_cache_usage", "ttft_p99_ms", "preemptions_per_s"} <= set(got.missing)
    for signal in ("request_rate_per_s", "prompt_tokens_per_s", "generation_tokens_per_s"):
        assert got.signals[signal] == pytest.approx(want.signals[signal], rel=0.05), signal
    for signal in ("requests_running", "itl_p99_ms", "prompt_len_p99", "output_len_p99"):
        assert got.signals[signal] == pytest.approx(want.signals[signal], rel=0.25), signal
    assert "tgi_request_mean_time_per_token_duration_bucket" in got.evidence["itl_p99_ms"].query
    chat = prom.for_deployment("chat", "apps")
    assert chat is not None and chat.engine == "vllm" and "kv_cache_usage" in chat.signals
