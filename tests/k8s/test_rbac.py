"""The RBAC in k8s/rbac.yaml allows every API call the adapter makes and grants nothing it never uses.

One emulator records every request while the adapter does all it can do: discover (with KServe),
inventory GPUs, read, dry-run and apply patches to a Deployment, a StatefulSet and an InferenceService,
check a stalled rollout (pods + events), roll back, run a benchmark Job and cancel one on timeout,
benchmark candidates of a Deployment, a StatefulSet (with volume claim templates) and an
InferenceService on temporary copies.
"""

from __future__ import annotations

from pathlib import Path

import kmock
import pytest
import yaml
from k8s_emulator import Call, FaithfulEmulator, statefulset_claims
from test_benchmark import SUMMARY, WORKLOAD, job_controller

from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import BenchmarkRequest, DeploymentRef
from servewise.errors import BackendUnavailableError

RBAC = Path(__file__).resolve().parents[2] / "k8s" / "rbac.yaml"
READ = {"get", "list", "watch"}
ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "llama-isvc", "namespace": "llm-serving"},
    "spec": {
        "predictor": {
            "minReplicas": 1,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "vllm/vllm-openai:v0.10.1",
                    "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8080"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        }
    },
}


def grants() -> list[tuple[str | None, str, str, str]]:
    """(namespace or None for cluster-wide, apiGroup, resource, verb) bound to the servewise SA."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    out = []
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == "servewise" for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role = roles[ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.append((scope, group, resource, verb))
    return out


def allowed(call: Call, rules: list[tuple[str | None, str, str, str]]) -> bool:
    return any(
        (scope is None or scope == call.namespace)
        and (group, resource, verb) == (call.group, call.resource, call.verb)
        for scope, group, resource, verb in rules
    )


def exercise(cluster: KubernetesCluster, emu: FaithfulEmulator) -> None:
    cluster.list_deployments()
    cluster.list_unparsed()
    cluster.list_node_pools()
    big = DeploymentRef(name="llama-70b", namespace="llm-serving")
    sts = DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet")
    isvc = DeploymentRef(name="llama-isvc", namespace="llm-serving", kind="InferenceService")
    for ref in (big, sts, isvc):
        config = cluster.get_deployment(ref).config
        cluster.apply(ref, config.with_changes(max_num_seqs=48), proposal_id=f"rbac-{ref.name}", dry_run=True)
        cluster.apply(ref, config.with_changes(max_num_seqs=48), proposal_id=f"rbac-{ref.name}")
    emu.controls.auto_rollout = False
    cluster.apply(big, cluster.get_deployment(big).config.with_changes(replicas=3), proposal_id="rbac-2")
    assert not cluster.rollout_status(big).done
    cluster.rollback(big)
    cluster.rollback(isvc)  # its record is a ConfigMap: read, created at apply, patched here
    emu.controls.auto_rollout = True  # benchmark copies come up at once
    emu.controls.on_create["jobs"] = job_controller(SUMMARY)
    cluster.run_benchmark(BenchmarkRequest(ref=big, workload=WORKLOAD, deadline_s=10))
    stored = emu.get("StatefulSet", sts.namespace, sts.name)  # with a claim per replica, as model caches are
    stored["spec"]["volumeClaimTemplates"] = [
        {"metadata": {"name": "cache"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    ]
    emu.put("StatefulSet", sts.namespace, sts.name, stored)
    emu.controls.on_create["statefulsets"] = statefulset_claims
    for ref in (big, sts, isvc):  # candidates: a temporary copy of the workload, its Service (and claims)
        candidate = cluster.get_deployment(ref).config.with_changes(max_num_seqs=40)
        cluster.run_benchmark(BenchmarkRequest(ref=ref, config=candidate, workload=WORKLOAD, deadline_s=10))
    emu.controls.on_create["jobs"] = job_controller(SUMMARY, succeed=False)
    with pytest.raises(BackendUnavailableError):
        cluster.run_benchmark(BenchmarkRequest(ref=big, workload=WORKLOAD, deadline_s=0.2))


def test_rbac_allows_exactly_what_the_adapter_calls(fleet: FaithfulEmulator) -> None:
    fleet.resources["serving.kserve.io/v1beta1/inferenceservices"] = kmock.ResourceInfo(namespaced=True)
    fleet.seed(ISVC)
    cluster = KubernetesCluster(context="kmock", allowed_namespaces=["llm-serving"], poll_interval_s=0.05)
    exercise(cluster, fleet)
    rules = grants()
    calls = set(fleet.calls)
    missing = sorted(
        {(c.verb, c.group, c.resource, c.namespace) for c in calls if not allowed(c, rules)}, key=str
    )
    assert missing == [], f"calls the RBAC does not allow: {missing}"
    used = {(c.group, c.resource, c.verb) for c in calls}
    used_resources = {(g, r) for g, r, _ in used}
    unused_resources = sorted({(g, r) for _, g, r, _ in rules} - used_resources)
    assert unused_resources == [], f"RBAC grants resources the code never touches: {unused_resources}"
    unused_writes = sorted({(g, r, v) for _, g, r, v in rules if v not in READ} - used)
    assert unused_writes == [], f"RBAC grants write verbs the code never uses: {unused_writes}"
    # Writes only where they are meant to happen.
    assert {c.namespace for c in calls if c.verb == "patch"} == {"llm-serving"}
    assert {c.namespace for c in calls if c.verb in ("create", "delete") and c.resource != "jobs"} == {
        "llm-serving"
    }
    assert {c.namespace for c in calls if c.resource == "jobs"} == {"servewise-bench"}


def test_a_call_outside_the_rules_would_be_caught() -> None:
    rules = grants()
    assert not allowed(Call("patch", "apps", "deployments", "kube-system"), rules)
    assert not allowed(Call("create", "batch", "jobs", "llm-serving"), rules)
    assert allowed(Call("list", "", "nodes", None), rules)
    assert allowed(Call("patch", "apps", "statefulsets", "llm-serving"), rules)
