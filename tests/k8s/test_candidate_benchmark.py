"""Benchmarking a candidate config on the cluster: a temporary copy of the workload, its own Service,
the benchmark Job against it, and nothing left behind (the real client over HTTP, the emulator)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from k8s_emulator import FaithfulEmulator
from test_benchmark import SUMMARY, WORKLOAD, job_controller

from servewise.cluster.k8s_candidates import CANDIDATE_LABEL
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import BenchmarkRequest, DeploymentRef
from servewise.errors import ForbiddenError, InputError, RolloutError

BIG = DeploymentRef(name="llama-70b", namespace="llm-serving")
STS = DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet")


def _record_creates(fleet: FaithfulEmulator) -> dict[str, list[dict[str, Any]]]:
    """What the adapter creates, per resource (deleted objects have no body left in the emulator)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for plural in ("deployments", "statefulsets", "services"):
        fleet.controls.on_create[plural] = lambda _emu, obj, p=plural: seen.setdefault(p, []).append(obj)
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    return seen


def _live_candidates(fleet: FaithfulEmulator, plural: str) -> list[str]:
    return [
        name
        for (res, _, name), obj in fleet.objects.items()
        if res.plural == plural
        and not obj.deleted
        and CANDIDATE_LABEL in (obj.raw["metadata"].get("labels") or {})
    ]


def _created(fleet: FaithfulEmulator, plural: str, dry: bool = False) -> int:
    return sum(1 for c in fleet.calls if c.verb == "create" and c.resource == plural and c.dry_run == dry)


def test_a_candidate_runs_on_a_temporary_copy_that_is_deleted_after(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _record_creates(fleet)
    jobs: list[dict[str, Any]] = []
    fleet.controls.on_create["jobs"] = lambda emu, job: (jobs.append(job), job_controller(SUMMARY)(emu, job))
    deployed = cluster.get_deployment(BIG).config
    candidate = deployed.with_changes(max_num_seqs=48)
    result = cluster.run_benchmark(
        BenchmarkRequest(ref=BIG, config=candidate, workload=WORKLOAD, deadline_s=10)
    )

    assert result.config == candidate and result.completed == 198
    # dry run first, then the copy and its Service; all of it gone afterwards
    assert (_created(fleet, "deployments", dry=True), _created(fleet, "deployments")) == (1, 1)
    assert _created(fleet, "services") == 1
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []
    [copy], [service] = seen["deployments"], seen["services"]
    name = copy["metadata"]["name"]
    assert name.startswith("sw-cand-llama-70b-") and copy["spec"]["replicas"] == 1
    # the candidate's flags, and pod labels the production Service does not select
    args = copy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "48"
    assert copy["spec"]["template"]["metadata"]["labels"] == {
        CANDIDATE_LABEL: name,
        "app.kubernetes.io/managed-by": "servewise",
    }
    assert service["spec"]["selector"] == {CANDIDATE_LABEL: name}
    for manifest in (copy, service):
        kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    # the Job loads the copy's one replica through the copy's Service, not the production one
    [job] = jobs
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"--base-url http://{name}.llm-serving.svc:8000" in script and "--request-rate 4 " in script
    # the deployed workload is untouched
    assert cluster.get_deployment(BIG).config == deployed


def test_a_statefulset_candidate_is_a_statefulset_copy(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _record_creates(fleet)
    candidate = cluster.get_deployment(STS).config.with_changes(max_num_batched_tokens=8192)
    cluster.run_benchmark(BenchmarkRequest(ref=STS, config=candidate, workload=WORKLOAD, deadline_s=10))
    [copy] = seen["statefulsets"]
    assert copy["spec"]["serviceName"] == copy["metadata"]["name"] and copy["spec"]["replicas"] == 1
    assert _live_candidates(fleet, "statefulsets") == [] and _live_candidates(fleet, "services") == []


def test_another_replica_count_benchmarks_the_deployed_workload(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    more = cluster.get_deployment(BIG).config.with_changes(replicas=5)
    cluster.run_benchmark(BenchmarkRequest(ref=BIG, config=more, workload=WORKLOAD, deadline_s=10))
    assert _created(fleet, "deployments") == 0 and _created(fleet, "jobs") == 1


def test_a_candidate_that_never_gets_ready_is_deleted_and_not_benchmarked(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.auto_rollout = False
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    cluster.candidate_ready_s = 0.3
    candidate = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=48)
    with pytest.raises(RolloutError, match="sw-cand-llama-70b-"):
        cluster.run_benchmark(BenchmarkRequest(ref=BIG, config=candidate, workload=WORKLOAD, deadline_s=10))
    assert _created(fleet, "jobs") == 0
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []


def test_candidate_benchmarks_can_be_switched_off(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVEWISE_CANDIDATE_BENCHMARKS", "0")
    off = KubernetesCluster(context="kmock", poll_interval_s=0.05)
    candidate = off.get_deployment(BIG).config.with_changes(max_num_seqs=48)
    with pytest.raises(InputError, match="SERVEWISE_CANDIDATE_BENCHMARKS=0"):
        off.run_benchmark(BenchmarkRequest(ref=BIG, config=candidate, workload=WORKLOAD))
    assert not [c for c in fleet.calls if c.verb == "create"]


def test_a_workload_outside_the_allowed_namespaces_gets_no_copy(fleet: FaithfulEmulator) -> None:
    fenced = KubernetesCluster(context="kmock", allowed_namespaces=["team-a"], poll_interval_s=0.05)
    candidate = fenced.get_deployment(BIG).config.with_changes(max_num_seqs=48)
    with pytest.raises(ForbiddenError, match="llm-serving"):
        fenced.run_benchmark(BenchmarkRequest(ref=BIG, config=candidate, workload=WORKLOAD))
    assert not [c for c in fleet.calls if c.verb == "create"]
