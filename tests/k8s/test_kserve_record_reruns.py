"""Re-runs and races around an InferenceService's ConfigMap record, and the annotation record of
a Deployment beside it: a concurrent apply between a patch and its record's promotion, a re-run of
an apply node, proposals that render to no change, an unreadable record (each a defect a review
reproduced)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from k8s_emulator import FaithfulEmulator, Fault
from test_kserve_records import record_data
from test_kserve_runtime import HF_ISVC, REF, kserve  # noqa: F401  (the fixture)

from servewise.cluster.k8s_records import PREVIOUS_ANNOTATION, PROPOSAL_ANNOTATION
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import DeploymentRef
from servewise.domain.quantization import Dtype
from servewise.errors import InputError

VLLM_D = DeploymentRef(name="vllm-d", namespace="llm-serving", kind="Deployment")


def _vllm_deployment(flags: list[str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A plain vLLM Deployment of Llama 3.1 8B on one H100 with ``flags`` after its model."""
    labels = {"app": VLLM_D.name}
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.6.3",
        "args": ["--model=meta-llama/Llama-3.1-8B-Instruct", *flags],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    pod = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "containers": [container]}
    meta: dict[str, Any] = {"name": VLLM_D.name, "namespace": VLLM_D.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def test_a_promotion_conflict_still_reports_the_landed_apply(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """Another writer moves the ConfigMap between the patch and the promotion (or a timed-out
    promotion landed): the promotion re-reads instead of re-running the apply, which reports its patch."""
    original = cluster.get_deployment(REF).config
    target = original.with_changes(max_num_seqs=64)
    kserve.controls.faults.append(Fault("patch", "configmaps", bump_resource_version=True))  # the promotion
    result = cluster.apply(REF, target, proposal_id="p1")
    assert cluster.get_deployment(REF).config == target
    assert result.changed and result.patch and result.previous == original


def test_a_concurrent_apply_between_patch_and_promotion_stands(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """Workflow 1 applies pA; workflow 2 applies pB after pA's patch landed but before pA's
    promotion: pA's promotion finds the record moved on and leaves it; pB, applied last, runs."""
    other = KubernetesCluster(context="kmock", poll_interval_s=0.05, request_timeout_s=5)
    original = cluster.get_deployment(REF).config
    a, b = original.with_changes(max_num_seqs=64), original.with_changes(max_num_seqs=32)
    write, fired, results = cluster.records.write, [], {}

    def racing_write(ref, owner, record, held, *, pending=None, dry_run):  # type: ignore[no-untyped-def]
        if not fired and not dry_run and pending is None and record.proposal_id == "pA":
            fired.append(1)  # pA's patch has landed; its promotion is next
            results["pB"] = other.apply(REF, b, proposal_id="pB")
        return write(ref, owner, record, held, pending=pending, dry_run=dry_run)

    cluster.records.write = racing_write  # type: ignore[method-assign]
    results["pA"] = cluster.apply(REF, a, proposal_id="pA")
    assert results["pB"].changed
    # the later apply (pB) should be what runs, as with the annotation design; pA is not re-patched
    assert cluster.get_deployment(REF).config == b, record_data(kserve)


def test_a_rerun_of_a_config_whose_parse_is_not_a_fixed_point_keeps_the_rollback_record(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """p1 (max_num_seqs 64, max_model_len unset) lands; the patch leaves --max-model-len as it is.
    The workflow's re-run of the apply node is a no-op, and rolling back p1 restores 128."""
    obj = copy.deepcopy(HF_ISVC)
    obj["spec"]["predictor"]["model"]["args"].append("--max-model-len=8192")
    kserve.seed(obj)
    original = cluster.get_deployment(REF).config
    target = original.with_changes(max_num_seqs=64, max_model_len=None)
    assert cluster.apply(REF, target, proposal_id="p1").changed
    assert record_data(kserve)["proposal-id"] == "p1"
    again = cluster.apply(REF, target, proposal_id="p1")  # LangGraph re-runs the node
    cluster.rollback(REF, proposal_id="p1")
    after_rollback = cluster.get_deployment(REF).config
    assert (again.changed, again.patch, after_rollback.max_num_seqs) == (False, [], 128)


def test_the_same_rerun_on_a_deployment_is_a_no_op(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """The same re-run on a Deployment (annotation record): already applied; rollback restores."""
    kserve.seed(_vllm_deployment(["--max-num-seqs=128", "--max-model-len=8192"]))
    ref = VLLM_D
    original = cluster.get_deployment(ref).config
    target = original.with_changes(max_num_seqs=64, max_model_len=None)
    assert cluster.apply(ref, target, proposal_id="p1").changed
    assert not cluster.apply(ref, target, proposal_id="p1").changed
    cluster.rollback(ref, proposal_id="p1")
    assert cluster.get_deployment(ref).config == original


def test_a_kv_cache_fp16_proposal_on_bf16_is_no_change(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """fp16 and bf16 KV caches both render as 'auto': nothing to patch, so no change and no record."""
    original = cluster.get_deployment(REF).config
    target = original.with_changes(
        quantization=original.quantization.model_copy(update={"kv_cache": Dtype.FP16})
    )
    first = cluster.apply(REF, target, proposal_id="p-kv")
    again = cluster.apply(REF, target, proposal_id="p-kv")
    assert not (first.changed and not first.patch) and not again.changed


def test_a_deployment_with_an_unreadable_old_record_still_takes_a_new_proposal(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    """An unreadable record in a Deployment's annotations is no record to apply over (a new proposal
    overwrites it, as before ConfigMap records), and an error naming it to roll back."""
    unreadable = {PROPOSAL_ANNOTATION: "old", PREVIOUS_ANNOTATION: "{truncated"}
    kserve.seed(_vllm_deployment(["--max-num-seqs=128"], annotations=unreadable))
    ref = VLLM_D
    original = cluster.get_deployment(ref).config
    with pytest.raises(InputError, match="record is unreadable"):
        cluster.rollback(ref)
    assert cluster.apply(ref, original.with_changes(max_num_seqs=64), proposal_id="p1").changed
    cluster.rollback(ref, proposal_id="p1")
    assert cluster.get_deployment(ref).config == original
