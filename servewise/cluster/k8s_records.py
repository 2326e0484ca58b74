"""Where servewise keeps its record of the last proposal applied to a workload.

A record is the proposal id, the config it applied and what rollback needs to restore the spec
from before it (``k8s_patching.previous_record``), or, once rolled back, the id of the proposal
rolled back. It makes applying a proposal twice a no-op and a rollback exact.

- **Deployments and StatefulSets** keep it in annotations on the workload, written by the same JSON
  patch as the change: one atomic write. A Deployment's own annotations are not its pods'.
- **InferenceServices** keep it in a ConfigMap beside them, ``servewise-record-<name>``, owned by the
  InferenceService (deleted with it; one owned by an earlier InferenceService of the same name is
  not read). KServe copies an InferenceService's annotations into its predictor's pod template, so
  a record there would change the template, and restart every predictor pod, at each apply and
  rollback: a replicas-only proposal included. (A record an earlier servewise left in the
  annotations is still read, and removed with the next change.)

The ConfigMap and the InferenceService are two writes, so a ConfigMap record also keeps the
fields its patch wrote as the API server would store them (``written``: from the patch's
server-side dry run, defaults included), and the adapter asks whether the InferenceService still
holds them. ``apply`` writes its record as *pending* beside the last one, patches, then promotes
it; a pending record counts only while the InferenceService holds what it wrote, so an apply that
never landed (a crash, a refusal, timeouts to the last retry) leaves the last proposal the one to
roll back, and a redone apply whose patch landed promotes it. ``rollback`` first writes the record
it rolls back as the only one (a pending one that counted promoted, one that did not dropped), then
patches, then writes the rollback: a rollback redone restores nothing more. Every write is dry-run
first, so missing RBAC on ConfigMaps stops a change before anything is written. A record that
cannot be read is no record to apply over, and an error to roll back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servewise.cluster.k8s_api import KubeApi
from servewise.cluster.k8s_patching import locked, patched_fields
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
WRITTEN_KEY = "written"  # the fields the patch wrote (ConfigMap records only)
PENDING_PREFIX = "pending-"  # an apply's record, written before its patch


@dataclass(frozen=True)
class Record:
    """The last proposal applied (with the spec before it), or the last one rolled back."""

    proposal_id: str | None = None
    previous: Mapping[str, Any] | None = None
    rolled_back: str | None = None
    written: Mapping[str, Any] | None = None  # what its patch wrote (ConfigMap records only)

    @classmethod
    def parse(cls, entries: Mapping[str, Any], source: str, written: str | None = None) -> Record:
        """From annotations (or ConfigMap data, its keys mapped to annotation names)."""
        try:
            previous, fields = (
                json.loads(t) if t else None for t in (entries.get(PREVIOUS_ANNOTATION), written)
            )
            if previous is not None:
                ServingConfig.model_validate(previous.get("config"))
                if previous.get("applied_config") is not None:
                    ServingConfig.model_validate(previous["applied_config"])
        except (ValueError, AttributeError) as exc:
            raise InputError(f"servewise's record is unreadable: {exc}", source=source) from exc
        if not isinstance(previous, Mapping | None) or not isinstance(fields, Mapping | None):
            raise InputError("servewise's record is not a JSON object", source=source)
        return cls(
            proposal_id=entries.get(PROPOSAL_ANNOTATION) or None,
            previous=previous,
            rolled_back=entries.get(ROLLED_BACK_ANNOTATION) or None,
            written=fields,
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

    def data(self, prefix: str = "") -> dict[str, str]:
        """As ConfigMap data (keys with ``prefix``), what the patch wrote included."""
        out = {prefix + _DATA_KEYS[k]: v for k, v in self.entries().items()}
        if self.written is not None:
            out[prefix + WRITTEN_KEY] = json.dumps(self.written, sort_keys=True)
        return out

    def applied(self, config: ServingConfig) -> bool:
        """Did this record's proposal apply ``config``? (A record without the config it applied,
        an earlier servewise's, is taken at its id.)"""
        applied = (self.previous or {}).get("applied_config")
        return applied is None or ServingConfig.model_validate(applied) == config

    def previous_config(self) -> ServingConfig | None:
        config = (self.previous or {}).get("config")
        return ServingConfig.model_validate(config) if config else None


@dataclass(frozen=True)
class Held:
    """A workload's record as read: the last one, an apply's ``pending`` one (it counts only while
    the workload holds what it wrote), the ConfigMap read, and why a record could not be read."""

    record: Record
    pending: Record | None = None
    configmap: Mapping[str, Any] | None = None
    problem: str | None = None


def _fields_now(ref: DeploymentRef, obj: Mapping[str, Any], record: Record) -> dict[str, Any] | None:
    """The fields a patch writes, as the workload holds them now, for a ConfigMap record (``None``
    for an annotation record: written with its patch, it cannot lag behind the workload)."""
    if record.written is None or record.previous is None:
        return None
    return patched_fields(obj, ref.kind, int(record.previous.get("container_index", 0)))


def holds(ref: DeploymentRef, obj: Mapping[str, Any], record: Record) -> bool:
    """Does the workload still hold what ``record``'s patch wrote?"""
    fields = _fields_now(ref, obj, record)
    return fields is None or fields == dict(record.written or {})


