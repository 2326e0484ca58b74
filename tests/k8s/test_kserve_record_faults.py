"""An InferenceService's ConfigMap record through failures at each point of apply and rollback:
refusals, 503s, a pending record left behind, hand edits, legacy annotations, dry runs (the real
client against the emulator; each of these was a defect a review reproduced)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from k8s_emulator import FaithfulEmulator, Fault
from test_kserve_records import record_data
from test_kserve_runtime import HF_ISVC, REF, kserve  # noqa: F401  (the fixture)

from servewise.cluster.k8s_parsing import parse_workload
from servewise.cluster.k8s_patching import previous_record
from servewise.cluster.k8s_records import PREVIOUS_ANNOTATION, PROPOSAL_ANNOTATION
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import ServingConfig
from servewise.errors import BackendUnavailableError, ForbiddenError, NotFoundError
from servewise.perf.catalog import get_catalog


def _isvc(k: FaithfulEmulator) -> dict[str, Any]:
    return k.get("InferenceService", REF.namespace, REF.name)


def _refused(cluster: KubernetesCluster, fleet: FaithfulEmulator, config: ServingConfig, pid: str) -> None:
    """An apply whose real patch the API server refuses: its pending record stays behind."""
    fleet.controls.faults.append(Fault("patch", "inferenceservices", status=403, skip=1))
    with pytest.raises(ForbiddenError):
        cluster.apply(REF, config, proposal_id=pid)


def test_a_redone_rollback_does_not_roll_back_a_refused_proposal(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """p2 (back to the original) was refused; rolling back p1 lands and its last record write
    503s once: the redo sees the workload at p2's config, and must not read p2 as applied."""
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    _refused(cluster, kserve, original, "p2")
    kserve.controls.faults.append(Fault("patch", "configmaps", status=503, skip=2))
    assert cluster.rollback(REF).proposal_id == "p1"
    assert cluster.get_deployment(REF).config == original
    assert record_data(kserve) == {"rolled-back-proposal": "p1"}


