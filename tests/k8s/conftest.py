"""Fixtures: a faithful kmock emulator over HTTP, a kubeconfig pointing at it, a seeded GPU fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_emulator import EmulatorThread, FaithfulEmulator

from servewise.cluster.kubernetes import KubernetesCluster

MANIFESTS = Path(__file__).parent / "manifests"


def node(name: str, labels: dict[str, str], gpus: str, resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {resource: gpus, "cpu": "96", "memory": "1000Gi"},
            "capacity": {resource: gpus},
        },
    }


def pod(
    name: str, namespace: str, labels: dict[str, str], node_name: str, gpus: str, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        },
        "status": {"phase": "Running", **status},
    }


def seed_fleet(emu: FaithfulEmulator) -> None:
    """Nodes in three pools, the manifest fixtures, and pods of two of them."""
    h100 = {
        "cloud.google.com/gke-nodepool": "h100-pool",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "topology.kubernetes.io/zone": "us-central1-a",
    }
    for i in range(2):
        emu.seed(node(f"gke-h100-{i}", h100, "8"))
    l4 = {
        "cloud.google.com/gke-nodepool": "l4-pool",
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "topology.kubernetes.io/zone": "us-central1-b",
    }
    emu.seed(node("gke-l4-0", l4, "4"))
    edge = {
        "nvidia.com/gpu.product": "NVIDIA-A10G",
        "servewise.io/location": "edge",
        "topology.kubernetes.io/zone": "store-17",
    }
    emu.seed(node("edge-a10g-0", edge, "1"))
    emu.seed(node("cpu-0", {"kubernetes.io/os": "linux"}, "0"))
    for path in sorted(MANIFESTS.glob("*.yaml")):
        emu.seed_file(path)
    emu.seed(pod("llama-8b-local-abc", "team-a", {"app": "llama-8b-local"}, "edge-a10g-0", "1"))
    emu.seed(pod("llama-70b-0", "llm-serving", {"app.kubernetes.io/name": "llama-70b"}, "gke-h100-0", "4"))
    emu.seed(pod("llama-70b-1", "llm-serving", {"app.kubernetes.io/name": "llama-70b"}, "gke-h100-0", "4"))
    emu.seed(pod("old-job", "llm-serving", {"x": "y"}, "gke-h100-1", "8", phase="Succeeded"))
    emu.seed(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "llama-70b", "namespace": "llm-serving"},
            "spec": {
                "selector": {"app.kubernetes.io/name": "llama-70b"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8000}],
            },
        }
    )


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    thread = EmulatorThread().start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def kubeconfig(emulator: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def fleet(emulator: EmulatorThread, kubeconfig: Path) -> FaithfulEmulator:
    seed_fleet(emulator.emulator)
    return emulator.emulator


@pytest.fixture
def cluster(fleet: FaithfulEmulator) -> KubernetesCluster:
    return KubernetesCluster(context="kmock", poll_interval_s=0.05, request_timeout_s=5)
