"""Discovery and node inventory against the emulator over HTTP."""

from __future__ import annotations

import copy

import pytest
from k8s_emulator import FaithfulEmulator

from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import DeploymentRef
from servewise.tools.search_space import available_gpus


def test_discovers_realistic_manifests(cluster: KubernetesCluster) -> None:
    found = {d.ref.key: d for d in cluster.list_deployments()}
    assert set(found) == {
        "llm-serving/llama-8b",
        "llm-serving/llama-70b",
        "llm-serving/qwen-32b-awq",
        "team-a/llama-8b-local",
        "llm-serving/mistral-tgi",
        "llm-serving/qwen-7b-sglang",
    }
    big = found["llm-serving/llama-70b"].config
    assert (big.model, big.gpu, big.tensor_parallel, big.replicas) == ("llama-3.1-70b", "h100-sxm", 4, 2)
    assert big.quantization.kv_cache.value == "fp8"
    assert big.max_num_seqs == 128 and big.gpu_memory_utilization == 0.92 and big.max_model_len == 16384
    assert found["llm-serving/llama-70b"].pool == "h100-pool"
    qwen = found["llm-serving/qwen-32b-awq"]
    assert qwen.ref.kind == "StatefulSet"
    assert (qwen.config.gpu, qwen.config.quantization.method, qwen.config.enable_prefix_caching) == (
        "l40s",
        "awq",
        False,
    )
    shell = found["llm-serving/llama-8b"].config
    assert (shell.gpu, shell.max_num_batched_tokens, shell.max_num_seqs) == ("l4", 1024, 64)
    # GPU type read from the node its pod runs on (no selector in the template).
    assert found["team-a/llama-8b-local"].config.gpu == "a10g"
    assert found["llm-serving/mistral-tgi"].config.engine.value == "tgi"
    assert found["llm-serving/mistral-tgi"].config.model == "mistral-7b"
    assert found["llm-serving/qwen-7b-sglang"].config.gpu_memory_utilization == 0.85


def test_unparsable_workloads_are_reported_with_reasons(cluster: KubernetesCluster) -> None:
    unparsed = {u.name: u.reason for u in cluster.list_unparsed()}
    assert set(unparsed) == {"secret-model", "wrapped-vllm", "llama-70b-short"}
    assert "acme/secret-model-13b" in unparsed["secret-model"] and "catalog" in unparsed["secret-model"]
    assert "cannot locate" in unparsed["wrapped-vllm"]
    assert "requests 2" in unparsed["llama-70b-short"]
    assert "web" not in unparsed  # nginx is not an inference server: neither listed nor unparsed


def test_node_pools_count_free_gpus_and_edge(cluster: KubernetesCluster) -> None:
    pools = {p.name: p for p in cluster.list_node_pools()}
    assert set(pools) == {"h100-pool", "l4-pool", "NVIDIA-A10G"}
    h100 = pools["h100-pool"]
    # 2 nodes x 8; the two llama-70b pods hold 4 each on node 0; the finished pod holds nothing.
    assert (h100.gpu, h100.nodes, h100.gpus_per_node, h100.free_gpus) == ("h100-sxm", 2, 8, 8)
    assert h100.zone == "us-central1-a" and h100.location == "cloud" and h100.price_per_gpu_hour
    assert pools["l4-pool"].gpu == "l4" and pools["l4-pool"].free_gpus == 4
    edge = pools["NVIDIA-A10G"]
    assert (edge.location, edge.free_gpus, edge.zone) == ("edge", 0, "store-17")


def test_get_deployment_reads_one_workload(cluster: KubernetesCluster) -> None:
    dep = cluster.get_deployment(
        DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet")
    )
    assert dep.config.tensor_parallel == 2 and dep.config.replicas == 3
    assert (
        cluster.get_deployment(DeploymentRef(name="llama-70b", namespace="llm-serving")).pool == "h100-pool"
    )


def test_deployments_kserve_makes_are_not_workloads_of_their_own(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """A predictor's Deployment (RawDeployment: owned by the InferenceService; Serverless: by a
    Knative Revision) would be reverted by KServe if patched: only its InferenceService is listed."""
    base = fleet.get("Deployment", "llm-serving", "llama-8b")
    for name, owner in (
        ("llama-isvc-predictor", {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}),
        (
            "llama-isvc-predictor-00001-deployment",
            {"apiVersion": "serving.knative.dev/v1", "kind": "Revision"},
        ),
    ):
        made = {**base, "metadata": {**base["metadata"], "name": name}}
        made["metadata"]["ownerReferences"] = [
            {**owner, "name": "llama-isvc", "uid": "u-1", "controller": True}
        ]
        fleet.seed(made)
    owned_by_someone = {**base, "metadata": {**base["metadata"], "name": "llama-8b-helm"}}
    owned_by_someone["metadata"]["ownerReferences"] = [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "x", "uid": "u-2"}
    ]
    fleet.seed(owned_by_someone)
    keys = {d.ref.key for d in cluster.list_deployments()}
    assert "llm-serving/llama-8b-helm" in keys  # other owners do not hide a workload
    assert (
        not {"llm-serving/llama-isvc-predictor", "llm-serving/llama-isvc-predictor-00001-deployment"} & keys
    )


def test_a_node_pool_that_spans_zones_is_one_pool_per_zone_and_its_deployments_know_which(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """h100-pool's second node moves to another zone: two NodePools, and llama-70b (both pods on
    node 0) is in the zone-a one, so its 8 GPUs are credited back there."""
    moved = fleet.get("Node", None, "gke-h100-1")
    moved["metadata"]["labels"]["topology.kubernetes.io/zone"] = "us-central1-c"
    fleet.put("Node", None, "gke-h100-1", moved)
    pools = {p.name: p for p in cluster.list_node_pools()}
    assert {"h100-pool/us-central1-a", "h100-pool/us-central1-c"} <= set(pools)
    dep = next(d for d in cluster.list_deployments() if d.ref.name == "llama-70b")
    assert dep.pool == "h100-pool/us-central1-a"
    assert cluster.get_deployment(dep.ref).pool == dep.pool
    assert available_gpus(pools[dep.pool], dep) == 0 + 8  # no free GPU there, its own 8
    assert available_gpus(pools["h100-pool/us-central1-c"], dep) == 8


def test_a_node_label_gives_its_pool_a_network_latency(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """``servewise.io/network-latency-ms`` on the nodes: the pool's latency is its slowest node's;
    a value that is not a number of ms is ignored, and said so."""
    labelled = fleet.get("Node", None, "edge-a10g-0")
    labelled["metadata"]["labels"]["servewise.io/network-latency-ms"] = "12.5"
    fleet.put("Node", None, "edge-a10g-0", labelled)
    for name, latency in (("edge-a10g-1", "4"), ("edge-a10g-2", "fast")):
        other = copy.deepcopy(labelled)
        other["metadata"]["name"] = name
        other["metadata"]["labels"]["servewise.io/network-latency-ms"] = latency
        if latency == "fast":
            other["metadata"]["labels"]["topology.kubernetes.io/zone"] = "store-18"
        fleet.seed(other)
    pools = {p.name: p for p in cluster.list_node_pools()}
    assert pools["NVIDIA-A10G/store-17"].network_latency_ms == 12.5
    assert pools["NVIDIA-A10G/store-18"].network_latency_ms == 0.0
    assert "edge-a10g-2: servewise.io/network-latency-ms='fast' is not a latency in ms" in caplog.text
    assert pools["h100-pool"].network_latency_ms == 0.0  # no label: none added
