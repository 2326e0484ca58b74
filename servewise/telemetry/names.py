"""Metric names and labels as the real exporters publish them, per engine.

Checked against the upstream docs (vLLM ``docs/design/metrics.md`` and ``vllm/v1/metrics/loggers.py``,
TGI ``docs/source/reference/metrics.md``, SGLang ``docs/references/production_metrics.md``, NVIDIA
dcgm-exporter ``etc/default-counters.csv``, kube-state-metrics ``docs/metrics``). Where an engine
renamed a metric, the older name is kept as an alternative and read too:

- vLLM ``vllm:gpu_cache_usage_perc`` (v0 and earlier v1) -> ``vllm:kv_cache_usage_perc``
- vLLM ``vllm:time_per_output_token_seconds`` (v0's and v1's inter-token histogram until
  ``vllm:inter_token_latency_seconds`` was added beside it; deprecated since) ->
  ``vllm:inter_token_latency_seconds``
- vLLM ``vllm:gpu_prefix_cache_queries``/``_hits`` (v1, renamed in 0.9) -> ``vllm:prefix_cache_queries``/``_hits``
- SGLang ``sglang:time_per_output_token_seconds`` -> ``sglang:inter_token_latency_seconds``

Alternatives are read as ``f(new[W]) or f(old[W])`` (``PromQLBuilder.each``), per series before
anything is summed or averaged: releases in between export both names with the same labels (vLLM
0.9-0.11 sets both KV gauges and observes both inter-token histograms), which one
``{__name__=~"new|old"}`` under a function would turn into two series of one label set, a query
Prometheus refuses; with ``or`` such a pod counts once, under its new name, and a pod of an older
release under its old name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineNames:
    """Engine metric names; ``None`` means the engine has no such metric (the signal is missing).

    Histograms are named without the ``_bucket`` suffix; counters with their exposed ``_total``.
    """

    engine: str
    running: tuple[str, ...] | None
    waiting: tuple[str, ...] | None
    kv_usage: tuple[str, ...] | None
    requests: tuple[str, ...] | None
    prompt_tokens: tuple[str, ...] | None
    generation_tokens: tuple[str, ...] | None
    preemptions: tuple[str, ...] | None
    ttft: tuple[str, ...] | None
    itl: tuple[str, ...] | None
    e2e: tuple[str, ...] | None
    model_label: str = "model_name"
    prompt_len: tuple[str, ...] | None = None  # per-request prompt-length histogram (tokens)
    output_len: tuple[str, ...] | None = None  # per-request output-length histogram (tokens)
    prefix_hits: tuple[str, ...] | None = None  # prompt tokens found in the prefix cache (counter)
    prefix_queries: tuple[str, ...] | None = None  # prompt tokens looked up in it (counter)


VLLM_NAMES = EngineNames(
    engine="vllm",
    running=("vllm:num_requests_running",),
    waiting=("vllm:num_requests_waiting",),
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    requests=("vllm:request_success_total",),
    prompt_tokens=("vllm:prompt_tokens_total",),
    generation_tokens=("vllm:generation_tokens_total",),
    preemptions=("vllm:num_preemptions_total",),
    ttft=("vllm:time_to_first_token_seconds",),
    itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    e2e=("vllm:e2e_request_latency_seconds",),
    prompt_len=("vllm:request_prompt_tokens",),
    output_len=("vllm:request_generation_tokens",),
    prefix_hits=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    prefix_queries=("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
)

# Hugging Face TGI: no KV-usage gauge, no TTFT histogram, no preemption counter, no prefix-cache
# counters; token counts are the sums of its per-request length histograms.
TGI_NAMES = EngineNames(
    engine="tgi",
    running=("tgi_batch_current_size",),
    waiting=("tgi_queue_size",),
    kv_usage=None,
    requests=("tgi_request_success",),
    prompt_tokens=("tgi_request_input_length_sum",),
    generation_tokens=("tgi_request_generated_tokens_sum",),
    preemptions=None,
    ttft=None,
    itl=("tgi_request_mean_time_per_token_duration",),
    e2e=("tgi_request_duration",),
    model_label="model",
    prompt_len=("tgi_request_input_length",),
    output_len=("tgi_request_generated_tokens",),
)

# SGLang (``python/sglang/srt/metrics/collector.py``): a retraction (a running request evicted when
# the KV pool fills) is vLLM's preemption; ``cached_tokens_total`` counts the prompt tokens its radix
# cache served, over every prompt token. Both series appear at the first retraction or hit, so
# until then the signals are missing, not 0. The per-request length histograms exist only when the
# server runs with ``--collect-tokens-histogram``.
SGLANG_NAMES = EngineNames(
    engine="sglang",
    running=("sglang:num_running_reqs",),
    waiting=("sglang:num_queue_reqs",),
    kv_usage=("sglang:token_usage",),
    requests=("sglang:num_requests_total",),
    prompt_tokens=("sglang:prompt_tokens_total",),
    generation_tokens=("sglang:generation_tokens_total",),
    preemptions=("sglang:num_retracted_requests_total",),
    ttft=("sglang:time_to_first_token_seconds",),
    itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    e2e=("sglang:e2e_request_latency_seconds",),
    prompt_len=("sglang:prompt_tokens_histogram",),
    output_len=("sglang:generation_tokens_histogram",),
    prefix_hits=("sglang:cached_tokens_total",),
    prefix_queries=("sglang:prompt_tokens_total",),
)

ENGINE_NAMES = {n.engine: n for n in (VLLM_NAMES, TGI_NAMES, SGLANG_NAMES)}


@dataclass(frozen=True)
class DcgmNames:
    gpu_util: str = "DCGM_FI_DEV_GPU_UTIL"  # percent 0..100
    fb_used: str = "DCGM_FI_DEV_FB_USED"  # MiB
    dram_active: str = "DCGM_FI_PROF_DRAM_ACTIVE"  # ratio 0..1
    power: str = "DCGM_FI_DEV_POWER_USAGE"  # W


DCGM_NAMES = DcgmNames()


@dataclass(frozen=True)
class KsmNames:
    spec_replicas: str = "kube_deployment_spec_replicas"
    statefulset_replicas: str = "kube_statefulset_replicas"  # desired, label ``statefulset``
    available_replicas: str = "kube_deployment_status_replicas_available"
    statefulset_ready: str = "kube_statefulset_status_replicas_ready"
    pod_info: str = "kube_pod_info"
    pod_owner: str = "kube_pod_owner"
    replicaset_owner: str = "kube_replicaset_owner"
    node_labels: str = "kube_node_labels"


KSM_NAMES = KsmNames()


@dataclass(frozen=True)
class LabelMap:
    """Which labels carry the namespace and pod on engine and GPU series, and (when there are no
    kube-state-metrics owner series) which pod label names the deployment.

    Kubernetes service discovery relabeling usually gives ``namespace`` and ``pod``; a DCGM exporter
    scraped without ``honor_labels`` has them as ``exported_namespace``/``exported_pod``.
    """

    namespace: str = "namespace"
    pod: str = "pod"
    dcgm_namespace: str = "namespace"
    dcgm_pod: str = "pod"
    deployment: str | None = None


DEFAULT_LABELS = LabelMap()
