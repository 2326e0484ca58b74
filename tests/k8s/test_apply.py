"""Apply (dry run first, JSON patch, idempotent), rollback, rollout status and API errors."""

from __future__ import annotations

import json

import pytest
from k8s_emulator import FaithfulEmulator, Fault

from servewise.cluster.k8s_records import PREVIOUS_ANNOTATION, PROPOSAL_ANNOTATION
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import DeploymentRef
from servewise.errors import (
    BackendUnavailableError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    RolloutError,
)

BIG = DeploymentRef(name="llama-70b", namespace="llm-serving")
SHELL = DeploymentRef(name="llama-8b", namespace="llm-serving")


def patches(emu: FaithfulEmulator) -> list[str]:
    return [c.verb for c in emu.calls if c.verb == "patch"]


def test_a_proposal_id_reused_for_another_config_is_applied(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """An approver's edit is applied under the proposal's id; a later run proposing the unedited
    config under the same id (ids hash the target) must apply it, not answer 'already applied'."""
    current = cluster.get_deployment(BIG).config
    cluster.apply(BIG, current.with_changes(replicas=2), proposal_id="p-same")
    again = cluster.apply(BIG, current.with_changes(replicas=1), proposal_id="p-same")
    assert again.changed and cluster.get_deployment(BIG).config.replicas == 1
    assert not cluster.apply(BIG, current.with_changes(replicas=1), proposal_id="p-same").changed


def test_apply_dry_run_then_patch_changes_only_the_knobs(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    before = fleet.get("Deployment", "llm-serving", "llama-70b")
    current = cluster.get_deployment(BIG).config
    target = current.with_changes(max_num_seqs=256, tensor_parallel=8, replicas=1)
    result = cluster.apply(BIG, target, proposal_id="p-1")
    assert result.changed and not result.dry_run and result.previous == current
    after = fleet.get("Deployment", "llm-serving", "llama-70b")
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert (
        "--max-num-seqs" in container["args"]
        and container["args"][container["args"].index("--max-num-seqs") + 1] == "256"
    )
    assert "--tensor-parallel-size=8" in container["args"]  # '=' style kept
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["requests"]["memory"] == "200Gi"  # untouched
    assert after["spec"]["replicas"] == 1
    assert after["metadata"]["annotations"][PROPOSAL_ANNOTATION] == "p-1"
    record = json.loads(after["metadata"]["annotations"][PREVIOUS_ANNOTATION])
    assert record["args"] == before["spec"]["template"]["spec"]["containers"][0]["args"]
    # The patch is a list of RFC 6902 operations that never replaces whole objects it need not.
    paths = {op["path"] for op in result.patch}
    assert {"/spec/template/spec/containers/0/args/5", "/spec/template/spec/containers/0/args/7"} <= paths
    assert not any(p in ("/spec", "/spec/template", "/spec/template/spec/containers") for p in paths)
    # The server saw a dry run first, then the real patch.
    assert [c.dry_run for c in fleet.calls if c.verb == "patch"] == [True, False]
    assert cluster.get_deployment(BIG).config == target


def test_dry_run_changes_nothing(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    before = fleet.get("Deployment", "llm-serving", "llama-70b")
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=64)
    result = cluster.apply(BIG, target, proposal_id="p-dry", dry_run=True)
    assert result.dry_run and result.changed and result.patch
    assert fleet.get("Deployment", "llm-serving", "llama-70b") == before


def test_same_proposal_twice_is_a_no_op(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=96)
    assert cluster.apply(BIG, target, proposal_id="p-2").changed
    n = len(patches(fleet))
    again = cluster.apply(BIG, target, proposal_id="p-2")
    assert not again.changed and "already applied" in again.message
    assert len(patches(fleet)) == n


def test_rollback_restores_the_recorded_spec(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    before = fleet.get("Deployment", "llm-serving", "llama-70b")
    original = cluster.get_deployment(BIG).config
    cluster.apply(
        BIG, original.with_changes(tensor_parallel=8, gpu="h200", max_num_seqs=512), proposal_id="p-3"
    )
    moved = fleet.get("Deployment", "llm-serving", "llama-70b")
    assert (
        moved["spec"]["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"]
        == "nvidia-h200-141gb"
    )
    with pytest.raises(NotFoundError, match="p-3"):
        cluster.rollback(BIG, proposal_id="p-other")
    result = cluster.rollback(BIG, proposal_id="p-3")
    assert result.changed and result.previous == original
    after = fleet.get("Deployment", "llm-serving", "llama-70b")
    assert after["spec"]["template"] == before["spec"]["template"]
    assert PROPOSAL_ANNOTATION not in after["metadata"]["annotations"]
    assert cluster.get_deployment(BIG).config == original
    with pytest.raises(NotFoundError):
        cluster.rollback(BIG)


def test_shell_string_args_are_patched_in_place(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    target = cluster.get_deployment(SHELL).config.with_changes(
        max_num_seqs=32, quantization={"weights": "fp8"}
    )
    cluster.apply(SHELL, target, proposal_id="p-sh")
    script = fleet.get("Deployment", "llm-serving", "llama-8b")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ][0]
    assert "--max-num-seqs=32" in script and "--quantization fp8" in script
    assert script.startswith("vllm serve meta-llama/Llama-3.1-8B-Instruct")
    assert cluster.get_deployment(SHELL).config == target


def test_model_change_keeps_the_served_name(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    current = cluster.get_deployment(BIG).config
    target = current.with_changes(model="llama-3.1-8b", tensor_parallel=1)
    cluster.apply(BIG, target, proposal_id="p-model")
    args = fleet.get("Deployment", "llm-serving", "llama-70b")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[0].startswith("meta-llama/") and "8B" in args[0]
    assert args[args.index("--served-model-name") + 1] == "meta-llama/Llama-3.3-70B-Instruct"
    assert cluster.get_deployment(BIG).config.model == "llama-3.1-8b"


def test_forbidden_names_verb_resource_and_rule(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    fleet.controls.denied.add(("patch", "deployments", "llm-serving"))
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=64)
    with pytest.raises(ForbiddenError) as info:
        cluster.apply(BIG, target, proposal_id="p-403")
    text = str(info.value)
    assert "cannot patch deployments/llama-70b" in text and "llm-serving" in text
    assert 'apiGroups: ["apps"]' in text and 'verbs: ["patch"]' in text
    assert PROPOSAL_ANNOTATION not in (
        fleet.get("Deployment", "llm-serving", "llama-70b")["metadata"].get("annotations") or {}
    )


def test_namespace_outside_allow_list_is_refused_before_any_call(fleet: FaithfulEmulator) -> None:
    cluster = KubernetesCluster(context="kmock", allowed_namespaces=["team-a"])
    with pytest.raises(ForbiddenError, match="llm-serving"):
        cluster.apply(
            BIG, cluster.get_deployment(BIG).config.with_changes(max_num_seqs=8), proposal_id="p-ns"
        )
    assert not patches(fleet)


def test_not_found(cluster: KubernetesCluster) -> None:
    with pytest.raises(NotFoundError, match="deployments/ghost"):
        cluster.get_deployment(DeploymentRef(name="ghost", namespace="llm-serving"))


def test_conflict_is_retried_on_a_fresh_read(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    # A concurrent writer bumps the resourceVersion right before our first (dry-run) patch.
    fleet.controls.faults.append(Fault("patch", "deployments", bump_resource_version=True))
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=200)
    assert cluster.apply(BIG, target, proposal_id="p-409").changed
    assert cluster.get_deployment(BIG).config.max_num_seqs == 200
    gets = [c for c in fleet.calls if c.verb == "get" and c.resource == "deployments"]
    assert len(gets) >= 3  # initial read, re-read after the 409, final check


def test_conflict_retries_are_bounded(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    fleet.controls.faults.append(Fault("patch", "deployments", status=409, times=50))
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=200)
    with pytest.raises(ConflictError):
        cluster.apply(BIG, target, proposal_id="p-409b")
    assert len(patches(fleet)) == cluster.conflict_attempts


def test_timeouts_and_5xx_become_backend_unavailable(fleet: FaithfulEmulator) -> None:
    cluster = KubernetesCluster(context="kmock", request_timeout_s=0.3)
    fleet.controls.faults.append(Fault("get", "deployments", delay_s=1.0, times=5))
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        cluster.get_deployment(BIG)
    fleet.controls.faults.clear()
    fleet.controls.faults.append(Fault("get", "deployments", status=503, times=1))
    assert cluster.get_deployment(BIG).config.tensor_parallel == 4  # one 503, retried


def test_a_5xx_during_apply_is_retried_from_a_fresh_read(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.faults.append(Fault("patch", "deployments", status=503, times=1))
    target = cluster.get_deployment(BIG).config.with_changes(max_num_seqs=77)
    assert cluster.apply(BIG, target, proposal_id="p-503").changed
    assert cluster.get_deployment(BIG).config.max_num_seqs == 77
    assert len([c for c in fleet.calls if c.verb == "patch" and not c.dry_run]) == 1


def test_stalled_rollout_reports_pod_events(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    fleet.controls.auto_rollout = False
    target = cluster.get_deployment(BIG).config.with_changes(tensor_parallel=8)
    cluster.apply(BIG, target, proposal_id="p-stall")
    fleet.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "llama-70b-new",
                "namespace": "llm-serving",
                "labels": {"app.kubernetes.io/name": "llama-70b"},
            },
            "spec": {"containers": [{"name": "vllm", "image": "x"}]},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
        }
    )
    fleet.seed(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "llm-serving"},
            "involvedObject": {"kind": "Pod", "name": "llama-70b-new"},
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
        }
    )
    status = cluster.rollout_status(BIG)
    assert not status.done and status.updated_replicas == 0
    with pytest.raises(RolloutError) as info:
        cluster.wait_for_rollout(BIG, timeout_s=0.3)
    assert any("Insufficient nvidia.com/gpu" in e for e in info.value.events)
    assert any("FailedScheduling" in e for e in info.value.events)


def test_oomkilled_crashloop_fails_the_rollout_at_once(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.auto_rollout = False
    cluster.apply(
        BIG, cluster.get_deployment(BIG).config.with_changes(max_num_seqs=1024), proposal_id="p-oom"
    )
    fleet.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "llama-70b-oom",
                "namespace": "llm-serving",
                "labels": {"app.kubernetes.io/name": "llama-70b"},
            },
            "spec": {"containers": [{"name": "vllm", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "vllm",
                        "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    }
                ],
            },
        }
    )
    with pytest.raises(RolloutError) as info:
        cluster.wait_for_rollout(BIG, timeout_s=30)
    assert any("OOMKilled" in e for e in info.value.events)


def test_finished_rollout_is_done(cluster: KubernetesCluster) -> None:
    cluster.apply(BIG, cluster.get_deployment(BIG).config.with_changes(max_num_seqs=100), proposal_id="p-ok")
    status = cluster.wait_for_rollout(BIG, timeout_s=5)
    assert status.done and status.available_replicas == 2


def test_unknown_engine_flag_is_an_input_error(cluster: KubernetesCluster) -> None:
    ref = DeploymentRef(name="mistral-tgi", namespace="llm-serving")
    target = cluster.get_deployment(ref).config.with_changes(pipeline_parallel=2)
    with pytest.raises(InputError, match="pipeline_parallel"):
        cluster.apply(ref, target, proposal_id="p-tgi")
