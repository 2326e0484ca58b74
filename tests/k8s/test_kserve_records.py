"""An InferenceService's proposal record lives in a ConfigMap beside it, not in its annotations:
KServe copies those into the predictor's pods, so every apply (a replicas-only one too) would
restart them. The two writes are ordered so that each interruption is safe to redo (the real
client against the emulator, whose KServe stand-in copies annotations as KServe does)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from k8s_emulator import FaithfulEmulator, Fault
from test_kserve_rollout import READY
from test_kserve_runtime import HF_ISVC, REF, kserve  # noqa: F401  (the fixture)

from servewise.cluster.k8s_parsing import parse_workload
from servewise.cluster.k8s_patching import previous_record
from servewise.cluster.k8s_records import PREVIOUS_ANNOTATION, PROPOSAL_ANNOTATION
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.errors import BackendUnavailableError, ForbiddenError, NotFoundError
from servewise.perf.catalog import get_catalog

RECORD = f"servewise-record-{REF.name}"


def _template(fleet: FaithfulEmulator) -> dict[str, Any]:
    """The pod template of the Deployment KServe made for the predictor: a change to it restarts the pods."""
    template: dict[str, Any] = fleet.get("Deployment", REF.namespace, f"{REF.name}-predictor")["spec"][
        "template"
    ]
    return template


def record_data(fleet: FaithfulEmulator) -> dict[str, Any]:
    """The record ConfigMap's data, as servewise last wrote it."""
    data: dict[str, Any] = fleet.get("ConfigMap", REF.namespace, RECORD).get("data") or {}
    return data


def _isvc_patches(fleet: FaithfulEmulator) -> int:
    return sum(
        1 for c in fleet.calls if (c.verb, c.resource, c.dry_run) == ("patch", "inferenceservices", False)
    )


