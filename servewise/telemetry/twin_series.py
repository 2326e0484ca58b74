"""The twin's current state as the metric families real exporters would publish.

One function builds vLLM, DCGM and kube-state-metrics families from a ``SimCluster``; the live
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

HIST_NAMES = {
    "ttft": ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
    "itl": ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
    "e2e": ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
    "prompt_len": ("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
    "output_len": ("vllm:request_generation_tokens", "Number of generation tokens processed."),
}
COUNTER_NAMES = {  # family name (exposed with _total) -> (LAYOUT counter, help)
    "vllm:request_success": ("requests", "Count of successfully processed requests."),
    "vllm:prompt_tokens": ("prompt_tokens", "Number of prefill tokens processed."),
    "vllm:generation_tokens": ("generation_tokens", "Number of generation tokens processed."),
    "vllm:num_preemptions": ("preemptions", "Cumulative number of preemption from the engine."),
    "vllm:prefix_cache_queries": (
        "prefix_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
    ),
    "vllm:prefix_cache_hits": ("prefix_hits", "Prefix cache hits, in terms of number of cached tokens."),
}


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
        base += (("job", "vllm"), ("instance", f"{pod.ip}:8000"))
    return base + (("engine", "0"),)


def _engine_families(pods: list[PodRuntime], target_labels: bool) -> Iterator[Family]:
    labels = {pod.name: _pod_labels(pod, target_labels) for pod in pods}
    gauges = (
        ("vllm:num_requests_running", "Number of requests in model execution batches.", "running"),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", "waiting"),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "kv_usage"),
    )
    for name, doc, attr in gauges:
        yield Family(name, "gauge", doc, [(name, labels[p.name], float(getattr(p, attr))) for p in pods])
    for name, (counter, doc) in COUNTER_NAMES.items():
        col = LAYOUT.counter[counter]
        yield Family(
            name, "counter", doc, [(name + "_total", labels[p.name], float(p.counters[col])) for p in pods]
        )
    for key, (name, doc) in HIST_NAMES.items():
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
