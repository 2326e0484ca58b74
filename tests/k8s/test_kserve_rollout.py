"""An InferenceService in RawDeployment mode is rolled out only once KServe has written the patch
into its predictor's Deployment and that Deployment has rolled out: its ``Ready`` from before a
patch says nothing (the real client against the emulator, whose KServe stand-in can be late)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from k8s_emulator import FaithfulEmulator
from test_kserve_runtime import HF_ISVC, REF, kserve  # noqa: F401  (the fixture)

from servewise.cluster.k8s_rollout import evaluate_rollout, predictor_lag
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import DeploymentRef
from servewise.errors import RolloutError

READY = {"conditions": [{"type": "Ready", "status": "True"}]}


def _child(fleet: FaithfulEmulator) -> dict[str, Any]:
    """The Deployment the emulator's KServe made for the InferenceService's predictor."""
    return fleet.get("Deployment", REF.namespace, f"{REF.name}-predictor")


def _store(fleet: FaithfulEmulator, child: dict[str, Any]) -> None:
    fleet.put("Deployment", REF.namespace, child["metadata"]["name"], child)


def _ready_and_reconciled(fleet: FaithfulEmulator) -> None:
    """The seeded InferenceService as KServe leaves it: Ready, its predictor's Deployment current."""
    fleet.seed({**copy.deepcopy(HF_ISVC), "status": READY})
    fleet.reconcile_kserve(fleet.get("InferenceService", REF.namespace, REF.name))


def _patch(cluster: KubernetesCluster) -> None:
    target = cluster.get_deployment(REF).config.with_changes(max_num_seqs=256, tensor_parallel=2)
    cluster.apply(REF, target, proposal_id="p-raw")