def test_a_replicas_only_change_leaves_the_predictors_pods_alone(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    kserve.seed({**copy.deepcopy(HF_ISVC), "status": READY})
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    before = _template(kserve)
    current = cluster.get_deployment(REF).config
    cluster.apply(REF, current.with_changes(replicas=4), proposal_id="p-scale")
    child = kserve.get("Deployment", REF.namespace, f"{REF.name}-predictor")
    assert child["spec"]["replicas"] == 4 and _template(kserve) == before  # scaled, not restarted
    annotations = kserve.get("InferenceService", REF.namespace, REF.name)["metadata"]["annotations"]
    assert not any(k.startswith("servewise.io/") for k in annotations)
    assert (
        record_data(kserve)["proposal-id"] == "p-scale"
        and '"replicas": 2' in record_data(kserve)["previous-spec"]
    )
    assert cluster.rollout_status(REF).done
    cluster.rollback(REF, proposal_id="p-scale")
    assert _template(kserve) == before and cluster.get_deployment(REF).config == current
    assert record_data(kserve) == {"rolled-back-proposal": "p-scale"}


def test_the_record_is_owned_by_the_inference_service_and_read_for_idempotence(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    owned = copy.deepcopy(HF_ISVC)
    owned["metadata"]["uid"] = "isvc-uid-1"
    kserve.seed(owned)
    target = cluster.get_deployment(REF).config.with_changes(max_num_seqs=256)
    first = cluster.apply(REF, target, proposal_id="p-own")
    patches = _isvc_patches(kserve)
    again = cluster.apply(REF, target, proposal_id="p-own")  # a workflow node re-run after resume
    assert first.changed and not again.changed and "already applied" in again.message
    assert again.previous is not None and again.previous.max_num_seqs == 128
    assert _isvc_patches(kserve) == patches
    record = kserve.get("ConfigMap", REF.namespace, RECORD)
    assert record["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "name": REF.name,
            "uid": "isvc-uid-1",
        }
    ]
    assert record["metadata"]["labels"] == {"servewise.io/record-for": REF.name}
    cluster.rollback(REF)
    with pytest.raises(NotFoundError, match="no recorded servewise change"):
        cluster.rollback(REF)


def test_a_patch_that_failed_after_its_record_was_written_is_patched_again(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """A 503 on the real patch (after the dry run): the retry from a fresh read sees the
    InferenceService does not hold the pending record's config, so it patches; rollback restores."""
    current = cluster.get_deployment(REF).config
    kserve.controls.faults.append(Fault("patch", "inferenceservices", status=503, skip=1))
    result = cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p-503")
    assert result.changed and cluster.get_deployment(REF).config.max_num_seqs == 64
    assert (
        record_data(kserve)["proposal-id"] == "p-503"
        and '"max_num_seqs": 128' in record_data(kserve)["previous-spec"]
    )
    cluster.rollback(REF, proposal_id="p-503")
    assert cluster.get_deployment(REF).config == current


def test_a_refused_patch_leaves_the_last_proposal_the_one_to_roll_back(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    current = cluster.get_deployment(REF).config
    cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p-kept")
    kept = record_data(kserve)
    kserve.controls.faults.append(Fault("patch", "inferenceservices", status=403, skip=1))
    with pytest.raises(ForbiddenError):
        cluster.apply(REF, current.with_changes(max_num_seqs=32), proposal_id="p-refused")
    record = record_data(kserve)  # written as pending beside the last: not held, so not counted
    assert {k: v for k, v in record.items() if not k.startswith("pending-")} == kept
    assert record["pending-proposal-id"] == "p-refused"
    assert cluster.get_deployment(REF).config.max_num_seqs == 64
    cluster.rollback(REF, proposal_id="p-kept")
    assert cluster.get_deployment(REF).config == current


def test_no_right_to_write_the_record_stops_the_change_before_it_starts(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    kserve.controls.denied.add(("create", "configmaps", REF.namespace))
    current = cluster.get_deployment(REF).config
    with pytest.raises(ForbiddenError, match=r'cannot create configmaps/.*resources: \["configmaps"\]'):
        cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p-denied")
    assert _isvc_patches(kserve) == 0 and cluster.get_deployment(REF).config == current
    stored = kserve.get("InferenceService", REF.namespace, REF.name)["metadata"]["annotations"]
    assert PROPOSAL_ANNOTATION not in stored and PREVIOUS_ANNOTATION not in stored


def test_an_apply_that_never_landed_keeps_the_last_proposal_to_roll_back(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """Every real patch of the second proposal fails (as a crash between the writes would leave
    it): the first stays the one applied and rolled back to the original."""
    current = cluster.get_deployment(REF).config
    cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p1")
    kserve.controls.faults.extend(Fault("patch", "inferenceservices", status=503, skip=1) for _ in range(4))
    with pytest.raises(BackendUnavailableError):
        cluster.apply(REF, current.with_changes(max_num_seqs=32), proposal_id="p2")
    assert cluster.get_deployment(REF).config.max_num_seqs == 64
    with pytest.raises(NotFoundError, match="the last applied proposal is p1, not p2"):
        cluster.rollback(REF, proposal_id="p2")
    cluster.rollback(REF, proposal_id="p1")
    assert cluster.get_deployment(REF).config == current


def test_a_lost_promotion_still_counts_the_applied_proposal(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """The patch landed but the record could not be promoted (the ConfigMap 503s after it, to the
    last retry): the apply stands, and its pending record counts because the workload holds it."""
    current = cluster.get_deployment(REF).config
    lost = Fault("patch", "configmaps", status=503, times=100)  # created as pending; promoted by a patch
    kserve.controls.faults.append(lost)
    target = current.with_changes(max_num_seqs=64)
    result = cluster.apply(REF, target, proposal_id="p-lost")
    assert result.changed and result.patch and cluster.get_deployment(REF).config == target
    assert "proposal-id" not in record_data(kserve) and record_data(kserve)["pending-proposal-id"] == "p-lost"
    kserve.controls.faults.remove(lost)
    again = cluster.apply(REF, target, proposal_id="p-lost")  # the workflow's retry
    assert not again.changed and "already applied" in again.message
    assert record_data(kserve)["proposal-id"] == "p-lost" and "pending-proposal-id" not in record_data(kserve)
    cluster.rollback(REF, proposal_id="p-lost")
    assert cluster.get_deployment(REF).config == current
    assert record_data(kserve) == {"rolled-back-proposal": "p-lost"}


def test_a_record_an_earlier_servewise_left_in_the_annotations_is_read_and_removed(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    original = parse_workload(HF_ISVC, get_catalog())
    changed = copy.deepcopy(HF_ISVC)
    changed["spec"]["predictor"]["model"]["args"][2] = "--max-num-seqs=64"
    changed["metadata"]["annotations"].update(
        {
            PROPOSAL_ANNOTATION: "p-old",
            PREVIOUS_ANNOTATION: json.dumps(previous_record(HF_ISVC, original, "p-old")),
        }
    )
    kserve.seed(changed)
    assert cluster.get_deployment(REF).config.max_num_seqs == 64
    assert not cluster.apply(REF, cluster.get_deployment(REF).config, proposal_id="p-old").changed
    cluster.rollback(REF, proposal_id="p-old")
    after = kserve.get("InferenceService", REF.namespace, REF.name)["metadata"]["annotations"]
    assert cluster.get_deployment(REF).config == original.config
    assert not any(k.startswith("servewise.io/") for k in after)
    assert record_data(kserve) == {"rolled-back-proposal": "p-old"}


def test_a_record_owned_by_an_earlier_inference_service_of_the_name_is_not_read(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    first = copy.deepcopy(HF_ISVC)
    first["metadata"]["uid"] = "uid-1"
    kserve.seed(first)
    current = cluster.get_deployment(REF).config
    cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p-gone")
    kserve.seed({**first, "metadata": {**first["metadata"], "uid": "uid-2"}})  # deleted and recreated
    with pytest.raises(NotFoundError, match="no recorded servewise change"):
        cluster.rollback(REF)
    cluster.apply(REF, current.with_changes(max_num_seqs=32), proposal_id="p-new")
    record = kserve.get("ConfigMap", REF.namespace, RECORD)
    assert [o["uid"] for o in record["metadata"]["ownerReferences"]] == ["uid-2"]
    cluster.rollback(REF, proposal_id="p-new")
    assert cluster.get_deployment(REF).config == current


def test_a_replicas_only_change_is_not_done_until_kserve_scales_and_raises_max_replicas(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    bounded = copy.deepcopy(HF_ISVC)
    bounded["spec"]["predictor"]["maxReplicas"] = 3
    kserve.seed({**bounded, "status": READY})
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    current = cluster.get_deployment(REF).config
    cluster.apply(REF, current.with_changes(max_num_seqs=64), proposal_id="p1")  # a record in the pods
    kserve.controls.kserve_reconciles = False
    cluster.apply(REF, current.with_changes(max_num_seqs=64, replicas=4), proposal_id="p2")
    predictor = kserve.get("InferenceService", REF.namespace, REF.name)["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (4, 4)
    status = cluster.rollout_status(REF)
    assert not status.done and any("fewer than the predictor's minimum 4" in e for e in status.events)
    kserve.reconcile_kserve(kserve.get("InferenceService", REF.namespace, REF.name))
    assert cluster.rollout_status(REF).done
    cluster.rollback(REF, proposal_id="p2")
    predictor = kserve.get("InferenceService", REF.namespace, REF.name)["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 3)
