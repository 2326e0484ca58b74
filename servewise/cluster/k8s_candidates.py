"""Benchmarking a candidate config on a cluster: a temporary copy of the workload, then the Job.

The copy is the workload with the candidate's edits (``desired_object``: the edits a proposal
would patch in), one replica, its own name, and pod labels of its own (``servewise.io/candidate``)
so that neither the workload's Service nor its controller takes its pods; its own Service fronts
it. It runs in the workload's namespace, where the workload's secrets, volumes and service account
are. It is created after a server-side dry run, awaited until ready (out of memory, unschedulable
and crash loops fail it), benchmarked by the same Job as a deployed config, and deleted with its
Service whatever happens. ``SERVEWISE_CANDIDATE_BENCHMARKS=0`` turns candidate benchmarks off.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from servewise.cluster.k8s_api import KubeApi
from servewise.cluster.k8s_benchmark import BENCHMARK_LABEL
from servewise.cluster.k8s_parsing import ParsedWorkload, Resolver
from servewise.cluster.k8s_patching import desired_object
from servewise.domain import ServingConfig
from servewise.errors import InputError, NotFoundError, ServewiseError

log = logging.getLogger(__name__)

CANDIDATE_LABEL = "servewise.io/candidate"
CANDIDATE_CONFIG_ANNOTATION = "servewise.io/candidate-config"
CANDIDATE_BENCHMARKS_ENV = "SERVEWISE_CANDIDATE_BENCHMARKS"


def candidate_name(parsed: ParsedWorkload, config: ServingConfig) -> str:
    """A DNS label (Services need one) unique to this workload, config and moment."""
    digest = hashlib.sha256(config.model_dump_json().encode() + str(time.time_ns()).encode()).hexdigest()
    return f"sw-cand-{parsed.name[:40].rstrip('-')}-{digest[:8]}".lower()


def candidate_manifests(
    obj: Mapping[str, Any], parsed: ParsedWorkload, config: ServingConfig, resolver: Resolver, name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The candidate's workload (one replica of ``config``) and the Service that fronts it."""
    if parsed.kind not in ("Deployment", "StatefulSet"):
        raise InputError(
            f"{parsed.namespace}/{parsed.name} is a {parsed.kind}: candidate benchmarks copy Deployments"
            " and StatefulSets; apply the candidate first (dry run + approval) or benchmark it on the twin",
            field="config",
        )
    if obj.get("spec", {}).get("volumeClaimTemplates"):
        raise InputError(
            f"{parsed.namespace}/{parsed.name} claims volumes per replica (volumeClaimTemplates): a"
            " candidate copy would leave claims behind; apply the candidate first or benchmark it on the twin",
            field="config",
        )
    new = desired_object(obj, parsed, config.with_changes(replicas=1), resolver, proposal_id=name)
    labels = {
        CANDIDATE_LABEL: name,
        BENCHMARK_LABEL: f"{parsed.namespace}.{parsed.name}"[:63],
        "app.kubernetes.io/managed-by": "servewise",
    }
    # a fresh object: none of the original's server fields, annotations (proposal records) or owners
    new["apiVersion"], new["kind"] = "apps/v1", parsed.kind
    new["metadata"] = {
        "name": name,
        "namespace": parsed.namespace,
        "labels": labels,
        "annotations": {CANDIDATE_CONFIG_ANNOTATION: config.model_dump_json()},
    }
    new.pop("status", None)
    spec = new.setdefault("spec", {})
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": {CANDIDATE_LABEL: name}}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {CANDIDATE_LABEL: name, "app.kubernetes.io/managed-by": "servewise"}
    if parsed.kind == "StatefulSet":
        spec["serviceName"] = name
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": parsed.namespace, "labels": labels},
        "spec": {
            "selector": {CANDIDATE_LABEL: name},
            "ports": [{"name": "http", "port": parsed.port, "targetPort": parsed.port}],
        },
    }
    return new, service


class CandidateWorkloads:
    """Create and delete candidate copies (and their Services) through ``api``."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def _workload_calls(self, kind: str) -> tuple[str, Callable[..., Any], Callable[..., Any]]:
        if kind == "StatefulSet":
            return (
                "statefulsets",
                self.api.apps.create_namespaced_stateful_set,
                self.api.apps.delete_namespaced_stateful_set,
            )
        return (
            "deployments",
            self.api.apps.create_namespaced_deployment,
            self.api.apps.delete_namespaced_deployment,
        )

    def create(self, workload: dict[str, Any], service: dict[str, Any]) -> None:
        """Dry-run the workload on the server, then create it and its Service."""
        kind, ns = workload["kind"], workload["metadata"]["namespace"]
        resource, create, _ = self._workload_calls(kind)
        self.api.call("create", resource, ns, create, ns, workload, dry_run="All")
        self.api.call("create", resource, ns, create, ns, workload)
        self.api.call("create", "services", ns, self.api.core.create_namespaced_service, ns, service)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete the candidate and its Service; what is already gone is fine, and a failure is
        logged (cleanup must not hide the benchmark's own error)."""
        resource, _, delete = self._workload_calls(kind)
        for res, fn in ((resource, delete), ("services", self.api.core.delete_namespaced_service)):
            try:
                self.api.call(
                    "delete", res, namespace, fn, name, namespace, name=name, propagation_policy="Background"
                )
            except NotFoundError:
                pass
            except ServewiseError as exc:
                log.warning("could not delete benchmark candidate %s %s/%s: %s", res, namespace, name, exc)
