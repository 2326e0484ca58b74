"""Where servewise keeps its record of the last proposal applied to a workload.

A record is the proposal id and what rollback needs to restore the spec from before it
(``k8s_patching.previous_record``), or, once rolled back, the id of the proposal rolled back. It
makes applying a proposal twice a no-op and a rollback exact.

- **Deployments and StatefulSets** keep it in annotations on the workload, written by the same JSON
  patch as the change: one atomic write. A Deployment's own annotations are not its pods'.
- **InferenceServices** keep it in a ConfigMap beside them, ``servewise-record-<name>``, owned by the
  InferenceService (deleted with it). KServe copies an InferenceService's annotations into its
  predictor's pod template, so a record there would change the template, and restart every
  predictor pod, at each apply and rollback: a replicas-only proposal included.

The ConfigMap and the InferenceService are two writes, so their order makes each interruption safe
to redo from a fresh read: ``apply`` writes the record first and then patches (a record whose patch
never landed is seen as such: the workload does not hold the change, and ``apply`` patches again);
``rollback`` patches first and then writes (a rollback redone restores nothing more and writes the
record). Both writes are dry-run first, so missing RBAC on ConfigMaps stops a change before it starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servewise.cluster.k8s_api import KubeApi
from servewise.domain import DeploymentRef, ServingConfig
from servewise.errors import InputError, NotFoundError

log = logging.getLogger(__name__)

PROPOSAL_ANNOTATION = "servewise.io/proposal-id"
PREVIOUS_ANNOTATION = "servewise.io/previous-spec"
ROLLED_BACK_ANNOTATION = "servewise.io/rolled-back-proposal"
RECORD_PREFIX = "servewise-record-"
RECORD_LABEL = "servewise.io/record-for"
# annotation -> ConfigMap data key (a data key may not hold "/")
_DATA_KEYS = {
    PROPOSAL_ANNOTATION: "proposal-id",
    PREVIOUS_ANNOTATION: "previous-spec",
    ROLLED_BACK_ANNOTATION: "rolled-back-proposal",
}


@dataclass(frozen=True)
class Record:
    """The last proposal applied (with the spec before it), or the last one rolled back."""

    proposal_id: str | None = None
    previous: Mapping[str, Any] | None = None
    rolled_back: str | None = None

    @classmethod
    def parse(cls, entries: Mapping[str, Any], source: str) -> Record:
        """From annotations (or ConfigMap data, its keys mapped to annotation names)."""
        text = entries.get(PREVIOUS_ANNOTATION)
        try:
            previous = json.loads(text) if text else None
        except ValueError as exc:
            raise InputError(f"{PREVIOUS_ANNOTATION} is not JSON: {exc}", source=source) from exc
        if previous is not None and not isinstance(previous, Mapping):
            raise InputError(f"{PREVIOUS_ANNOTATION} is not a JSON object", source=source)
        return cls(
            proposal_id=entries.get(PROPOSAL_ANNOTATION) or None,
            previous=previous,
            rolled_back=entries.get(ROLLED_BACK_ANNOTATION) or None,
        )

    def entries(self) -> dict[str, str]:
        """As annotations: only the fields set."""
        out: dict[str, str] = {}
        if self.proposal_id:
            out[PROPOSAL_ANNOTATION] = self.proposal_id
        if self.previous is not None:
            out[PREVIOUS_ANNOTATION] = json.dumps(self.previous, sort_keys=True)
        if self.rolled_back:
            out[ROLLED_BACK_ANNOTATION] = self.rolled_back
        return out

    def previous_config(self) -> ServingConfig | None:
        config = (self.previous or {}).get("config")
        return ServingConfig.model_validate(config) if config else None


def in_configmap(kind: str) -> bool:
    """Does a workload of this kind keep its record in a ConfigMap (else in its annotations)?"""
    return kind == "InferenceService"


def record_name(workload: str) -> str:
    return f"{RECORD_PREFIX}{workload}"


class RecordKeeper:
    """Reads and writes a workload's record where its kind keeps it."""

    def __init__(self, api: KubeApi):
        self.api = api

    def read(self, ref: DeploymentRef, obj: Mapping[str, Any]) -> tuple[Record, dict[str, Any] | None]:
        """The record, and the ConfigMap it was read from (``None``: annotations, or none yet)."""
        if not in_configmap(ref.kind):
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            return Record.parse(annotations, source=f"{ref.key} annotations"), None
        name = record_name(ref.name)
        try:
            held: dict[str, Any] = self.api.call(
                "get",
                "configmaps",
                ref.namespace,
                self.api.core.read_namespaced_config_map,
                name,
                ref.namespace,
                name=name,
            )
        except NotFoundError:
            return Record(), None
        data = held.get("data") or {}
        entries = {annotation: data.get(key) for annotation, key in _DATA_KEYS.items()}
        return Record.parse(entries, source=f"ConfigMap {ref.namespace}/{name}"), held

    def stage(self, ref: DeploymentRef, desired: dict[str, Any], record: Record) -> None:
        """Put ``record`` into the desired workload when its kind keeps it in annotations."""
        if in_configmap(ref.kind):
            return
        annotations = desired.setdefault("metadata", {}).setdefault("annotations", {})
        for key in _DATA_KEYS:
            annotations.pop(key, None)
        annotations.update(record.entries())

    def write(
        self,
        ref: DeploymentRef,
        owner: Mapping[str, Any],
        record: Record,
        held: Mapping[str, Any] | None,
        *,
        dry_run: bool,
    ) -> dict[str, Any] | None:
        """Write ``record`` to the ConfigMap (created, or patched from ``held`` guarded by its
        resourceVersion: 409 if it moved); the written ConfigMap, or ``None`` for annotation kinds."""
        if not in_configmap(ref.kind):
            return None
        name = record_name(ref.name)
        data = {_DATA_KEYS[k]: v for k, v in record.entries().items()}
        dry: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        if held is None:
            meta: dict[str, Any] = {
                "name": name,
                "namespace": ref.namespace,
                "labels": {RECORD_LABEL: ref.name},
            }
            uid = (owner.get("metadata") or {}).get("uid")
            if uid:  # the API server requires the owner's uid; without one the ConfigMap outlives it
                api_version = str(owner.get("apiVersion") or "serving.kserve.io/v1beta1")
                meta["ownerReferences"] = [
                    {"apiVersion": api_version, "kind": ref.kind, "name": ref.name, "uid": uid}
                ]
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            created: dict[str, Any] = self.api.call(
                "create",
                "configmaps",
                ref.namespace,
                self.api.core.create_namespaced_config_map,
                ref.namespace,
                body,
                name=name,
                **dry,
            )
            return created
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/data", "value": data}]
        version = (held.get("metadata") or {}).get("resourceVersion")
        if version:
            ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
        patched: dict[str, Any] = self.api.call(
            "patch",
            "configmaps",
            ref.namespace,
            self.api.core.patch_namespaced_config_map,
            name,
            ref.namespace,
            ops,
            name=name,
            _content_type="application/json-patch+json",
            **dry,
        )
        return patched
