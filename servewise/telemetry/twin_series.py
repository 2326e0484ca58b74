"""The twin's current state as the metric families real exporters would publish.

One function builds engine (vLLM's, SGLang's or TGI's names, by each deployment's engine), DCGM and
kube-state-metrics families from a ``SimCluster``; the live
``/metrics`` exporter and the OpenMetrics history writer both use it, so they can never disagree.
Engine and GPU series carry ``namespace`` and ``pod`` as Kubernetes service discovery gives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_engine import stable_seed
from servewise.cluster.sim_metrics import (
    HISTOGRAMS,
    LAYOUT,
    LENGTH_BUCKETS,
    LENGTH_COUNTERS,
    fold_length_bins,
)
from servewise.cluster.sim_pods import PodRuntime, node_names
from servewise.perf.catalog import get_catalog
from servewise.telemetry.names import DCGM_NAMES, KSM_NAMES

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EngineExport:
    """The names one engine exports the twin's series under: gauges (name, help, pod attribute),
    counters (family exposed with ``_total`` -> LAYOUT counter, help) and histograms (LAYOUT
    histogram -> name, help). ``sparse`` counters have no series until their first increment."""

    job: str
    gauges: tuple[tuple[str, str, str], ...]
    counters: dict[str, tuple[str, str]]
    histograms: dict[str, tuple[str, str]]
    sparse: frozenset[str] = frozenset()
    counter_suffix: str = "_total"  # "": a counter exposed under its own name (untyped in OpenMetrics)


VLLM_EXPORT = EngineExport(
    job="vllm",
    gauges=(
        ("vllm:num_requests_running", "Number of requests in model execution batches.", "running"),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", "waiting"),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "kv_usage"),
    ),
    counters={
        "vllm:request_success": ("requests", "Count of successfully processed requests."),
        "vllm:prompt_tokens": ("prompt_tokens", "Number of prefill tokens processed."),
        "vllm:generation_tokens": ("generation_tokens", "Number of generation tokens processed."),
        "vllm:num_preemptions": ("preemptions", "Cumulative number of preemption from the engine."),
        "vllm:prefix_cache_queries": (
            "prefix_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        ),
        "vllm:prefix_cache_hits": ("prefix_hits", "Prefix cache hits, in terms of number of cached tokens."),
    },
    histograms={
        "ttft": ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
        "itl": ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
        "e2e": ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
        "prompt_len": ("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
        "output_len": ("vllm:request_generation_tokens", "Number of generation tokens processed."),
    },
)
# SGLang as launched with --enable-metrics --collect-tokens-histogram; its histograms keep the
# twin's (vLLM's) bucket bounds. Its prefix cache counts cached prompt tokens over all prompt tokens;
# the cached-token and retraction series appear at the first hit and retraction, as SGLang's do.
SGLANG_EXPORT = EngineExport(
    job="sglang",
    gauges=(
        ("sglang:num_running_reqs", "The number of running requests.", "running"),
        ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", "waiting"),
        ("sglang:token_usage", "The token usage.", "kv_usage"),
    ),
    counters={
        "sglang:num_requests": ("requests", "Number of requests processed."),
        "sglang:prompt_tokens": ("prompt_tokens", "Number of prefill tokens processed."),
        "sglang:generation_tokens": ("generation_tokens", "Number of generation tokens processed."),
        "sglang:num_retracted_requests": ("preemptions", "Total number of retracted requests."),
        "sglang:cached_tokens": ("prefix_hits", "Number of cached prompt tokens."),
    },
    histograms={
        "ttft": ("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
        "itl": ("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
        "e2e": ("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds"),
        "prompt_len": ("sglang:prompt_tokens_histogram", "Histogram of prompt token length."),
        "output_len": ("sglang:generation_tokens_histogram", "Histogram of generation token length."),
    },
    sparse=frozenset({"sglang:cached_tokens", "sglang:num_retracted_requests"}),
)
# Hugging Face TGI (``router/src/server.rs``): no KV-usage, TTFT, preemption or prefix-cache
# series; its Rust exporter types its counters ``counter`` but names their samples without
# ``_total``, which OpenMetrics (the backfill's format) forbids, so the twin declares them untyped
# (``unknown``): Prometheus reads the same series either way. Its time per token
# is each request's mean, where the twin keeps every gap between tokens: the twin's inter-token
# histogram stands in for it (its p99 reads higher than TGI's would for the same server).
TGI_EXPORT = EngineExport(
    job="tgi",
    gauges=(
        ("tgi_batch_current_size", "Current batch size.", "running"),
        ("tgi_queue_size", "Current queue size.", "waiting"),
    ),
    counters={"tgi_request_success": ("requests", "Number of successful requests.")},
    histograms={
        "itl": ("tgi_request_mean_time_per_token_duration", "Mean time per token per request (seconds)."),
        "e2e": ("tgi_request_duration", "Request duration (seconds)."),
        "prompt_len": ("tgi_request_input_length", "Input length per request (tokens)."),
        "output_len": ("tgi_request_generated_tokens", "Generated tokens per request."),
    },
    counter_suffix="",
)
ENGINE_EXPORTS = {"vllm": VLLM_EXPORT, "sglang": SGLANG_EXPORT, "tgi": TGI_EXPORT}


def engine_export(engine: str) -> EngineExport:
    return ENGINE_EXPORTS.get(engine, VLLM_EXPORT)


@dataclass
class Family:
    """A metric family: ``samples`` are (sample name, labels, value)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)


