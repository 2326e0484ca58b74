"""Benchmarks on a cluster run on a temporary copy of the workload, never on production.

The copy is the workload with the benchmarked config's edits (``desired_object``: the edits a
proposal would patch in; none for the deployed config), one replica, its own name, and pod labels of
its own (``servewise.io/candidate``) so that neither the workload's Service nor its controller takes
its pods; its own Service fronts it. It runs in the workload's namespace, where the workload's
secrets, volumes and service account are, without the original's priority class (it must not
preempt production pods) or host ports. It is created after a server-side dry run, awaited until
ready (out of memory and crash loops fail it), benchmarked by the Job, and deleted with its Service
(deletes are retried). A StatefulSet's copy claims fresh volumes of its own (its
``volumeClaimTemplates``), deleted with it. An InferenceService's copy is an InferenceService of one
predictor replica; KServe makes its pods, labels and Service (``<copy>-predictor``). A copy left behind by a killed process carries ``servewise.io/expires-at``:
the next benchmark in its namespace deletes it. ``SERVEWISE_CANDIDATE_BENCHMARKS=0`` turns
benchmarks on the cluster off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servewise.cluster.k8s_api import KSERVE, KubeApi
from servewise.cluster.k8s_benchmark import BENCHMARK_LABEL, label_value, unique_name
from servewise.cluster.k8s_parsing import ParsedWorkload, Resolver
from servewise.cluster.k8s_patching import desired_object
from servewise.domain import ServingConfig
from servewise.errors import InputError, NotFoundError, ServewiseError

log = logging.getLogger(__name__)

CANDIDATE_LABEL = "servewise.io/candidate"
CANDIDATE_CONFIG_ANNOTATION = "servewise.io/candidate-config"
EXPIRES_ANNOTATION = "servewise.io/expires-at"
CANDIDATE_BENCHMARKS_ENV = "SERVEWISE_CANDIDATE_BENCHMARKS"


def candidate_name(parsed: ParsedWorkload, config: ServingConfig) -> str:
    """A DNS-1035 label (Services need one: no dots) unique to this workload, config and moment."""
    # a StatefulSet's pods carry a label of its name + an 11-character hash, at most 63 in all; KServe
    # and Knative add "-predictor-00001-deployment-..." to an InferenceService's
    keep = {"StatefulSet": 30, "InferenceService": 20}.get(parsed.kind, 40)
    return unique_name("sw-cand", parsed.name, config.model_dump_json(), keep)


def candidate_manifests(
    obj: Mapping[str, Any],
    parsed: ParsedWorkload,
    config: ServingConfig,
    resolver: Resolver,
    name: str,
    *,
    expires_at: datetime,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The copy (one replica of ``config``) and the Service that fronts it (None for an
    InferenceService: KServe makes the copy's own ``<copy>-predictor`` Service)."""
    if parsed.kind not in ("Deployment", "StatefulSet", "InferenceService"):
        raise InputError(
            f"{parsed.namespace}/{parsed.name} is a {parsed.kind}: benchmarks on a cluster run on a copy,"
            " and only Deployments, StatefulSets and InferenceServices are copied; benchmark it on the twin",
            field="config",
        )
    labels = {
        CANDIDATE_LABEL: name,
        BENCHMARK_LABEL: label_value(f"{parsed.namespace}.{parsed.name}"),
        "app.kubernetes.io/managed-by": "servewise",
    }
    expires = expires_at.isoformat(timespec="seconds")
    if parsed.kind == "InferenceService":
        return inference_service_copy(obj, parsed, config, resolver, name, labels, expires), None
    new = desired_object(obj, parsed, config.with_changes(replicas=1), resolver)
    # a fresh object: none of the original's server fields, annotations (proposal records) or owners
    new["apiVersion"], new["kind"] = "apps/v1", parsed.kind
    new["metadata"] = {
        "name": name,
        "namespace": parsed.namespace,
        "labels": labels,
        "annotations": {
            CANDIDATE_CONFIG_ANNOTATION: config.model_dump_json(),
            EXPIRES_ANNOTATION: expires,
        },
    }
    new.pop("status", None)
    spec = new.setdefault("spec", {})
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": {CANDIDATE_LABEL: name}}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {CANDIDATE_LABEL: name, "app.kubernetes.io/managed-by": "servewise"}
    pod = spec["template"].setdefault("spec", {})
    pod.pop("priorityClassName", None)  # a benchmark must not preempt production pods for GPUs
    pod.pop("priority", None)
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        for port in container.get("ports") or []:
            port.pop("hostPort", None)  # would clash with the original on the same node
    if parsed.kind == "StatefulSet":
        spec["serviceName"] = name
        _claims_go_with_the_copy(spec, labels, expires)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": parsed.namespace,
            "labels": labels,
            "annotations": {EXPIRES_ANNOTATION: expires},
        },
        "spec": {
            "selector": {CANDIDATE_LABEL: name},
            "ports": [{"name": "http", "port": parsed.port, "targetPort": parsed.port}],
        },
    }
    return new, service


