"""Re-runs of an apply (a LangGraph node runs again on resume): a no-op for every kind and engine
spelling, whatever else changed the workload since (an HPA), while the same proposal id with
another config (an approver's edit) is applied anew; SGLang's shared chunked-prefill flag."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from k8s_emulator import FaithfulEmulator
from test_kserve_runtime import HF_ISVC, REF, kserve  # noqa: F401  (the fixture)

from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import DeploymentRef
from servewise.errors import BackendUnavailableError

BIG = DeploymentRef(name="llama-70b", namespace="llm-serving")
SGL = DeploymentRef(name="qwen-7b-sglang", namespace="llm-serving")


def _args(fleet: FaithfulEmulator, ref: DeploymentRef) -> list[str]:
    return fleet.get("Deployment", ref.namespace, ref.name)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]


def _sglang_without_chunked_prefill(fleet: FaithfulEmulator) -> None:
    dep = fleet.get("Deployment", SGL.namespace, SGL.name)
    dep["spec"]["template"]["spec"]["containers"][0]["args"] += ["--chunked-prefill-size", "-1"]
    dep["metadata"]["resourceVersion"] = "9001"
    fleet.put("Deployment", SGL.namespace, SGL.name, dep)


def test_sglang_chunked_prefill_and_its_budget_share_one_flag(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """SGLang's --chunked-prefill-size is the prefill budget and, at -1, chunked prefill off: a
    budget change while it stays off renders to nothing (writing it would turn chunking on, which
    the proposal did not ask for); turning it on writes the budget, off writes -1, and re-runs
    of each are no-ops."""
    _sglang_without_chunked_prefill(fleet)
    original = cluster.get_deployment(SGL).config
    assert original.enable_chunked_prefill is False
    budget = cluster.apply(SGL, original.with_changes(max_num_batched_tokens=16384), proposal_id="p0")
    assert not budget.changed and "already runs" in budget.message
    assert cluster.get_deployment(SGL).config.enable_chunked_prefill is False
    on = original.with_changes(enable_chunked_prefill=True, max_num_batched_tokens=4096)
    assert cluster.apply(SGL, on, proposal_id="p1").changed
    assert "--chunked-prefill-size" in " ".join(_args(fleet, SGL)) and "4096" in " ".join(_args(fleet, SGL))
    assert cluster.get_deployment(SGL).config == on
    again = cluster.apply(SGL, on, proposal_id="p1")
    assert not again.changed and again.previous == original
    cluster.rollback(SGL, proposal_id="p1")
    assert cluster.get_deployment(SGL).config == original


def test_rerun_after_an_hpa_scaled_the_deployment_keeps_the_rollback_record(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """p1 (max_num_seqs 64) lands; an HPA then scales the Deployment; the apply node re-runs (resume
    after a crash before the audit write). Rolling back p1 must restore the original args."""
    original_args = _args(fleet, BIG)
    original = cluster.get_deployment(BIG).config
    target = original.with_changes(max_num_seqs=64)
    assert cluster.apply(BIG, target, proposal_id="p1").changed
    dep = fleet.get("Deployment", BIG.namespace, BIG.name)
    dep["spec"]["replicas"] = original.replicas + 3  # the HPA
    dep["metadata"]["resourceVersion"] = "9002"
    fleet.put("Deployment", BIG.namespace, BIG.name, dep)
    again = cluster.apply(BIG, target, proposal_id="p1")
    cluster.rollback(BIG, proposal_id="p1")
    assert (again.changed, again.previous.max_num_seqs, cluster.get_deployment(BIG).config.max_num_seqs) == (
        False,
        original.max_num_seqs,
        original.max_num_seqs,
    )
    assert _args(fleet, BIG) == original_args


def test_a_timed_out_patch_that_landed_is_already_applied_with_the_right_previous(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """Deployment: the PATCH lands but the client times out; tenacity retries from a fresh read."""
    original = cluster.get_deployment(BIG).config
    real, calls = cluster._patch, []

    def landed_then_timeout(
        ref: DeploymentRef, ops: list[dict[str, Any]], *, dry_run: bool
    ) -> dict[str, Any]:
        out = real(ref, ops, dry_run=dry_run)
        if not dry_run and not calls:
            calls.append(1)
            raise BackendUnavailableError("timed out")
        return out

    cluster._patch = landed_then_timeout  # type: ignore[method-assign]
    target = original.with_changes(max_num_seqs=64)
    result = cluster.apply(BIG, target, proposal_id="p1")
    assert result.previous == original and "already applied" in result.message
    cluster.rollback(BIG, proposal_id="p1")
    assert cluster.get_deployment(BIG).config == original


def test_an_id_reused_for_another_config_rolls_back_to_the_first_apply(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """apply X as p1, apply Y as p1: rollback(p1) restores X (one level: the spec before the last apply)."""
    original = cluster.get_deployment(BIG).config
    x, y = original.with_changes(max_num_seqs=64), original.with_changes(max_num_seqs=32)
    cluster.apply(BIG, x, proposal_id="p1")
    assert cluster.apply(BIG, y, proposal_id="p1").previous == x
    cluster.rollback(BIG, proposal_id="p1")
    assert cluster.get_deployment(BIG).config == x


def test_isvc_rerun_after_replicas_above_max_and_tp_change_is_a_no_op(
    cluster: KubernetesCluster,
    kserve: FaithfulEmulator,  # noqa: F811
) -> None:
    obj = copy.deepcopy(HF_ISVC)
    obj["spec"]["predictor"]["maxReplicas"] = 3
    obj["metadata"]["resourceVersion"] = "9003"
    kserve.put("InferenceService", REF.namespace, REF.name, obj)
    original = cluster.get_deployment(REF).config
    target = original.with_changes(replicas=5, tensor_parallel=2, gpu="h200", model="qwen2.5-7b")
    assert cluster.apply(REF, target, proposal_id="p1").changed
    again = cluster.apply(REF, target, proposal_id="p1")
    assert not again.changed and again.previous == original
    cluster.rollback(REF, proposal_id="p1")
    assert cluster.get_deployment(REF).config == original


@pytest.mark.parametrize(
    ("ref", "changes"),
    [
        (
            DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet"),
            {"gpu": "a100-80gb", "replicas": 1, "max_num_seqs": 64},
        ),
        (
            DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet"),
            {"gpu": "h100-sxm", "model": "qwen2.5-7b", "quantization": None},
        ),
        (
            DeploymentRef(name="mistral-tgi", namespace="llm-serving"),
            {"max_num_seqs": 8, "max_num_batched_tokens": 2048, "max_model_len": 4096, "gpu": "l4"},
        ),
        (SGL, {"tensor_parallel": 2, "enable_prefix_caching": False, "gpu_memory_utilization": 0.9}),
    ],
)
def test_reruns_are_no_ops(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, ref: DeploymentRef, changes: dict[str, Any]
) -> None:
    from servewise.domain import Quantization

    original = cluster.get_deployment(ref).config
    if "quantization" in changes:
        changes = {**changes, "quantization": Quantization()}
    target = original.with_changes(**changes)
    assert cluster.apply(ref, target, proposal_id="p1").changed
    again = cluster.apply(ref, target, proposal_id="p1")
    assert not again.changed and again.previous == original
    cluster.rollback(ref, proposal_id="p1")
    assert cluster.get_deployment(ref).config == original
