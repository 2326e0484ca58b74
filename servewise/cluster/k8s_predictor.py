"""A RawDeployment InferenceService's predictor Deployment, the one KServe writes the predictor into:
finding it, recording its generation on the InferenceService at a patch, and reading whether
KServe has caught up with the patch (``k8s_rollout.predictor_lag``) and rolled it out. A
Serverless InferenceService has none (Knative's revisions say the same)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servewise.cluster.k8s_api import KubeApi
from servewise.cluster.k8s_rollout import (
    DEPLOYMENT_MODE,
    KSERVE_ISVC_LABEL,
    PREDICTOR_GENERATION,
    RAW_DEPLOYMENT,
    evaluate_rollout,
    predictor_lag,
)
from servewise.domain import DeploymentRef, RolloutStatus


def predictor_deployment(api: KubeApi, ref: DeploymentRef, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Deployment KServe made for a RawDeployment InferenceService's predictor
    (``<name>-predictor``, or the older ``<name>-predictor-default``, owned by it; not a
    canary's or a multi-node worker's); None for Serverless or when there is none."""
    meta, state = obj.get("metadata") or {}, obj.get("status") or {}
    raw = RAW_DEPLOYMENT in (
        state.get("deploymentMode"),
        (meta.get("annotations") or {}).get(DEPLOYMENT_MODE),
    )
    revision = ((state.get("components") or {}).get("predictor") or {}).get("latestCreatedRevision")
    if revision and not raw:
        return None
    children = api.call(
        "list",
        "deployments",
        ref.namespace,
        api.apps.list_namespaced_deployment,
        ref.namespace,
        label_selector=f"{KSERVE_ISVC_LABEL}={ref.name}",
    ).get("items", [])
    uid = meta.get("uid")
    names = {f"{ref.name}-predictor", f"{ref.name}-predictor-default"}
    for child in children:
        child_meta = child.get("metadata") or {}
        if child_meta.get("name") in names and any(
            o.get("kind") == "InferenceService"
            and o.get("name") == ref.name
            and (not uid or not o.get("uid") or o.get("uid") == uid)
            for o in child_meta.get("ownerReferences") or []
        ):
            found: dict[str, Any] = child
            return found
    return None


def with_predictor_generation(
    api: KubeApi, ref: DeploymentRef, obj: Mapping[str, Any], ops: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``ops``, plus the predictor Deployment's generation recorded on the InferenceService
    (``PREDICTOR_GENERATION``) when they change the predictor's pod fields: the rollout is not
    done until KServe has written them into a newer generation."""
    pod_fields = [
        op for op in ops
        if op["path"].startswith("/spec/predictor/")
        and op["path"] not in ("/spec/predictor/minReplicas", "/spec/predictor/maxReplicas")
    ]  # fmt: skip
    if ref.kind != "InferenceService" or not pod_fields:
        return ops
    child = predictor_deployment(api, ref, obj)
    if child is None:
        return ops
    meta = child.get("metadata") or {}
    value = f"{meta.get('uid') or ''}/{meta.get('generation', 0)}"
    if not (obj.get("metadata") or {}).get("annotations"):
        return [
            *ops,
            {"op": "add", "path": "/metadata/annotations", "value": {PREDICTOR_GENERATION: value}},
        ]
    path = "/metadata/annotations/" + PREDICTOR_GENERATION.replace("~", "~0").replace("/", "~1")
    return [*ops, {"op": "add", "path": path, "value": value}]


def predictor_caught_up(
    api: KubeApi, ref: DeploymentRef, obj: dict[str, Any], status: RolloutStatus
) -> RolloutStatus:
    """A RawDeployment InferenceService reads ``Ready`` from before a patch until KServe has
    reconciled it: done only once its predictor's Deployment (``predictor_deployment``) has
    moved past the generation recorded at the patch, carries the predictor's spec
    (``predictor_lag``) and has rolled out; failed when that Deployment's rollout failed.
    Serverless and an InferenceService whose Deployment is not found keep ``Ready``'s verdict."""
    child = predictor_deployment(api, ref, obj)
    if child is None:
        return status
    lag = predictor_lag(obj, child)
    if lag is None:
        name = str(child["metadata"]["name"])
        rolled = evaluate_rollout(DeploymentRef(namespace=ref.namespace, name=name), child)
        if rolled.failed:
            return status.model_copy(
                update={"done": False, "failed": True, "reason": f"{name}: {rolled.reason}"}
            )
        if rolled.done:
            return status
        lag = (
            f"{name}: updated {rolled.updated_replicas}/{rolled.desired_replicas}, "
            f"available {rolled.available_replicas}/{rolled.desired_replicas}"
        )
    return status.model_copy(update={"done": False, "updated_replicas": 0, "events": [lag]})