def _kserve_key(key: str) -> bool:
    """Labels and annotations that steer KServe, Knative or Istio (deployment mode, visibility,
    autoscaler class, sidecar injection): the copy must be served the way the original is."""
    return any(domain in key for domain in ("kserve.io", "knative.dev", "istio.io"))


def inference_service_copy(
    obj: Mapping[str, Any],
    parsed: ParsedWorkload,
    config: ServingConfig,
    resolver: Resolver,
    name: str,
    labels: dict[str, str],
    expires: str,
) -> dict[str, Any]:
    """An InferenceService of one predictor replica (min = max = 1) running ``config``, reachable
    only inside the cluster. KServe labels its pods ``serving.kserve.io/inferenceservice: <copy>``;
    the predictor's own pod labels are dropped (a Service, PodMonitor or NetworkPolicy selecting
    production's pods would select the copy), and so are its payload logger (benchmark requests
    are not users') and canary split; transformers and explainers are left out (the benchmark
    talks to the predictor). It keeps production's deployment mode, recorded in its status when no
    annotation sets it, and (Serverless) keeps Knative's activator out of its path at one replica."""
    new = desired_object(obj, parsed, config.with_changes(replicas=1), resolver)
    meta = obj.get("metadata") or {}
    new["metadata"] = {
        "name": name,
        "namespace": parsed.namespace,
        "labels": {**{k: v for k, v in (meta.get("labels") or {}).items() if _kserve_key(k)}, **labels},
        "annotations": {
            **{k: v for k, v in (meta.get("annotations") or {}).items() if _kserve_key(k)},
            CANDIDATE_CONFIG_ANNOTATION: config.model_dump_json(),
            EXPIRES_ANNOTATION: expires,
        },
    }
    annotations, status = new["metadata"]["annotations"], obj.get("status") or {}
    if "serving.kserve.io/deploymentMode" not in annotations and status.get("deploymentMode"):
        annotations["serving.kserve.io/deploymentMode"] = str(status["deploymentMode"])
    annotations.setdefault("autoscaling.knative.dev/target-burst-capacity", "0")
    new["metadata"]["labels"]["networking.kserve.io/visibility"] = "cluster-local"
    new.pop("status", None)
    spec = new["spec"]
    for component in ("transformer", "explainer"):
        spec.pop(component, None)
    predictor = spec["predictor"]
    for field in ("labels", "logger", "canaryTrafficPercent"):
        predictor.pop(field, None)
    predictor["minReplicas"], predictor["maxReplicas"] = 1, 1
    predictor.pop("priorityClassName", None)  # a benchmark must not preempt production pods for GPUs
    predictor.pop("priority", None)
    engines = [*(predictor.get("containers") or []), *([predictor["model"]] if "model" in predictor else [])]
    for container in [*engines, *(predictor.get("initContainers") or [])]:
        for port in container.get("ports") or []:
            port.pop("hostPort", None)
    return new