def _fmt_le(bound: float) -> str:
    return repr(float(bound))


LE_LABELS = {name: [_fmt_le(b) for b in bounds] + ["+Inf"] for name, bounds in HISTOGRAMS.items()}
LENGTH_LES = [_fmt_le(b) for b in LENGTH_BUCKETS]  # cut at each pod's context, then +Inf


def twin_families(sim: SimCluster, *, target_labels: bool = False) -> list[Family]:
    """All families of the twin at its current time. ``target_labels`` adds ``job``/``instance``
    as a scrape would (for backfilled history; a live exporter lets Prometheus add them)."""
    pods = sim.all_pods()
    return [*_engine_families(pods, target_labels), *_dcgm_families(pods), *_ksm_families(sim, pods)]


def _pod_labels(pod: PodRuntime, target_labels: bool) -> Labels:
    base: Labels = (("namespace", pod.namespace), ("pod", pod.name), ("model_name", pod.config.model))
    if target_labels:
        job = engine_export(pod.config.engine.value).job
        base += (("job", job), ("instance", f"{pod.ip}:8000"))
    return base + (("engine", "0"),)


def _engine_families(pods: list[PodRuntime], target_labels: bool) -> Iterator[Family]:
    """Each pod's series under its engine's names (one family per name, as exporters publish)."""
    labels = {pod.name: _pod_labels(pod, target_labels) for pod in pods}
    by_export: dict[str, list[PodRuntime]] = {}
    for pod in pods:
        by_export.setdefault(engine_export(pod.config.engine.value).job, []).append(pod)
    for job, members in by_export.items():
        yield from _export_families(ENGINE_EXPORTS[job], members, labels)


def _export_families(
    export: EngineExport, pods: list[PodRuntime], labels: dict[str, Labels]
) -> Iterator[Family]:
    for name, doc, attr in export.gauges:  # a queue drained to 1e-94 by the fluid model reads 0
        values = [(p, float(getattr(p, attr))) for p in pods]
        yield Family(
            name, "gauge", doc, [(name, labels[p.name], v if abs(v) >= 1e-9 else 0.0) for p, v in values]
        )
    for name, (counter, doc) in export.counters.items():
        col = LAYOUT.counter[counter]
        values = [(p, float(p.counters[col])) for p in pods]
        if name in export.sparse:
            values = [(p, v) for p, v in values if v > 0]
        kind = "counter" if export.counter_suffix == "_total" else "unknown"
        sample = name + export.counter_suffix
        yield Family(name, kind, doc, [(sample, labels[p.name], v) for p, v in values])
    for key, (name, doc) in export.histograms.items():
        fam = Family(name, "histogram", doc)
        for p in pods:
            bins = p.counters[LAYOUT.bins[key]]
            if key in LENGTH_COUNTERS:  # bounds up to the server's context, as vLLM builds them
                bounds, bins = fold_length_bins(bins, get_catalog().served_context(p.config))
                les = [*LENGTH_LES[: len(bounds)], "+Inf"]
                total = float(p.counters[LAYOUT.counter[LENGTH_COUNTERS[key]]])
            else:
                les, total = LE_LABELS[key], float(p.counters[LAYOUT.sums[key]])
            cum = np.cumsum(bins)
            lab = labels[p.name]
            for le, value in zip(les, cum, strict=True):
                fam.samples.append((name + "_bucket", (*lab, ("le", le)), float(value)))
            fam.samples.append((name + "_count", lab, float(cum[-1])))
            fam.samples.append((name + "_sum", lab, total))
        yield fam


