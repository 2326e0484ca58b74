"""kmock's ``KubernetesEmulator`` made faithful where servewise depends on API-server behaviour.

kmock 0.8 stores objects and serves list/get/create/patch/delete over real HTTP, but it ignores label
and field selectors, ignores ``dryRun``, applies every PATCH body as a dict merge (a JSON patch list
cannot be applied), has no resourceVersion/generation bookkeeping, no RBAC and no pod logs. This
subclass adds exactly those, plus fault injection (403 per verb/resource/namespace, one-shot 409/5xx,
delays for client timeouts) and a record of every call as an RBAC (verb, group, resource, namespace).

The emulator runs on its own event loop in a thread so the synchronous ``kubernetes`` client can call
it over HTTP with an ordinary kubeconfig file.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import rendering
from kmock._internal.k8s import KubernetesError

_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}
RESOURCES = {
    "Deployment": "apps/v1/deployments",
    "StatefulSet": "apps/v1/statefulsets",
    "Pod": "v1/pods",
    "Node": "v1/nodes",
    "Event": "v1/events",
    "Service": "v1/services",
    "Job": "batch/v1/jobs",
    "InferenceService": "serving.kserve.io/v1beta1/inferenceservices",
    "PersistentVolumeClaim": "v1/persistentvolumeclaims",
    "ConfigMap": "v1/configmaps",
}


@dataclass(frozen=True)
class Call:
    verb: str
    group: str
    resource: str
    namespace: str | None
    dry_run: bool = False


@dataclass
class Fault:
    verb: str
    resource: str
    status: int | None = None
    delay_s: float = 0.0
    times: int = 1
    bump_resource_version: bool = False  # simulate a concurrent writer before this call
    skip: int = 0  # let this many matching calls through first (a server-side dry run, say)


@dataclass
class Controls:
    denied: set[tuple[str, str, str | None]] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    on_create: dict[str, Callable[[FaithfulEmulator, dict[str, Any]], None]] = field(default_factory=dict)
    auto_rollout: bool = True
    # KServe (RawDeployment) writes an InferenceService's predictor into ``<name>-predictor``, a
    # Deployment it owns, when the InferenceService is created or patched; off: it is late (a test
    # then plays it with ``reconcile_kserve``) and the InferenceService keeps its old ``Ready``.
    kserve_reconciles: bool = True
    # KServe copies an InferenceService's annotations into its predictor's pod template
    kserve_copies_annotations: bool = True


class FaithfulEmulator(kmock.KubernetesEmulator):
    """See the module docstring for what differs from kmock."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.calls: list[Call] = []
        self.controls = Controls()
        self._rv = itertools.count(100)
        for resource, namespaced in (
            ("apps/v1/deployments", True),
            ("apps/v1/statefulsets", True),
            ("v1/pods", True),
            ("v1/nodes", False),
            ("v1/events", True),
            ("v1/services", True),
            ("batch/v1/jobs", True),
            ("v1/persistentvolumeclaims", True),
            ("v1/configmaps", True),
        ):
            self.resources[resource] = kmock.ResourceInfo(namespaced=namespaced)

    # -- seeding from tests ------------------------------------------------------------------------
    def seed(self, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("resourceVersion", str(next(self._rv)))
        meta.setdefault("generation", 1)
        namespace = meta.get("namespace", "default") if obj["kind"] != "Node" else None
        if namespace is not None:
            meta["namespace"] = namespace
        self.objects[RESOURCES[obj["kind"]], namespace, meta["name"]] = obj

    def seed_file(self, path: Path) -> None:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                self.seed(doc)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:  # type: ignore[override]
        return copy.deepcopy(self.objects[RESOURCES[kind], namespace, name].raw)

    def put(self, kind: str, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        self.objects[RESOURCES[kind], namespace, name].create(copy.deepcopy(obj))

    # -- request handling ---------------------------------------------------------------------------
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action is None:
            return await super()._handle(request)
        res = request.resource
        plural = str(res.plural) + (f"/{request.subresource}" if request.subresource else "")
        verb = _VERBS.get(request.action, str(request.action).lower())
        dry = request.params.get("dryRun") == "All"
        self.calls.append(Call(verb, str(res.group), plural, request.namespace, dry))
        await self._inject(verb, plural, request)
        if request.action == kmock.action.LIST:
            return await self._list(request)
        if request.action == kmock.action.FETCH and request.subresource == "log":
            text = self.controls.logs.get((str(request.namespace), str(request.name)))
            if text is None:
                raise KubernetesError(status=404, reason="NotFound", message=f"no log for pod {request.name}")
            return aiohttp.web.Response(text=text)
        if request.action == kmock.action.UPDATE:
            return self._patch(request, dry)
        if request.action == kmock.action.DELETE and str(res.plural) == "inferenceservices" and not dry:
            response = await super()._handle(request)
            child = (RESOURCES["Deployment"], request.namespace, f"{request.name}-predictor")
            record = (RESOURCES["ConfigMap"], request.namespace, f"servewise-record-{request.name}")
            for key in (child, record):
                if key in self.objects and not self.objects[key].deleted:
                    self.objects[key].delete()  # the garbage collector, by owner reference
            return response
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._rv))
            meta.setdefault("generation", 1)
            meta.setdefault("namespace", request.namespace)
            if dry:
                return aiohttp.web.json_response(request.data, status=201)
            if self.controls.auto_rollout and str(res.plural) in ("deployments", "statefulsets"):
                _roll_out(request.data)  # a created workload comes up at once too
            if self.controls.auto_rollout and str(res.plural) == "inferenceservices":
                _kserve_ready(request.data)
            response = await super()._handle(request)
            if self.controls.kserve_reconciles and str(res.plural) == "inferenceservices":
                self.reconcile_kserve(request.data)
            callback = self.controls.on_create.get(str(res.plural))
            if callback is not None:
                callback(self, copy.deepcopy(request.data))
            return response
        return await super()._handle(request)

    async def _inject(self, verb: str, plural: str, request: rendering.Request) -> None:
        for key in ((verb, plural, request.namespace), (verb, plural, None)):
            if key in self.controls.denied:
                raise KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=(
                        f'{plural} is forbidden: User "system:serviceaccount:servewise:servewise" cannot {verb} '
                        f'resource "{plural}" in API group "{request.resource.group if request.resource else ""}"'
                        + (
                            f' in the namespace "{request.namespace}"'
                            if request.namespace
                            else " at the cluster scope"
                        )
                    ),
                )
        for fault in self.controls.faults:
            if fault.times > 0 and fault.verb == verb and fault.resource == plural:
                if fault.skip > 0:  # the first live fault that matches decides, skipping or not
                    fault.skip -= 1
                    return
                fault.times -= 1
                if fault.bump_resource_version and request.name:
                    obj = self.objects[request.resource, request.namespace, request.name]
                    new = copy.deepcopy(obj.raw)
                    new["metadata"]["resourceVersion"] = str(next(self._rv))
                    obj.create(new)
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.status:
                    raise KubernetesError(
                        status=fault.status, reason="Injected", message=f"injected {fault.status}"
                    )
                return

    async def _list(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource not in self._get_resources():
            raise KubernetesError(
                status=404, reason="NotFound", message=f"the server could not find {request.resource}"
            )
        labels = _parse_selector(request.params.get("labelSelector", ""))
        fields = _parse_selector(request.params.get("fieldSelector", ""))
        items = []
        for (resource, namespace, _), obj in list(self.objects.items()):
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = obj.raw
            if all(
                _match(raw.get("metadata", {}).get("labels") or {}, k, op, v) for k, op, v in labels
            ) and all(_match_field(raw, k, op, v) for k, op, v in fields):
                items.append(raw)
        return aiohttp.web.json_response(
            {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        )

    def _patch(self, request: rendering.Request, dry: bool) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise KubernetesError(
                status=404, reason="NotFound", message=f"{request.resource} {request.name} not found"
            )
        stored = self.objects[key]
        current = copy.deepcopy(stored.raw)
        content_type = request.headers.get("Content-Type", "")
        if "json-patch" not in content_type or not isinstance(request.data, list):
            raise KubernetesError(
                status=415,
                reason="UnsupportedMediaType",
                message=f"emulator takes JSON patch, got {content_type}",
            )
        try:
            new = jsonpatch.apply_patch(current, request.data)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise KubernetesError(status=422, reason="Invalid", message=f"json patch failed: {exc}") from exc
        sent_rv = new.get("metadata", {}).get("resourceVersion")
        if sent_rv != current["metadata"].get("resourceVersion"):
            raise KubernetesError(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": '
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = (
            current["metadata"]["resourceVersion"] if dry else str(next(self._rv))
        )
        if not dry:
            if self.controls.auto_rollout and new.get("kind") in ("Deployment", "StatefulSet", None):
                _roll_out(new)
            if self.controls.auto_rollout and new.get("kind") == "InferenceService":
                _kserve_ready(new)
            stored.create(new)
            if self.controls.kserve_reconciles and new.get("kind") == "InferenceService":
                self.reconcile_kserve(new)
        return aiohttp.web.json_response(new)

    def reconcile_kserve(self, isvc: dict[str, Any]) -> None:
        """KServe in RawDeployment mode: the predictor as the pod template of ``<name>-predictor``
        (a runtime's ``predictor.model`` as ``kserve-container``, its args after the runtime's),
        rolled out at once unless ``auto_rollout`` is off."""
        meta = isvc["metadata"]
        name, namespace = f"{meta['name']}-predictor", meta.get("namespace", "default")
        predictor = copy.deepcopy(isvc.get("spec", {}).get("predictor", {}))
        pod = {
            k: predictor[k]
            for k in ("containers", "nodeSelector", "tolerations", "affinity", "volumes")
            if k in predictor
        }
        model = predictor.get("model")
        if not pod.get("containers") and isinstance(model, dict):
            # the runtime's container, the model's args appended, placeholders rendered, and the
            # image tag given KServe's "-gpu" suffix when the container asks for a GPU
            runtime_args = ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
            args = [
                a.replace("{{.Name}}", meta["name"]).replace("{{.Namespace}}", namespace)
                for a in runtime_args + list(model.get("args") or [])
            ]
            image = model.get("image") or "kserve/huggingfaceserver:v0.15.2"
            if "nvidia.com/gpu" in ((model.get("resources") or {}).get("limits") or {}):
                image += "-gpu"
            pod["containers"] = [
                {
                    "name": "kserve-container",
                    "image": image,
                    "args": args,
                    "resources": model.get("resources") or {},
                }
            ]
        labels = {"serving.kserve.io/inferenceservice": meta["name"], "component": "predictor"}
        annotations = dict(meta.get("annotations") or {}) if self.controls.kserve_copies_annotations else {}
        spec = {
            "replicas": int(predictor.get("minReplicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod},
        }
        key = (RESOURCES["Deployment"], namespace, name)
        try:  # kmock's ``in`` does not parse a string resource the way indexing does
            old = None if self.objects[key].deleted else self.objects[key].raw
        except KeyError:
            old = None
        generation = int(old["metadata"].get("generation", 1)) + (old["spec"] != spec) if old else 1
        owner = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": meta["name"]}
        if meta.get("uid"):
            owner["uid"] = meta["uid"]
        child = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [owner],
                "generation": generation,
                "resourceVersion": str(next(self._rv)),
            },
            "spec": spec,
            "status": copy.deepcopy(old.get("status", {})) if old else {},
        }
        if self.controls.auto_rollout:
            _roll_out(child)
        if old is not None:
            self.objects[key].create(child)
        else:
            self.objects[key] = child


def _roll_out(obj: dict[str, Any]) -> None:
    """A controller that finishes every rollout at once (tests that need a stall turn it off)."""
    replicas = int(obj.get("spec", {}).get("replicas", 1))
    status = obj.setdefault("status", {})
    status.update(
        observedGeneration=obj["metadata"]["generation"],
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
    )


def _kserve_ready(obj: dict[str, Any]) -> None:
    """KServe in RawDeployment mode, done at once: Ready at this generation, served by ``<name>-predictor``."""
    meta = obj["metadata"]
    obj["status"] = {
        "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}],
        "address": {"url": f"http://{meta['name']}-predictor.{meta['namespace']}.svc.cluster.local"},
        "url": f"http://{meta['name']}-{meta['namespace']}.example.com",
    }


def _parse_selector(text: str) -> list[tuple[str, str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            out.append((k, "!=", v))
        elif "=" in part:
            k, v = part.split("=", 1)
            out.append((k.rstrip("="), "=", v))
        elif part.startswith("!"):
            out.append((part[1:], "!", ""))
        else:
            out.append((part, "exists", ""))
    return out


def _match(labels: dict[str, str], key: str, op: str, value: str) -> bool:
    if op == "=":
        return labels.get(key) == value
    if op == "!=":
        return labels.get(key) != value
    if op == "!":
        return key not in labels
    return key in labels


def _match_field(obj: dict[str, Any], path: str, op: str, value: str) -> bool:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    actual = "" if node is None else str(node)
    return actual == value if op == "=" else actual != value


class EmulatorThread:
    """Run a ``FaithfulEmulator`` behind a real HTTP port on a background event loop."""

    def __init__(self) -> None:
        self.emulator = FaithfulEmulator()
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="kmock")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock emulator did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def write_kubeconfig(self, path: Path, context: str = "kmock") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "servewise", "user": {"token": "test-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "kmock", "user": "servewise"}}],
            "current-context": context,
        }
        path.write_text(json.dumps(config))
        return path


def statefulset_claims(emu: FaithfulEmulator, sts: dict[str, Any]) -> list[str]:
    """What the StatefulSet controller does with ``volumeClaimTemplates``: one claim per template and
    replica, ``<template>-<statefulset>-<ordinal>``, labelled with the template's labels and the
    selector's, annotated with the template's (no garbage collector here: nothing deletes them)."""
    meta, spec = sts["metadata"], sts["spec"]
    made = []
    for template in spec.get("volumeClaimTemplates") or []:
        tmeta = template.get("metadata") or {}
        for ordinal in range(int(spec.get("replicas", 1))):
            name = f"{tmeta['name']}-{meta['name']}-{ordinal}"
            labels = {**(tmeta.get("labels") or {}), **spec["selector"].get("matchLabels", {})}
            emu.seed(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": name,
                        "namespace": meta["namespace"],
                        "labels": labels,
                        "annotations": dict(tmeta.get("annotations") or {}),
                    },
                    "spec": template.get("spec") or {},
                }
            )
            made.append(name)
    return made