def _claims_go_with_the_copy(spec: dict[str, Any], labels: dict[str, str], expires: str) -> None:
    """A copy's replica gets claims of its own (``<template>-<copy>-0``: fresh volumes, never
    production's), which the StatefulSet controller deletes with the copy (Kubernetes 1.27+); they
    carry the copy's labels and expiry, so ``delete`` and ``sweep`` remove any an older cluster keeps."""
    claims = spec.get("volumeClaimTemplates") or []
    if not claims:
        return
    spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Delete"}
    for claim in claims:
        meta = claim.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        meta["annotations"] = {**(meta.get("annotations") or {}), EXPIRES_ANNOTATION: expires}
        claim.pop("status", None)


@dataclass(frozen=True)
class _Calls:
    """The API calls servewise makes on one kind of object a benchmark copy consists of."""

    resource: str
    create: Callable[..., Any]
    delete: Callable[..., Any]
    list: Callable[..., Any]


class CandidateWorkloads:
    """Create and delete benchmark copies (and their Services) through ``api``."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        apps, core, custom = api.apps, api.core, api.custom
        self.calls = {
            "Deployment": _Calls(
                "deployments",
                apps.create_namespaced_deployment,
                apps.delete_namespaced_deployment,
                apps.list_namespaced_deployment,
            ),
            "StatefulSet": _Calls(
                "statefulsets",
                apps.create_namespaced_stateful_set,
                apps.delete_namespaced_stateful_set,
                apps.list_namespaced_stateful_set,
            ),
            "Service": _Calls(
                "services",
                core.create_namespaced_service,
                core.delete_namespaced_service,
                core.list_namespaced_service,
            ),
            "InferenceService": _Calls(
                KSERVE[2],
                lambda ns, body, **kw: custom.create_namespaced_custom_object(
                    *KSERVE[:2], ns, KSERVE[2], body, **kw
                ),
                lambda name, ns, **kw: custom.delete_namespaced_custom_object(
                    *KSERVE[:2], ns, KSERVE[2], name, **kw
                ),
                lambda ns, **kw: custom.list_namespaced_custom_object(*KSERVE[:2], ns, KSERVE[2], **kw),
            ),
            "PersistentVolumeClaim": _Calls(  # made by the StatefulSet controller, never by servewise
                "persistentvolumeclaims",
                core.create_namespaced_persistent_volume_claim,
                core.delete_namespaced_persistent_volume_claim,
                core.list_namespaced_persistent_volume_claim,
            ),
        }

    def create(self, workload: dict[str, Any], service: dict[str, Any] | None) -> None:
        """Dry-run the workload on the server, then create it and its Service (if it has one)."""
        ns = workload["metadata"]["namespace"]
        kind, svc = self.calls[workload["kind"]], self.calls["Service"]
        self.api.call("create", kind.resource, ns, kind.create, ns, workload, dry_run="All")
        self.api.call("create", kind.resource, ns, kind.create, ns, workload)
        if service is not None:
            self.api.call("create", svc.resource, ns, svc.create, ns, service)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the copy, its Service and (a StatefulSet's) its replica's volume claims, retrying
        what may pass (a timeout, a 5xx); what is already gone is fine. False (and a warning) when
        something could not be deleted: the caller keeps its result or its own error, and a later
        benchmark's sweep deletes the rest."""
        done = [self._delete_one(kind, namespace, name)]
        if kind != "InferenceService":  # KServe deletes the Services it made with the copy
            done.append(self._delete_one("Service", namespace, name))
        if kind == "StatefulSet":
            try:
                claims = self._claims_of(namespace, name)
            except ServewiseError as exc:
                log.warning(
                    "could not list the volume claims of benchmark copy %s/%s: %s", namespace, name, exc
                )
                claims, done = [], [*done, False]
            done += [self._delete_one("PersistentVolumeClaim", namespace, claim) for claim in claims]
        return all(done)

    def _claims_of(self, namespace: str, copy: str) -> list[str]:
        calls = self.calls["PersistentVolumeClaim"]
        listed = self.api.call(
            "list",
            calls.resource,
            namespace,
            calls.list,
            namespace,
            label_selector=f"{CANDIDATE_LABEL}={copy}",
        )
        return [
            str(item["metadata"]["name"])
            for item in listed.get("items", [])
            if _claim_of(item.get("metadata") or {}) == copy
        ]

    def _delete_one(self, kind: str, namespace: str, name: str) -> bool:
        calls = self.calls[kind]
        try:
            self.api.call(
                "delete", calls.resource, namespace, calls.delete, name, namespace,
                name=name, idempotent=True, propagation_policy="Background",
            )  # fmt: skip
        except NotFoundError:
            pass
        except ServewiseError as exc:
            log.warning(
                "could not delete benchmark copy %s %s/%s: %s (kubectl delete -n %s %s/%s)",
                calls.resource, namespace, name, exc, namespace, calls.resource, name,
            )  # fmt: skip
            return False
        return True

    def sweep(self, namespace: str, now: datetime) -> list[str]:
        """Delete the copies (and Services) in ``namespace`` whose ``servewise.io/expires-at`` has
        passed, left by a process killed mid-benchmark; returns the names deleted. Only objects
        servewise made are touched: ``managed-by=servewise``, a ``sw-cand-`` name equal to their
        ``servewise.io/candidate`` label."""
        selector = f"{CANDIDATE_LABEL},app.kubernetes.io/managed-by=servewise"
        swept = []
        for kind, calls in self.calls.items():
            try:
                listed = self.api.call(
                    "list", calls.resource, namespace, calls.list, namespace, label_selector=selector
                )
            except NotFoundError:  # KServe not installed: no InferenceServices to sweep
                continue
            except ServewiseError as exc:  # a 403 on one kind: sweep the others
                log.warning(
                    "could not list %s in %s to sweep expired benchmark copies: %s",
                    calls.resource,
                    namespace,
                    exc,
                )
                continue
            for item in listed.get("items", []):
                meta = item.get("metadata") or {}
                name = str(meta.get("name", ""))
                owner = _claim_of(meta) if kind == "PersistentVolumeClaim" else name
                if (
                    not owner
                    or not owner.startswith("sw-cand-")
                    or (meta.get("labels") or {}).get(CANDIDATE_LABEL) != owner
                ):
                    continue
                expires = (meta.get("annotations") or {}).get(EXPIRES_ANNOTATION)
                if _expired(expires, now) and self._delete_one(kind, namespace, name):
                    swept.append(f"{calls.resource}/{name}")
        return swept


def _claim_of(meta: Mapping[str, Any]) -> str | None:
    """The copy a volume claim belongs to: its candidate label, when the name is the StatefulSet
    controller's ``<template>-<copy>-<ordinal>`` for it (and it is servewise's)."""
    labels = meta.get("labels") or {}
    copy = labels.get(CANDIDATE_LABEL)
    if labels.get("app.kubernetes.io/managed-by") != "servewise" or not copy:
        return None
    name = str(meta.get("name", ""))
    head, _, ordinal = name.rpartition("-")
    return str(copy) if head.endswith(f"-{copy}") and ordinal.isdigit() else None


def _expired(stamp: str | None, now: datetime) -> bool:
    """Whether an ``expires-at`` stamp has passed (a stamp without a zone is UTC; junk never expires)."""
    try:
        at = datetime.fromisoformat(stamp or "")
    except ValueError:
        return False
    return (at if at.tzinfo else at.replace(tzinfo=UTC)) <= now