def _dcgm_families(pods: list[PodRuntime]) -> Iterator[Family]:
    catalog = get_catalog()
    specs = (
        (DCGM_NAMES.gpu_util, "GPU utilization (in %).", "gpu_util", 100.0),
        (DCGM_NAMES.fb_used, "Framebuffer memory used (in MiB).", "fb_used_mib", 1.0),
        (
            DCGM_NAMES.dram_active,
            "Ratio of cycles the device memory interface is active.",
            "dram_active",
            1.0,
        ),
        (DCGM_NAMES.power, "Power draw (in W).", "power_w", 1.0),
    )
    gpu_labels: list[tuple[PodRuntime, int, Labels]] = []
    for pod in pods:
        model_name = catalog.gpu(pod.config.gpu).name
        for j, (node, index) in enumerate(pod.gpus):
            uuid = f"GPU-{stable_seed(node, index) % 10**12:012d}"
            gpu_labels.append(
                (
                    pod,
                    j,
                    (
                        ("gpu", str(index)),
                        ("UUID", uuid),
                        ("device", f"nvidia{index}"),
                        ("modelName", model_name),
                        ("Hostname", node),
                        ("container", "vllm"),
                        ("namespace", pod.namespace),
                        ("pod", pod.name),
                    ),  # fmt: skip
                )
            )
    for name, doc, attr, scale in specs:
        fam = Family(name, "gauge", doc)
        for pod, j, lab in gpu_labels:
            values = getattr(pod, attr)
            if j < len(values):
                fam.samples.append((name, lab, float(values[j]) * scale))
        yield fam


def _ksm_families(sim: SimCluster, pods: list[PodRuntime]) -> Iterator[Family]:
    k = KSM_NAMES
    spec = Family(k.spec_replicas, "gauge", "Number of desired pods for a deployment.")
    avail = Family(k.available_replicas, "gauge", "The number of available replicas per deployment.")
    for dep in sim.state.deployments:
        lab: Labels = (("namespace", dep.namespace), ("deployment", dep.name))
        spec.samples.append((k.spec_replicas, lab, float(dep.spec.replicas)))
        avail.samples.append((k.available_replicas, lab, float(len(sim.pods[dep.key]))))
    info = Family(k.pod_info, "gauge", "Information about pod.")
    owner = Family(k.pod_owner, "gauge", "Information about the Pod's owner.")
    rs_owner = Family(k.replicaset_owner, "gauge", "Information about the ReplicaSet's owner.")
    seen_rs: set[tuple[str, str]] = set()
    for p in pods:
        info.samples.append(
            (
                k.pod_info,
                (
                    ("namespace", p.namespace),
                    ("pod", p.name),
                    ("node", p.node),
                    ("pod_ip", p.ip),
                    ("created_by_kind", "ReplicaSet"),
                    ("created_by_name", p.replicaset),
                ),  # fmt: skip
                1.0,
            )
        )
        owner.samples.append(
            (
                k.pod_owner,
                (
                    ("namespace", p.namespace),
                    ("pod", p.name),
                    ("owner_kind", "ReplicaSet"),
                    ("owner_name", p.replicaset),
                    ("owner_is_controller", "true"),
                ),  # fmt: skip
                1.0,
            )
        )
        if (p.namespace, p.replicaset) not in seen_rs:
            seen_rs.add((p.namespace, p.replicaset))
            rs_owner.samples.append(
                (
                    k.replicaset_owner,
                    (
                        ("namespace", p.namespace),
                        ("replicaset", p.replicaset),
                        ("owner_kind", "Deployment"),
                        ("owner_name", p.deployment),
                        ("owner_is_controller", "true"),
                    ),  # fmt: skip
                    1.0,
                )
            )
    nodes = Family(k.node_labels, "gauge", "Kubernetes labels converted to Prometheus labels.")
    catalog = get_catalog()
    for pool in sim.scenario.pools:
        product = catalog.gpu(pool.gpu).name.replace(" ", "-")
        for node in node_names(pool):
            nodes.samples.append(
                (
                    k.node_labels,
                    (
                        ("node", node),
                        ("label_nvidia_com_gpu_product", product),
                        ("label_topology_kubernetes_io_zone", pool.zone),
                        ("label_servewise_io_pool", pool.name),
                        ("label_servewise_io_location", pool.location),
                    ),  # fmt: skip
                    1.0,
                )
            )
    yield from (spec, avail, info, owner, rs_owner, nodes)
