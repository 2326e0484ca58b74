"""GPU node pools from Node objects: pool label, GPU type, allocatable and free GPUs, zone, edge,
network latency."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from servewise.cluster.k8s_parsing import GPU_RESOURCES, Resolver, gpu_from_node_labels, pod_template
from servewise.domain import NodePool
from servewise.errors import UnknownIdError

log = logging.getLogger(__name__)

POOL_LABELS = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "karpenter.sh/nodepool",
    "agentpool",
    "kubernetes.azure.com/agentpool",
)
ZONE_LABEL = "topology.kubernetes.io/zone"
LOCATION_LABEL = "servewise.io/location"
LATENCY_LABEL = "servewise.io/network-latency-ms"  # users to the node: added to TTFT (edge pools)
_DONE_PHASES = {"Succeeded", "Failed"}


def pool_of_node(labels: Mapping[str, str]) -> str | None:
    """The pool a node belongs to: its node-pool label, else its GPU product."""
    for label in POOL_LABELS:
        if labels.get(label):
            return str(labels[label])
    found = gpu_from_node_labels(labels)
    return found[1] if found else None


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _gpus(resources: Mapping[str, Any] | None) -> int:
    resources = resources or {}
    return sum(_quantity(resources.get(r)) for r in GPU_RESOURCES if r in resources)


def pod_gpu_requests(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds: the sum over containers (limits count when requests are absent, as for GPUs)."""
    total = 0
    for container in pod.get("spec", {}).get("containers") or []:
        res = container.get("resources") or {}
        total += _gpus(res.get("requests")) or _gpus(res.get("limits"))
    return total


def _gpu_nodes(
    nodes: Sequence[Mapping[str, Any]], resolver: Resolver
) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """GPU nodes (allocatable GPUs of a catalog type) grouped by (pool label, GPU id, zone)."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for node in nodes:
        labels = node.get("metadata", {}).get("labels") or {}
        allocatable = _gpus(node.get("status", {}).get("allocatable"))
        found = gpu_from_node_labels(labels)
        if allocatable == 0 or found is None:
            continue
        try:
            gpu = resolver.gpu(found[1]).id
        except UnknownIdError:
            log.warning(
                "node %s: GPU %r (%s) is not in the catalog; skipped",
                node["metadata"].get("name"),
                found[1],
                found[0],
            )
            continue
        pool = pool_of_node(labels) or gpu
        groups.setdefault((pool, gpu, str(labels.get(ZONE_LABEL, ""))), []).append(node)
    return groups


def _pool_name(key: tuple[str, str, str], keys: Sequence[tuple[str, str, str]]) -> str:
    """The pool label, with the zone when the node pool spans zones (``gpu-pool/us-east-1a``) and the
    GPU when it spans GPU types (``gpu-pool/l4``): one NodePool per zone and GPU type."""
    pool, gpu, zone = key
    same = [k for k in keys if k[0] == pool]
    parts = [pool]
    if len({k[2] for k in same}) > 1:
        parts.append(zone or "no-zone")
    if len({k[1] for k in same}) > 1:
        parts.append(gpu)
    return "/".join(parts)


def pool_names(nodes: Sequence[Mapping[str, Any]], resolver: Resolver) -> dict[str, str]:
    """Each GPU node's pool as ``node_pools`` names it (a deployment's pool is its nodes')."""
    groups = _gpu_nodes(nodes, resolver)
    return {
        str(n["metadata"]["name"]): _pool_name(key, list(groups))
        for key, members in groups.items()
        for n in members
    }


def _network_latency_ms(node: Mapping[str, Any]) -> float:
    """The node's ``servewise.io/network-latency-ms`` label (users to the node), 0 when absent or bad."""
    labels = node.get("metadata", {}).get("labels") or {}
    raw = labels.get(LATENCY_LABEL)
    if raw is None:
        return 0.0
    try:
        value = float(str(raw))
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        log.warning(
            "node %s: %s=%r is not a latency in ms; ignored", node["metadata"].get("name"), LATENCY_LABEL, raw
        )
        return 0.0
    return value


def node_pools(
    nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]], resolver: Resolver
) -> list[NodePool]:
    used: dict[str, int] = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if node and pod.get("status", {}).get("phase") not in _DONE_PHASES:
            used[str(node)] = used.get(str(node), 0) + pod_gpu_requests(pod)

    groups = _gpu_nodes(nodes, resolver)
    out: list[NodePool] = []
    for (pool, gpu, zone), members in sorted(groups.items()):
        per_node = [_gpus(n.get("status", {}).get("allocatable")) for n in members]
        free = sum(
            max(0, a - used.get(str(n["metadata"]["name"]), 0))
            for a, n in zip(per_node, members, strict=True)
        )
        edge = any((n.get("metadata", {}).get("labels") or {}).get(LOCATION_LABEL) == "edge" for n in members)
        out.append(
            NodePool(
                name=_pool_name((pool, gpu, zone), list(groups)),
                gpu=gpu,
                nodes=len(members),
                gpus_per_node=max(per_node),
                free_gpus=free,
                zone=zone,
                location="edge" if edge else "cloud",
                price_per_gpu_hour=resolver.gpu(gpu).price_per_gpu_hour,
                network_latency_ms=max(_network_latency_ms(n) for n in members),  # its slowest node's
            )
        )
    return out


def node_names_of(obj: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Nodes running the pods of a workload (pods in its namespace carrying its template's labels)."""
    ns = obj.get("metadata", {}).get("namespace", "default")
    want = dict(pod_template(obj).get("metadata", {}).get("labels") or {})
    if not want:
        return []
    out = set()
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        if meta.get("namespace") == ns and all(labels.get(k) == v for k, v in want.items()):
            node = pod.get("spec", {}).get("nodeName")
            if node:
                out.add(str(node))
    return sorted(out)