def test_a_ready_from_before_the_patch_is_not_done_until_kserve_writes_the_deployment(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    assert cluster.rollout_status(REF).done
    kserve.controls.kserve_reconciles = False  # KServe has not seen the patch yet
    _patch(cluster)
    stale = cluster.rollout_status(REF)
    assert not stale.done and stale.updated_replicas == 0
    assert any(
        "KServe has not written the patch into huggingface-llama3-predictor yet" in e for e in stale.events
    )
    with pytest.raises(RolloutError, match="stalled"):
        cluster.wait_for_rollout(REF, timeout_s=0.2)
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    assert cluster.rollout_status(REF).done
    child = _child(kserve)
    args = child["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--model_name=huggingface-llama3" and "--max-num-seqs=256" in args


def test_a_rollback_kserve_has_not_seen_is_not_done(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """A rollback removes the flag the proposal appended: the old Deployment still ends with it."""
    _ready_and_reconciled(kserve)
    target = cluster.get_deployment(REF).config.with_changes(max_num_batched_tokens=4096)
    cluster.apply(REF, target, proposal_id="p-flag")
    assert cluster.rollout_status(REF).done
    kserve.controls.kserve_reconciles = False
    cluster.rollback(REF, proposal_id="p-flag")
    assert not cluster.rollout_status(REF).done
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    assert cluster.rollout_status(REF).done


def test_what_kserve_rewrites_is_not_read_as_a_lag(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """A pinned image gets KServe's "-gpu" tag and ``{{.Name}}`` is rendered: still caught up."""
    isvc = copy.deepcopy(HF_ISVC)
    model = isvc["spec"]["predictor"]["model"]
    model["image"] = "kserve/huggingfaceserver:v0.15.2"
    model["args"] = ["--model_name={{.Name}}", *model["args"][1:]]
    kserve.seed({**isvc, "status": READY})
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    child = _child(kserve)
    assert child["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-gpu")
    assert cluster.rollout_status(REF).done


def test_a_stuck_predictor_deployment_fails_the_rollout(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    kserve.controls.auto_rollout = False
    _patch(cluster)
    child = _child(kserve)
    # the controller saw this generation, and gave up
    child["status"]["observedGeneration"] = child["metadata"]["generation"]
    child["status"]["conditions"] = [
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "no GPU node"}
    ]
    _store(kserve, child)
    status = cluster.rollout_status(REF)
    assert status.failed and "huggingface-llama3-predictor: ProgressDeadlineExceeded" in str(status.reason)
    with pytest.raises(RolloutError, match="failed"):
        cluster.wait_for_rollout(REF, timeout_s=30)


def test_a_written_but_not_rolled_out_deployment_is_not_done(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    kserve.controls.auto_rollout = False  # KServe writes the Deployment; its pods are not up yet
    _patch(cluster)
    status = cluster.rollout_status(REF)
    assert not status.done
    assert any("huggingface-llama3-predictor: updated" in e for e in status.events)


def test_only_the_predictors_own_deployment_is_read_not_a_canarys_or_a_workers(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    for suffix in ("canary", "worker"):  # same labels and owner, other args
        other = _child(kserve)
        other["metadata"]["name"] = f"huggingface-llama3-predictor-{suffix}"
        other["spec"]["template"]["spec"]["containers"][0]["args"] = ["--other"]
        kserve.seed(other)
    assert cluster.rollout_status(REF).done


def test_deployments_kserve_made_for_another_inference_service_are_not_read(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    kserve.controls.kserve_reconciles = False
    _patch(cluster)
    child = _child(kserve)
    child["metadata"]["ownerReferences"] = [{"kind": "InferenceService", "name": "other-llm"}]
    _store(kserve, child)
    # no Deployment of its own found (Serverless, say): Ready is the verdict
    assert cluster.rollout_status(REF).done


def _deployment(containers: list[dict[str, Any]], **pod: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm-predictor", "namespace": "ns", "generation": 3},
        "spec": {"replicas": 1, "template": {"spec": {"containers": containers, **pod}}},
        "status": {"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }


ENGINE = {
    "name": "kserve-container",
    "image": "vllm/vllm-openai:v0.11.0",
    "args": ["--model", "m", "--max-num-seqs", "256"],
    "resources": {"limits": {"nvidia.com/gpu": "2"}},
}
ISVC = {"spec": {"predictor": {"containers": [ENGINE], "nodeSelector": {"pool": "h100"}}}}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"args": ["--model", "m", "--max-num-seqs", "128"]}, "does not carry the predictor's args"),
        ({"args": [*ENGINE["args"], "--enforce-eager"]}, "does not carry the predictor's args"),  # removed
        ({"resources": {"limits": {"nvidia.com/gpu": "1"}}}, "still asks for 1 nvidia.com/gpu, not 2"),
        ({"name": "engine"}, "has no container kserve-container"),
        ({"command": ["python3", "-m", "vllm.entrypoints.openai.api_server"]}, "the predictor's command"),
    ],
)
def test_each_part_of_the_predictor_kserve_copies_is_compared(change: dict[str, Any], said: str) -> None:
    assert predictor_lag(ISVC, _deployment([ENGINE], nodeSelector={"pool": "h100"})) is None
    assert said in str(
        predictor_lag(ISVC, _deployment([{**ENGINE, **change}], nodeSelector={"pool": "h100"}))
    )


def test_the_node_selector_affinity_and_what_kserve_adds() -> None:
    sidecar = {"name": "queue-proxy", "image": "knative/queue"}
    retagged = {**ENGINE, "image": "vllm/vllm-openai:v0.11.0-gpu"}  # the image is KServe's to rewrite
    assert "does not select pool=h100" in str(predictor_lag(ISVC, _deployment([ENGINE])))
    assert predictor_lag(ISVC, _deployment([retagged, sidecar], nodeSelector={"pool": "h100"})) is None
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
    pinned = {"spec": {"predictor": {**ISVC["spec"]["predictor"], "affinity": affinity}}}
    assert "affinity" in str(predictor_lag(pinned, _deployment([ENGINE], nodeSelector={"pool": "h100"})))


def test_a_command_in_the_predictor_is_compared_and_a_runtimes_is_kserves() -> None:
    """Flags in the command (``sh -c "vllm serve ... --max-num-seqs 256"``): a rollback to the old
    command is not done while the Deployment runs the new one."""
    shell = {**ENGINE, "args": [], "command": ["sh", "-c", "vllm serve m --max-num-seqs 256"]}
    custom = {"spec": {"predictor": {"containers": [shell]}}}
    assert predictor_lag(custom, _deployment([shell])) is None
    old = {**shell, "command": ["sh", "-c", "vllm serve m --max-num-seqs 128"]}
    assert "does not carry the predictor's command" in str(predictor_lag(custom, _deployment([old])))
    model = {"args": ["--x=1"]}  # a runtime's model without a command: the runtime's runs
    runtime = {"metadata": {"name": "llm"}, "spec": {"predictor": {"model": model}}}
    served = {
        **ENGINE,
        "command": ["python", "-m", "huggingfaceserver"],
        "args": ["--model_name=llm", "--x=1"],
    }
    assert predictor_lag(runtime, _deployment([served])) is None
    named = {
        "metadata": {"name": "llm"},
        "spec": {"predictor": {"model": {**model, "command": ["serve", "{{.Name}}"]}}},
    }
    assert "command" in str(predictor_lag(named, _deployment([served])))
    assert predictor_lag(named, _deployment([{**served, "command": ["serve", "llm"]}])) is None


def test_a_runtimes_args_come_first_and_the_predictors_last() -> None:
    model = {k: v for k, v in ENGINE.items() if k != "name"}
    predictor = {"model": {**model, "args": ["--model_name={{.Name}}", "--x=1"]}}
    isvc = {"metadata": {"name": "llm"}, "spec": {"predictor": predictor}}
    runtime = {**ENGINE, "args": ["--model_dir=/mnt/models", "--model_name=llm", "--x=1"]}
    assert predictor_lag(isvc, _deployment([runtime])) is None
    stale = {**ENGINE, "args": ["--model_dir=/mnt/models", "--model_name=llm", "--x=1", "--y=2"]}
    assert "does not carry" in str(predictor_lag(isvc, _deployment([stale])))
    labelled = {
        "metadata": {"name": "llm"},
        "spec": {"predictor": {"model": {**model, "args": ["{{.Labels.x}}"]}}},
    }
    assert predictor_lag(labelled, _deployment([runtime])) is None  # a placeholder it does not render


@pytest.mark.parametrize("copies_annotations", [True, False])
def test_a_rollback_to_no_args_of_its_own_waits_for_kserve(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
    copies_annotations: bool,
) -> None:
    """Only the runtime's args are left after the rollback: the Deployment's args cannot tell the
    old from the new; the proposal record KServe copies into its pods can, and without that copy,
    the Deployment's generation."""
    kserve.controls.kserve_copies_annotations = copies_annotations
    isvc = copy.deepcopy(HF_ISVC)
    isvc["spec"]["predictor"]["model"].pop("args")
    isvc["spec"]["predictor"]["model"]["storageUri"] = "hf://meta-llama/Llama-3.1-8B-Instruct"
    kserve.seed({**isvc, "status": READY})
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    cluster.apply(REF, cluster.get_deployment(REF).config.with_changes(max_num_seqs=64), proposal_id="p-none")
    assert cluster.rollout_status(REF).done
    kserve.controls.kserve_reconciles = False
    cluster.rollback(REF, proposal_id="p-none")
    recorded = kserve.get("InferenceService", REF.namespace, REF.name)["metadata"]["annotations"]
    assert (
        recorded["servewise.io/predictor-generation"] == "/2"
    )  # uid (none here) / the proposal's generation
    assert not cluster.rollout_status(REF).done
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    assert cluster.rollout_status(REF).done


def test_a_replicas_only_change_records_no_generation(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    _ready_and_reconciled(kserve)
    result = cluster.apply(
        REF, cluster.get_deployment(REF).config.with_changes(replicas=3), proposal_id="p-r"
    )
    assert {op["path"] for op in result.patch} & {"/spec/predictor/minReplicas"}
    annotations = kserve.get("InferenceService", REF.namespace, REF.name)["metadata"]["annotations"]
    assert "servewise.io/predictor-generation" not in annotations
    assert cluster.rollout_status(REF).done


def test_placeholders_affinity_and_a_stale_deadline() -> None:
    literal = {**ENGINE, "args": ["--model", "m", "--served-model-name={{.Name}}"]}
    custom = {"metadata": {"name": "llm"}, "spec": {"predictor": {"containers": [literal]}}}
    assert predictor_lag(custom, _deployment([literal])) is None  # KServe renders only a runtime's
    model = {"args": ["--x=1", "--served-model-name={{.Labels.team}}"]}
    labelled = {"metadata": {"name": "llm"}, "spec": {"predictor": {"model": model}}}
    rendered = {**ENGINE, "args": ["--model_dir=/mnt/models", "--x=1", "--served-model-name=a"]}
    assert predictor_lag(labelled, _deployment([rendered])) is None
    stale = {**ENGINE, "args": ["--model_dir=/mnt/models", "--x=2", "--served-model-name=a"]}
    assert "does not carry" in str(predictor_lag(labelled, _deployment([stale])))  # still compared
    node = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"k": 1}]}}
    }
    anti = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100}]}}
    pinned = {"spec": {"predictor": {**ISVC["spec"]["predictor"], "affinity": node}}}
    merged = _deployment(
        [ENGINE], nodeSelector={"pool": "h100"}, affinity={**node, **anti}
    )  # the runtime's too
    assert predictor_lag(pinned, merged) is None
    old = _deployment([ENGINE], nodeSelector={"pool": "h100"}, affinity=anti)
    assert "affinity" in str(predictor_lag(pinned, old))
    deadline = {"type": "Progressing", "reason": "ProgressDeadlineExceeded"}
    left = _deployment([ENGINE])
    left["metadata"]["generation"] = 4  # a new generation; the deadline was the last one's
    left["status"]["conditions"] = [deadline]
    assert not evaluate_rollout(DeploymentRef(name="llm-predictor", namespace="ns"), left).failed


