"""Pods of the twin: names as Kubernetes makes them, placement on nodes, per-pod runtime values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from servewise.cluster.sim_metrics import LAYOUT
from servewise.cluster.sim_scenario import PoolSpec
from servewise.domain import ServingConfig

_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated name suffixes


def _suffix(seed: str, n: int) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:n])


def template_hash(config: ServingConfig, pool: str) -> str:
    """A pod-template-hash: changes whenever the pod spec (config or pool) changes."""
    return _suffix(config.model_dump_json() + pool, 10)


@dataclass
class PodRuntime:
    """One serving pod and its latest measured values (gauges) and cumulative counters."""

    name: str
    namespace: str
    deployment: str
    replicaset: str
    pool: str
    node: str
    ip: str
    config: ServingConfig
    started_at_s: float
    gpus: list[tuple[str, int]] = field(default_factory=list)  # (node, index on node)
    counters: np.ndarray = field(default_factory=lambda: np.zeros(LAYOUT.size))
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    gpu_util: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fb_used_mib: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dram_active: np.ndarray = field(default_factory=lambda: np.zeros(0))
    power_w: np.ndarray = field(default_factory=lambda: np.zeros(0))


def make_pods(
    namespace: str, deployment: str, config: ServingConfig, pool: str, started_at_s: float
) -> list[PodRuntime]:
    rs = f"{deployment}-{template_hash(config, pool)}"
    pods = []
    for i in range(config.replicas):
        name = f"{rs}-{_suffix(f'{rs}/{i}', 5)}"
        ip_bytes = hashlib.sha256(name.encode()).digest()
        ip = f"10.{ip_bytes[0] % 250}.{ip_bytes[1]}.{ip_bytes[2] % 250 + 2}"
        pods.append(
            PodRuntime(
                name=name,
                namespace=namespace,
                deployment=deployment,
                replicaset=rs,
                pool=pool,
                node="",
                ip=ip,
                config=config,
                started_at_s=started_at_s,
            )
        )
    return pods


def node_names(pool: PoolSpec) -> list[str]:
    return [f"{pool.name}-{i:03d}" for i in range(pool.nodes)]


def place(pool: PoolSpec, pods: list[PodRuntime]) -> None:
    """Pack pods onto the pool's nodes in order (first fit; a replica wider than a node spans
    several nodes and its ``node`` is the first). Pods that do not fit keep node ''."""
    nodes = node_names(pool)
    free = [pool.gpus_per_node] * len(nodes)
    for pod in pods:
        need = pod.config.gpus_per_replica
        pod.node, pod.gpus = "", []
        if need > pool.gpus_per_node:
            span = -(-need // pool.gpus_per_node)
            for start in range(0, len(nodes) - span + 1):
                if all(free[start + k] == pool.gpus_per_node for k in range(span)):
                    for k in range(span):
                        free[start + k] = 0
                    pod.node = nodes[start]
                    pod.gpus = [
                        (nodes[start + j // pool.gpus_per_node], j % pool.gpus_per_node) for j in range(need)
                    ]
                    break
            continue
        for n, left in enumerate(free):
            if left >= need:
                first = pool.gpus_per_node - left
                pod.node, pod.gpus = nodes[n], [(nodes[n], first + j) for j in range(need)]
                free[n] -= need
                break
