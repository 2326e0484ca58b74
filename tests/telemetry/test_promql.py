from __future__ import annotations

import math

import numpy as np
import pytest

from servewise.domain import SIGNALS
from servewise.errors import InputError
from servewise.telemetry.names import SGLANG_NAMES, TGI_NAMES, VLLM_NAMES, LabelMap
from servewise.telemetry.promql import PEAK_SIGNALS, PromQLBuilder, window_seconds
from servewise.telemetry.sim import histogram_quantile


def test_one_query_per_signal_aggregated_by_deployment() -> None:
    plan = PromQLBuilder(VLLM_NAMES, LabelMap()).plan("15m")
    assert set(plan.queries) == set(SIGNALS)
    for signal, query in plan.queries.items():
        assert "by (namespace, deployment" in query, signal
        if signal == "replicas_available":  # kube-state-metrics' own, per workload
            assert "kube_deployment_status_replicas_available[15m]" in query
            assert "kube_statefulset_status_replicas_ready[15m]" in query
            continue
        assert "kube_pod_owner" in query and "kube_replicaset_owner" in query
        assert "[15m]" in query or signal in PEAK_SIGNALS
    # the busiest 5 minutes of the last day, evaluated every 5 minutes
    peak = plan.queries["request_rate_peak_per_s"]
    assert peak.startswith(
        "max_over_time((sum by (namespace, deployment) ((rate(vllm:request_success_total[5m]))"
    )
    assert peak.endswith("[1d:5m])")
    hit_rate = plan.queries["prefix_cache_hit_rate"]  # cached prompt tokens over those looked up
    assert (
        "rate(vllm:prefix_cache_hits_total[15m])" in hit_rate
        and ") / sum by (namespace, deployment)" in hit_rate
    )
    queue = plan.queries["requests_waiting_peak"]
    assert "avg_over_time(vllm:num_requests_waiting[5m])" in queue and queue.endswith("[1d:5m])")
    assert (
        PromQLBuilder(VLLM_NAMES, LabelMap())
        .plan("15m", "7d")
        .queries["request_rate_peak_per_s"]
        .endswith("[7d:5m])")
    )
    assert "histogram_quantile(0.99, sum by (namespace, deployment, le) (" in plan.queries["ttft_p99_ms"]
    assert "rate(vllm:request_success_total[15m])" in plan.queries["request_rate_per_s"]
    # the new vLLM name, or the old one where a series has no new one (never one regex over both:
    # the function drops the name and two series of one label set make Prometheus refuse the query)
    new, old = "avg_over_time(vllm:kv_cache_usage_perc[15m])", "avg_over_time(vllm:gpu_cache_usage_perc[15m])"
    assert f"({new} or ({old} unless ignoring(le) {new}))" in plan.queries["kv_cache_usage"]
    # buckets of the old name only where the pod has no new one at all (layouts may differ)
    new, old = (
        "rate(vllm:inter_token_latency_seconds_bucket[15m])",
        "rate(vllm:time_per_output_token_seconds_bucket[15m])",
    )
    assert f"({new} or ({old} unless ignoring(le) {new}))" in plan.queries["itl_p99_ms"]
    assert not [q for q in plan.queries.values() if "__name__" in q]


def test_engines_without_a_metric_leave_the_signal_out() -> None:
    tgi = PromQLBuilder(TGI_NAMES, LabelMap()).plan("5m")
    assert "kv_cache_usage" not in tgi.queries and "ttft_p50_ms" not in tgi.queries
    assert "tgi_queue_size" in tgi.queries["requests_waiting"]
    assert "tgi_request_input_length_bucket" in tgi.queries["prompt_len_p99"]
    sgl = PromQLBuilder(SGLANG_NAMES, LabelMap()).plan("5m")
    assert "sglang:num_running_reqs" in sgl.queries["requests_running"]
    assert "prefix_cache_hit_rate" not in tgi.queries  # TGI counts no prefix-cache hits
    # SGLang's length histograms (with --collect-tokens-histogram), retractions and cached tokens
    assert "sglang:prompt_tokens_histogram_bucket" in sgl.queries["prompt_len_p99"]
    assert "sglang:num_retracted_requests_total" in sgl.queries["preemptions_per_s"]
    hits, queries = sgl.queries["prefix_cache_hit_rate"].split(" / ")
    assert "sglang:cached_tokens_total" in hits and "sglang:prompt_tokens_total" in queries


def test_label_fallback_without_kube_state_metrics() -> None:
    labels = LabelMap(deployment="app", dcgm_pod="exported_pod", dcgm_namespace="exported_namespace")
    plan = PromQLBuilder(VLLM_NAMES, labels, use_owners=False).plan("10m")
    assert (
        "label_replace(" in plan.queries["requests_running"] and '"app"' in plan.queries["requests_running"]
    )
    assert "kube_pod_owner" not in plan.queries["requests_running"]
    assert '"exported_pod"' in plan.queries["gpu_utilization"]
    assert plan.replicas_query.startswith("count by (namespace, deployment)")
    with pytest.raises(InputError, match="label_map.deployment"):
        PromQLBuilder(VLLM_NAMES, LabelMap(), use_owners=False)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800)])
def test_windows(text: str, seconds: float) -> None:
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["15", "m", "-5m", "1.5h", "15 m", ""])
def test_bad_windows_name_the_option(bad: str) -> None:
    with pytest.raises(InputError, match="--window"):
        window_seconds(bad)


def test_histogram_quantile_matches_prometheus_rules() -> None:
    bounds = (0.1, 0.5, 1.0)
    # 10 obs <= 0.1, 30 in (0.1, 0.5], 60 in (0.5, 1], none above
    counts = np.array([10, 30, 60, 0])
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.5 + 0.5 * (50 - 40) / 60)
    assert histogram_quantile(0.05, bounds, counts) == pytest.approx(0.05)  # first bucket from 0
    assert histogram_quantile(0.99, bounds, np.array([0, 0, 1, 99])) == 1.0  # +Inf -> top finite bound
    assert math.isnan(histogram_quantile(0.5, bounds, np.zeros(4)))


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("15m", 900), ("1h30m", 5400), ("1y", 31_536_000), ("2w1d", 1_296_000), ("500ms", 0.5)],
)
def test_windows_are_read_as_prometheus_durations(window: str, seconds: float) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["15min", "0s", "1m1h", "m", ""])
def test_a_window_prometheus_would_refuse_names_the_option(window: str) -> None:
    with pytest.raises(InputError, match="PromQL duration") as err:
        window_seconds(window)
    assert err.value.field == "--window"


@pytest.mark.parametrize(("window", "step"), [("15m", "30s"), ("90m", "1m"), ("2d", "5m")])
def test_the_windows_span_is_read_to_a_step_that_fits_its_length(window: str, step: str) -> None:
    """A 5 m step for a 90 m window read a pod 4-6 minutes old as under the 2 minutes a rate needs."""
    import re

    plan = PromQLBuilder(VLLM_NAMES, LabelMap()).plan(window)
    steps = set(re.findall(r"timestamp\([^)]*\)\[\w+:(\w+)\]", str(plan.__dict__)))
    assert steps == {step}
