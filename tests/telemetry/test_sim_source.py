from __future__ import annotations

import numpy as np
import pytest

from servewise.cluster.sim import SimCluster
from servewise.domain import POD_PREFIX, SIGNALS, DeploymentRef
from servewise.domain.histograms import bucket_around, vllm_length_buckets
from servewise.errors import InputError
from servewise.telemetry.sim import SimTelemetrySource

START = 1763899200.0


@pytest.fixture
def twin() -> SimCluster:
    return SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=600)


def test_every_signal_of_every_deployment(twin: SimCluster) -> None:
    snap = SimTelemetrySource(twin).snapshot(window="5m")
    assert snap.source == "sim:demo" and snap.queries == 1 and snap.taken_at == twin.now
    assert len(snap.deployments) == 8
    for d in snap.deployments:
        pods = {k for k in d.signals if k.startswith(POD_PREFIX)}
        assert d.missing == [] and set(d.signals) - pods == set(SIGNALS) and d.notes == []
        assert len(pods) == twin.deployment_state(f"{d.namespace}/{d.deployment}").spec.replicas
        assert all(k.endswith("/requests_running") and d.signals[k] >= 0 for k in pods)
        assert d.signals["ttft_p99_ms"] >= d.signals["ttft_p50_ms"] > 0
        assert 0 <= d.signals["kv_cache_usage"] <= 1 and 0 <= d.signals["gpu_utilization"] <= 1
    support = snap.for_deployment("support-bot", "support")
    legal = snap.for_deployment("legal-summarizer", "legal")
    assert support is not None and legal is not None
    assert support.signals["requests_waiting"] > legal.signals["requests_waiting"]


def test_a_window_longer_than_the_history_says_so(twin: SimCluster) -> None:
    snap = SimTelemetrySource(twin).snapshot(window="1h")
    assert all("covers" in d.notes[0] for d in snap.deployments)
    with pytest.raises(InputError, match="--window"):
        SimTelemetrySource(twin).snapshot(window="an hour")


def test_a_deployment_scaled_to_zero_reports_missing_not_zero(twin: SimCluster) -> None:
    ref = DeploymentRef(name="translate", namespace="i18n")
    twin.apply(ref, twin.get_deployment(ref).config.with_changes(replicas=0), proposal_id="p-zero")
    assert twin.wait_for_rollout(ref).done
    twin.advance(300, persist=False)
    d = SimTelemetrySource(twin).snapshot(window="2m").for_deployment("translate", "i18n")
    assert d is not None and d.replicas == 0
    # no pod, no engine or GPU series; kube-state-metrics does count its 0 available replicas
    assert set(d.missing) == set(SIGNALS) - {"replicas_available"} and d.signals == {
        "replicas_available": 0.0
    }


def test_length_p99s_come_from_the_workloads_lengths_through_vllms_buckets(twin: SimCluster) -> None:
    """The twin's per-request length histograms hold its workloads' lengths: each p99 lies in the
    1-2-5 bucket that holds the distribution's true p99."""
    twin.advance(600, persist=False)
    snap = SimTelemetrySource(twin).snapshot(window="15m")
    rng = np.random.default_rng(1)
    for d in snap.deployments:
        load = twin.specs[f"{d.namespace}/{d.deployment}"].workload
        for signal, dist in (("prompt_len_p99", load.input_len), ("output_len_p99", load.output_len)):
            true_p99 = float(np.percentile(dist.sample(rng, 200_000), 99))
            lower, upper = bucket_around(true_p99, vllm_length_buckets(131072))
            # at the bucket's edge, an interpolated p99 can sit just across it
            assert lower * 0.95 <= d.signals[signal] <= upper * 1.05, (d.deployment, signal, true_p99)
        # their means are the token rates over the request rate
        assert d.signals["prompt_tokens_per_s"] / d.signals["request_rate_per_s"] == pytest.approx(
            load.input_len.mean, rel=0.05
        )


def test_length_buckets_stop_at_the_servers_context(twin: SimCluster) -> None:
    """vLLM builds its length buckets up to max_model_len: a longer p99 reads as the top bound."""
    ref = DeploymentRef(name="legal-summarizer", namespace="legal")
    config = twin.get_deployment(ref).config.with_changes(max_model_len=4096)
    twin.apply(ref, config, proposal_id="p-short")
    assert twin.wait_for_rollout(ref).done
    twin.advance(600, persist=False)
    d = SimTelemetrySource(twin).snapshot(window="5m").for_deployment("legal-summarizer", "legal")
    assert d is not None and d.signals["prompt_len_p99"] == 2000.0  # the last 1-2-5 bound <= 4096


def test_peaks_come_from_the_twins_history_at_five_minute_marks(twin: SimCluster) -> None:
    """Over all the history the twin keeps (its lookback): the busiest 5 minutes of requests, near
    the offered rate then, and the longest queue, long where the offered load exceeds capacity."""
    twin.advance(1800, persist=False)
    snap = SimTelemetrySource(twin).snapshot(window="5m")
    span = twin.history.span_s
    for d in snap.deployments:
        assert d.evidence["request_rate_peak_per_s"].window == f"{round(span)}s"
        assert d.signals["request_rate_peak_per_s"] >= d.signals["request_rate_per_s"]
        assert d.signals["requests_waiting_peak"] >= d.signals["requests_waiting"]
        load = twin.specs[f"{d.namespace}/{d.deployment}"].workload
        offered = max(load.rate_at(t) for t in np.arange(twin.now_s - span, twin.now_s, 30.0))
        # the highest of a few noisy 5-minute counts: above the offered peak by a few sigma at most
        assert d.signals["request_rate_peak_per_s"] <= offered * (1 + 5 / np.sqrt(offered * 300)), (
            d.deployment
        )
    overloaded, keeping_up = (
        snap.for_deployment("support-bot", "support"),
        snap.for_deployment("translate", "i18n"),
    )
    assert overloaded is not None and overloaded.signals["requests_waiting_peak"] > 256
    assert keeping_up is not None and keeping_up.signals["requests_waiting_peak"] < 1


def test_the_prefix_caches_hit_rate_follows_the_shared_prefix(twin: SimCluster) -> None:
    """vLLM counts prompt tokens looked up in the prefix cache and those found: rag-search's
    prompts share 30 %, the others nothing; with caching off there are no lookups (missing)."""
    snap = SimTelemetrySource(twin).snapshot(window="5m")
    rag, chat = snap.for_deployment("rag-search", "search"), snap.for_deployment("chat-assistant", "chat")
    assert rag is not None and rag.signals["prefix_cache_hit_rate"] == pytest.approx(0.3, abs=0.01)
    assert chat is not None and chat.signals["prefix_cache_hit_rate"] == 0.0
    ref = DeploymentRef(name="rag-search", namespace="search")
    twin.apply(
        ref, twin.get_deployment(ref).config.with_changes(enable_prefix_caching=False), proposal_id="p-off"
    )
    assert twin.wait_for_rollout(ref).done
    twin.advance(600, persist=False)
    off = SimTelemetrySource(twin).snapshot(window="5m").for_deployment("rag-search", "search")
    assert off is not None and "prefix_cache_hit_rate" in off.missing
