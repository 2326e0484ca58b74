"""k8s/: every manifest validates against the Kubernetes schema, kustomize lists them all, the example
fleet is discovered without a single unparsed workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_emulator import FaithfulEmulator

from servewise.cluster.kubernetes import KubernetesCluster

K8S = Path(__file__).resolve().parents[2] / "k8s"
KUBE_VERSION = "1.30.0"
# Add-ons that need an operator's CRDs stay out of the base kustomization (`kubectl apply -k k8s/`
# must work on a cluster without KubeRay); their embedded pod templates are validated below.
ADDONS = ("ray",)


def _is_addon(path: Path) -> bool:
    return path.relative_to(K8S).parts[0] in ADDONS


def documents(*, addons: bool = False) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or _is_addon(path) != addons:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((str(path.relative_to(K8S)), doc))
    return out


@pytest.mark.parametrize(
    ("path", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"]
)
def test_manifest_is_valid(path: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_raycluster_pod_templates_are_valid_pods() -> None:
    """KubeRay's CRD schema is not in kubernetes-validate; its pod templates are plain PodSpecs."""
    docs = [doc for _, doc in documents(addons=True) if doc["kind"] == "RayCluster"]
    assert docs, "k8s/ray/ should hold a RayCluster"
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        spec = doc["spec"]
        templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
        for template in templates:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": template["spec"]}
            kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        for group in spec["workerGroupSpecs"]:
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {
        str(p.relative_to(K8S))
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not _is_addon(p)
    }
    assert listed == on_disk
    kinds = {doc["kind"] for _, doc in documents()}
    assert {
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "CronJob",
        "Deployment",
        "Service",
        "NetworkPolicy",
    } <= kinds


def test_example_fleet_is_fully_discovered(emulator: Any, kubeconfig: Path) -> None:
    emu: FaithfulEmulator = emulator.emulator
    for _, doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["namespace"] == "llm-serving":
            emu.seed(doc)
    cluster = KubernetesCluster(context="kmock")
    engines = sorted(d.config.engine.value for d in cluster.list_deployments())
    assert engines == ["sglang", "tgi", "vllm", "vllm", "vllm"]
    assert cluster.list_unparsed() == []


def test_console_and_cronjob_run_the_documented_commands() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in documents()}
    console = docs["Deployment", "servewise-console"]["spec"]["template"]["spec"]["containers"][0]
    assert console["command"] == ["servewise", "console", "serve", "--host", "0.0.0.0", "--port", "8080"]
    cron = docs["CronJob", "servewise-optimize"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "servewise optimize --cluster k8s" in cron["containers"][0]["args"][0]
    assert cron["serviceAccountName"] == "servewise"