def undone(ref: DeploymentRef, obj: Mapping[str, Any], record: Record) -> bool:
    """Is the workload back at the spec from before ``record``'s proposal (a rollback landed
    whose record write did not)?"""
    fields = _fields_now(ref, obj, record)
    previous = record.previous or {}
    return bool(fields) and all(previous.get(k) == v for k, v in (fields or {}).items())


def effective(ref: DeploymentRef, obj: Mapping[str, Any], held: Held) -> Record:
    """The record that counts: an apply's pending one while the workload holds what it wrote (its
    patch landed), else the last one."""
    if held.pending is not None and holds(ref, obj, held.pending):
        return held.pending
    return held.record


def in_configmap(kind: str) -> bool:
    """Does a workload of this kind keep its record in a ConfigMap (else in its annotations)?"""
    return kind == "InferenceService"


def record_name(workload: str) -> str:
    return f"{RECORD_PREFIX}{workload}"


class RecordKeeper:
    """Reads and writes a workload's record where its kind keeps it."""

    def __init__(self, api: KubeApi):
        self.api = api

    def read(self, ref: DeploymentRef, obj: Mapping[str, Any]) -> Held:
        """The record; for an InferenceService, from its ConfigMap (or, with none, from what an
        earlier servewise left in its annotations). An unreadable one reads as none, with why."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        held: dict[str, Any] | None = None
        if in_configmap(ref.kind):
            name = record_name(ref.name)
            try:
                held = self.api.call(
                    "get",
                    "configmaps",
                    ref.namespace,
                    self.api.core.read_namespaced_config_map,
                    name,
                    ref.namespace,
                    name=name,
                )
            except NotFoundError:
                held = None
        try:
            if held is None:
                return Held(Record.parse(annotations, source=f"{ref.key} annotations"))
            return self._from_configmap(ref, obj, held)
        except InputError as exc:
            log.warning("servewise's record of %s is unreadable: %s", ref.key, exc)
            return Held(Record(), configmap=held, problem=str(exc))

    @staticmethod
    def _from_configmap(ref: DeploymentRef, obj: Mapping[str, Any], held: dict[str, Any]) -> Held:
        name = record_name(ref.name)
        uid = (obj.get("metadata") or {}).get("uid")
        owners = (held.get("metadata") or {}).get("ownerReferences") or []
        if uid and not any(o.get("uid") == uid for o in owners):
            log.warning(
                "ConfigMap %s/%s is not owned by %s (uid %s); not read", ref.namespace, name, ref.key, uid
            )
            return Held(Record(), configmap=held)
        data = held.get("data") or {}
        source = f"ConfigMap {ref.namespace}/{name}"
        record, pending = (
            Record.parse(
                {a: data.get(prefix + k) for a, k in _DATA_KEYS.items()},
                source=source,
                written=data.get(prefix + WRITTEN_KEY),
            )
            for prefix in ("", PENDING_PREFIX)
        )
        counted = pending.proposal_id and pending.previous is not None and pending.written is not None
        return Held(record, pending if counted else None, held)

    def stage(self, ref: DeploymentRef, desired: dict[str, Any], record: Record) -> None:
        """Put ``record`` into the desired workload when its kind keeps it in annotations (an
        InferenceService's: take out any an earlier servewise left there)."""
        if in_configmap(ref.kind):
            for key in _DATA_KEYS:
                ((desired.get("metadata") or {}).get("annotations") or {}).pop(key, None)
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
        held: Held,
        *,
        pending: Record | None = None,
        dry_run: bool,
    ) -> Held:
        """Write ``record`` (and an apply's ``pending`` one) to the ConfigMap: created, or patched
        from ``held``'s guarded by its resourceVersion (409 if it moved), owned by ``owner``. What
        was written; ``held`` as it was for kinds that keep annotations."""
        if not in_configmap(ref.kind):
            return held
        name = record_name(ref.name)
        data = {**record.data(), **(pending.data(PENDING_PREFIX) if pending is not None else {})}
        dry: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        uid = (owner.get("metadata") or {}).get("uid")
        owners = [
            {
                "apiVersion": str(owner.get("apiVersion") or "serving.kserve.io/v1beta1"),
                "kind": ref.kind,
                "name": ref.name,
                "uid": uid,
            }
        ]  # the API server requires the owner's uid; without one the ConfigMap outlives it
        written: dict[str, Any]
        if held.configmap is None:
            meta: dict[str, Any] = {
                "name": name,
                "namespace": ref.namespace,
                "labels": {RECORD_LABEL: ref.name},
            }
            if uid:
                meta["ownerReferences"] = owners
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
            written = self.api.call(
                "create",
                "configmaps",
                ref.namespace,
                self.api.core.create_namespaced_config_map,
                ref.namespace,
                body,
                name=name,
                **dry,
            )
        else:
            ops: list[dict[str, Any]] = [{"op": "add", "path": "/data", "value": data}]
            if uid:
                ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": owners})
            ops = locked(held.configmap, ops)
            written = self.api.call(
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
        return Held(record, pending, written)