def test_a_rollback_drops_a_pending_record_that_never_landed(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    _refused(cluster, kserve, original, "p2")
    kserve.controls.faults.append(Fault("patch", "configmaps", status=503, skip=1))
    cluster.rollback(REF, proposal_id="p1")  # its record write before the patch fails once: redone
    assert cluster.get_deployment(REF).config == original
    assert record_data(kserve) == {"rolled-back-proposal": "p1"}
    with pytest.raises(NotFoundError):
        cluster.rollback(REF)  # p2 went with it


def test_a_promotion_that_failed_once_is_retried_and_the_proposal_rolls_back_after_a_hand_edit(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    kserve.controls.faults.append(Fault("patch", "configmaps", status=503, skip=2))  # the promotion
    assert cluster.apply(REF, original.with_changes(max_num_seqs=32), proposal_id="p2").changed
    assert record_data(kserve)["proposal-id"] == "p2" and "pending-proposal-id" not in record_data(kserve)
    edited = _isvc(kserve)
    edited["spec"]["predictor"]["model"]["args"][2] = "--max-num-seqs=48"  # an operator's hand edit
    kserve.put("InferenceService", REF.namespace, REF.name, edited)
    assert cluster.rollback(REF).proposal_id == "p2"
    assert cluster.get_deployment(REF).config.max_num_seqs == 64


def test_an_apply_after_an_interrupted_rollback_patches_again(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """The rollback's patch landed but its record write failed to the last retry: the record still
    names p1, yet the workload does not hold p1's config, so applying p1 again is not a no-op."""
    original = cluster.get_deployment(REF).config
    target = original.with_changes(max_num_seqs=64)
    cluster.apply(REF, target, proposal_id="p1")
    kserve.controls.faults.extend(Fault("patch", "configmaps", status=503, skip=1) for _ in range(4))
    with pytest.raises(BackendUnavailableError):
        cluster.rollback(REF, proposal_id="p1")
    kserve.controls.faults.clear()
    assert cluster.get_deployment(REF).config == original and record_data(kserve)["proposal-id"] == "p1"
    assert cluster.apply(REF, target, proposal_id="p1").changed
    assert cluster.get_deployment(REF).config == target


def test_rollback_puts_back_an_absent_min_replicas_with_the_max(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """KServe refuses minReplicas above a non-zero maxReplicas: both go back as they were."""
    obj = copy.deepcopy(HF_ISVC)
    del obj["spec"]["predictor"]["minReplicas"]
    obj["spec"]["predictor"]["maxReplicas"] = 2
    kserve.seed(obj)
    current = cluster.get_deployment(REF).config
    assert current.replicas == 1
    cluster.apply(REF, current.with_changes(replicas=3), proposal_id="p-scale")
    predictor = _isvc(kserve)["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (3, 3)
    cluster.rollback(REF, proposal_id="p-scale")
    predictor = _isvc(kserve)["spec"]["predictor"]
    assert "minReplicas" not in predictor and predictor["maxReplicas"] == 2


def test_a_rollback_refused_at_its_dry_run_writes_nothing(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    _refused(cluster, kserve, original.with_changes(max_num_seqs=32), "p2")
    before = record_data(kserve)
    kserve.controls.denied.add(("patch", "inferenceservices", REF.namespace))
    with pytest.raises(ForbiddenError):
        cluster.rollback(REF)
    assert record_data(kserve) == before


def test_a_hand_edit_that_no_longer_parses_does_not_block_the_rollback(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    _refused(cluster, kserve, original.with_changes(max_num_seqs=32), "p2")
    edited = _isvc(kserve)
    edited["spec"]["predictor"]["model"]["args"][1] = "--model_id=acme/unknown-model-7b"
    kserve.put("InferenceService", REF.namespace, REF.name, edited)
    cluster.rollback(REF, proposal_id="p1")  # the way back to the last good spec
    assert cluster.get_deployment(REF).config == original


def test_dry_runs_write_nothing(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    legacy = copy.deepcopy(HF_ISVC)
    record = previous_record(HF_ISVC, parse_workload(HF_ISVC, get_catalog()), "p-old")
    legacy["metadata"]["annotations"].update(
        {PROPOSAL_ANNOTATION: "p-old", PREVIOUS_ANNOTATION: json.dumps(record)}
    )
    kserve.seed(legacy)
    original = cluster.get_deployment(REF).config
    n = len(kserve.calls)
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p-dry", dry_run=True)
    assert [c for c in kserve.calls[n:] if c.verb in ("create", "patch", "delete") and not c.dry_run] == []
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    _refused(cluster, kserve, original.with_changes(max_num_seqs=32), "p2")  # a pending record too
    n = len(kserve.calls)
    cluster.apply(REF, original.with_changes(max_num_seqs=16), proposal_id="p3", dry_run=True)
    assert [c for c in kserve.calls[n:] if c.verb in ("create", "patch") and not c.dry_run] == []


def test_each_retry_of_an_apply_reaches_its_real_patch(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """Four 503s on the real patch: four attempts, each past its dry run (the emulator's faults
    skip the dry run one at a time), and the last proposal still the one applied."""
    original = cluster.get_deployment(REF).config
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    n = len(kserve.calls)
    kserve.controls.faults.extend(Fault("patch", "inferenceservices", status=503, skip=1) for _ in range(4))
    with pytest.raises(BackendUnavailableError):
        cluster.apply(REF, original.with_changes(max_num_seqs=32), proposal_id="p2")
    real = [
        c
        for c in kserve.calls[n:]
        if (c.verb, c.resource, c.dry_run) == ("patch", "inferenceservices", False)
    ]
    assert len(real) == 4
    assert cluster.rollback(REF).proposal_id == "p1"


def test_a_proposal_that_renders_to_no_change_is_not_recorded(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """p2 only unsets max_model_len, which a patch leaves as it is (the parse is not a fixed
    point): nothing to patch, so nothing recorded, and p1 stays the one to roll back."""
    obj = copy.deepcopy(HF_ISVC)
    obj["spec"]["predictor"]["model"]["args"].append("--max-model-len=8192")
    kserve.seed(obj)
    original = cluster.get_deployment(REF).config
    assert original.max_model_len == 8192
    cluster.apply(REF, original.with_changes(max_num_seqs=64), proposal_id="p1")
    record = record_data(kserve)
    nothing = cluster.apply(REF, original.with_changes(max_num_seqs=64, max_model_len=None), proposal_id="p2")
    assert not nothing.changed and "already runs" in nothing.message and record_data(kserve) == record
    cluster.rollback(REF, proposal_id="p1")
    assert cluster.get_deployment(REF).config == original