def _annotated(isvc: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return {**isvc, "metadata": {"name": "llm", "annotations": annotations}}


def test_the_proposal_record_in_the_pods_and_the_recorded_generation() -> None:
    ready = _deployment([ENGINE], nodeSelector={"pool": "h100"})
    ready["spec"]["template"]["metadata"] = {"annotations": {"servewise.io/predictor-generation": "u1/2"}}
    rolled_back = _annotated(ISVC, **{"servewise.io/predictor-generation": "u1/3"})
    # an HPA scaled it (a newer generation) but KServe has not written the rollback: the pods say so
    assert "older servewise.io/ record" in str(predictor_lag(rolled_back, ready))
    assert predictor_lag(_annotated(ISVC, **{"servewise.io/predictor-generation": "u1/2"}), ready) is None
    fresh = _deployment([ENGINE], nodeSelector={"pool": "h100"})  # no record in its pods
    fresh["metadata"].update(uid="u2", generation=1)
    stale = _annotated(ISVC, **{"servewise.io/predictor-generation": "u1/4"})
    assert predictor_lag(stale, fresh) is None  # recorded for a Deployment since recreated
    same = _annotated(ISVC, **{"servewise.io/predictor-generation": "u2/4"})
    assert "generation 1" in str(predictor_lag(same, fresh))
