"""``KubernetesCluster``: the ``ClusterBackend`` protocol on a real API server.

Discovery lists Deployments, StatefulSets and (when the CRD is served) KServe InferenceServices,
keeps those that run vLLM, TGI or SGLang (``servewise.io/managed=true`` or detected from the
container) and parses them with ``k8s_parsing``; what cannot be parsed is reported with the reason.
Changes are JSON patches (``k8s_patching``), always server-side dry-run first, guarded by the object's
resourceVersion, retried on 409 from a fresh read, and recorded for rollback (``k8s_records``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from servewise.cluster.k8s_api import KSERVE, KubeApi, load_api_client
from servewise.cluster.k8s_benchmark import BenchmarkRunner, inference_service_url, service_url
from servewise.cluster.k8s_candidates import (
    CANDIDATE_BENCHMARKS_ENV,
    CANDIDATE_LABEL,
    CandidateWorkloads,
    candidate_manifests,
    candidate_name,
)
from servewise.cluster.k8s_declarations import BadDeclaration, declared_slo, declared_workload
from servewise.cluster.k8s_inventory import node_names_of, node_pools, pool_names
from servewise.cluster.k8s_parsing import (
    ParsedWorkload,
    Resolver,
    UnparsableWorkload,
    is_candidate,
    parse_workload,
    template_names_gpu,
)
from servewise.cluster.k8s_patching import (
    desired_object,
    diff,
    locked,
    patched_fields,
    previous_record,
    restored_object,
)
from servewise.cluster.k8s_predictor import predictor_caught_up, with_predictor_generation
from servewise.cluster.k8s_records import Held, Record, RecordKeeper, effective, in_configmap, undone
from servewise.cluster.k8s_rollout import (
    KSERVE_ISVC_LABEL,
    evaluate_rollout,
    pod_problems,
    scheduling_stall,
)
from servewise.domain import (
    ApplyResult,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    InferenceDeployment,
    NodePool,
    RolloutStatus,
    ServingConfig,
    UnparsedWorkload,
)
from servewise.errors import (
    BackendUnavailableError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    RolloutError,
    ServewiseError,
)

log = logging.getLogger(__name__)

ALLOWED_NAMESPACES_ENV = "SERVEWISE_ALLOWED_NAMESPACES"
BENCHMARK_NAMESPACE_ENV = "SERVEWISE_BENCHMARK_NAMESPACE"
_RESOURCE = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "InferenceService": "inferenceservices",
}


def _made_by_kserve(meta: Mapping[str, Any]) -> bool:
    """A Deployment KServe (RawDeployment) or a Knative Revision (Serverless) made and reconciles:
    a patch to it would be reverted, and its InferenceService is listed on its own."""
    return any(
        ref.get("kind") == "InferenceService"
        or str(ref.get("apiVersion", "")).startswith("serving.knative.dev/")
        for ref in meta.get("ownerReferences") or []
    )


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class KubernetesCluster:
    """A real cluster through the official client. Only this adapter imports ``kubernetes``."""

    def __init__(
        self,
        context: str | None = None,
        *,
        api_client: Any = None,
        allowed_namespaces: list[str] | None = None,
        benchmark_namespace: str | None = None,
        resolver: Resolver | None = None,
        request_timeout_s: float = 30.0,
        poll_interval_s: float = 2.0,
        conflict_attempts: int = 4,
        benchmark_image: str = "vllm/vllm-openai:latest",
        candidate_benchmarks: bool | None = None,
        candidate_ready_s: float = 1200.0,
        candidate_unschedulable_s: float = 300.0,
    ) -> None:
        self.name = f"k8s:{context}" if context else "k8s"
        self.api = KubeApi(api_client or load_api_client(context), request_timeout_s=request_timeout_s)
        self.records = RecordKeeper(self.api)
        env_ns = [n.strip() for n in os.environ.get(ALLOWED_NAMESPACES_ENV, "").split(",") if n.strip()]
        self.allowed_namespaces = allowed_namespaces if allowed_namespaces is not None else (env_ns or None)
        self.benchmark_namespace = benchmark_namespace or os.environ.get(
            BENCHMARK_NAMESPACE_ENV, "servewise-bench"
        )
        if resolver is None:
            from servewise.perf.catalog import get_catalog

            resolver = get_catalog()
        self.resolver = resolver
        self.poll_interval_s = poll_interval_s
        self.conflict_attempts = conflict_attempts
        self.benchmarks = BenchmarkRunner(self.api, self.benchmark_namespace, image=benchmark_image)
        # Candidates are benchmarked on temporary copies of their workload unless switched off.
        self.candidate_benchmarks = (
            candidate_benchmarks
            if candidate_benchmarks is not None
            else os.environ.get(CANDIDATE_BENCHMARKS_ENV, "1").strip().lower()
            not in ("0", "false", "no", "off")
        )
        self.candidate_ready_s = candidate_ready_s  # a model server's image pull + weights load
        # a copy no node can take (GPUs all used, no autoscaler scale-up) gives up early
        self.candidate_unschedulable_s = candidate_unschedulable_s
        self.candidates = CandidateWorkloads(self.api)

    # -- discovery ---------------------------------------------------------------------------------
    def _workload_objects(self) -> list[dict[str, Any]]:
        objs: list[dict[str, Any]] = []
        for kind, fn in (
            ("Deployment", self.api.apps.list_deployment_for_all_namespaces),
            ("StatefulSet", self.api.apps.list_stateful_set_for_all_namespaces),
        ):
            for item in self.api.call("list", _RESOURCE[kind], None, fn).get("items", []):
                objs.append({**item, "kind": kind})
        try:
            isvcs = self.api.call(
                "list", "inferenceservices", None, self.api.custom.list_cluster_custom_object, *KSERVE
            )
        except NotFoundError:  # KServe not installed: the CRD is not served
            isvcs = {}
        for item in isvcs.get("items", []):
            objs.append({**item, "kind": "InferenceService"})
        return objs

    def _scan(self) -> tuple[list[InferenceDeployment], list[UnparsedWorkload]]:
        objs = [o for o in self._workload_objects() if is_candidate(o)]
        pods, nodes, pools = self._pods_and_nodes() if objs else ([], {}, {})
        parsed: list[InferenceDeployment] = []
        unparsed: list[UnparsedWorkload] = []
        for obj in objs:
            meta = obj.get("metadata", {})
            name, ns = str(meta.get("name")), str(meta.get("namespace", "default"))
            if CANDIDATE_LABEL in (meta.get("labels") or {}):
                continue  # a temporary copy that a benchmark is running on
            if _made_by_kserve(meta):
                continue  # a predictor's Deployment: its InferenceService is the workload
            try:
                node_names = node_names_of(obj, pods)
                result = parse_workload(
                    obj, self.resolver, node_labels=[nodes.get(n, {}) for n in node_names]
                )
                parsed.append(self._deployment(obj, result, {pools.get(n) for n in node_names}))
            except (UnparsableWorkload, BadDeclaration) as exc:
                unparsed.append(UnparsedWorkload(name=name, namespace=ns, reason=str(exc)))
        return parsed, unparsed

    def _pods_and_nodes(
        self,
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], dict[str, str]]:
        """Pods, each node's labels, and each GPU node's pool as ``list_node_pools`` names it."""
        pods, nodes = self._pods(), self._nodes()
        labels = {str(n["metadata"]["name"]): dict(n["metadata"].get("labels") or {}) for n in nodes}
        return pods, labels, pool_names(nodes, self.resolver)

    def _pods(self) -> list[dict[str, Any]]:
        return self.api.call("list", "pods", None, self.api.core.list_pod_for_all_namespaces).get("items", [])

    def _nodes(self) -> list[dict[str, Any]]:
        return self.api.call("list", "nodes", None, self.api.core.list_node).get("items", [])

    def _deployment(
        self, obj: Mapping[str, Any], parsed: ParsedWorkload, pools: set[str | None]
    ) -> InferenceDeployment:
        """``pools``: the pools of the nodes its pods run on (None for a node in none); its pool when
        that is one (a node pool that spans zones is one pool per zone, as ``list_node_pools`` says)."""
        meta = obj.get("metadata", {})
        status = obj.get("status") or {}
        annotations = dict(meta.get("annotations") or {})
        return InferenceDeployment(
            ref=DeploymentRef(name=parsed.name, namespace=parsed.namespace, kind=parsed.kind),
            config=parsed.config,
            pool=pools.pop() if len(pools) == 1 else None,
            labels=dict(meta.get("labels") or {}),
            annotations=annotations,
            workload=declared_workload(annotations),
            slo=declared_slo(annotations),
            ready_replicas=status.get("readyReplicas"),
        )

    def list_deployments(self) -> list[InferenceDeployment]:
        return self._scan()[0]

    def list_unparsed(self) -> list[UnparsedWorkload]:
        return self._scan()[1]

    def list_node_pools(self) -> list[NodePool]:
        return node_pools(self._nodes(), self._pods(), self.resolver)

    def _read(self, ref: DeploymentRef) -> dict[str, Any]:
        resource = _RESOURCE.get(ref.kind)
        if resource is None:
            raise InputError(f"kind {ref.kind} is not a Kubernetes workload", field="kind")
        fn: Callable[..., Any]
        args: tuple[str, ...]
        if ref.kind == "Deployment":
            fn, args = self.api.apps.read_namespaced_deployment, (ref.name, ref.namespace)
        elif ref.kind == "StatefulSet":
            fn, args = self.api.apps.read_namespaced_stateful_set, (ref.name, ref.namespace)
        else:
            fn, args = (
                self.api.custom.get_namespaced_custom_object,
                (KSERVE[0], KSERVE[1], ref.namespace, KSERVE[2], ref.name),
            )
        obj = self.api.call("get", resource, ref.namespace, fn, *args, name=ref.name)
        return {**obj, "kind": ref.kind}

    def _parse_one(self, obj: Mapping[str, Any]) -> ParsedWorkload:
        node_labels: list[dict[str, str]] = []
        if not template_names_gpu(obj):
            pods, nodes, _ = self._pods_and_nodes()
            node_labels = [nodes.get(n, {}) for n in node_names_of(obj, pods)]
        meta = obj.get("metadata", {})
        try:
            return parse_workload(obj, self.resolver, node_labels=node_labels)
        except UnparsableWorkload as exc:
            raise InputError(
                f"cannot read the serving config: {exc}", source=f"{meta.get('namespace')}/{meta.get('name')}"
            ) from exc

    def get_deployment(self, ref: DeploymentRef) -> InferenceDeployment:
        obj = self._read(ref)
        # for the pool it runs in (and the GPU, if the template is silent)
        pods, nodes, pools = self._pods_and_nodes()
        node_names = node_names_of(obj, pods)
        labels = [nodes.get(n, {}) for n in node_names]
        meta = obj.get("metadata", {})
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            parsed = parse_workload(obj, self.resolver, node_labels=labels)
        except UnparsableWorkload as exc:
            raise InputError(f"cannot read the serving config: {exc}", source=where) from exc
        try:
            return self._deployment(obj, parsed, {pools.get(n) for n in node_names})
        except BadDeclaration as exc:
            raise InputError(str(exc), source=where) from exc

    # -- apply / rollback ---------------------------------------------------------------------------
    def _check_allowed(self, ref: DeploymentRef) -> None:
        if self.allowed_namespaces is not None and ref.namespace not in self.allowed_namespaces:
            raise ForbiddenError(
                f"servewise may not change workloads in namespace {ref.namespace!r}; allowed: "
                f"{', '.join(self.allowed_namespaces)} (set {ALLOWED_NAMESPACES_ENV} and the Role in k8s/rbac.yaml)"
            )

    def _patch(self, ref: DeploymentRef, ops: list[dict[str, Any]], *, dry_run: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"body": ops, "_content_type": "application/json-patch+json"}
        if dry_run:
            kwargs["dry_run"] = "All"
        fn: Callable[..., Any]
        args: tuple[str, ...]
        if ref.kind == "Deployment":
            fn, args = self.api.apps.patch_namespaced_deployment, (ref.name, ref.namespace)
        elif ref.kind == "StatefulSet":
            fn, args = self.api.apps.patch_namespaced_stateful_set, (ref.name, ref.namespace)
        else:
            fn, args = (
                self.api.custom.patch_namespaced_custom_object,
                (KSERVE[0], KSERVE[1], ref.namespace, KSERVE[2], ref.name),
            )
        result: dict[str, Any] = self.api.call(
            "patch", _RESOURCE[ref.kind], ref.namespace, fn, *args, name=ref.name, **kwargs
        )
        return result

    def _retrying(self) -> Retrying:
        return Retrying(
            # Safe to redo from a fresh read: a PATCH that timed out but landed is seen by its record
            # (proposal id and config; an InferenceService's pending record, by the fields it wrote).
            retry=retry_if_exception_type((ConflictError, BackendUnavailableError)),
            stop=stop_after_attempt(self.conflict_attempts),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            reraise=True,
        )

    def apply(
        self, ref: DeploymentRef, config: ServingConfig, *, proposal_id: str, dry_run: bool = False
    ) -> ApplyResult:
        self._check_allowed(ref)
        for attempt in self._retrying():
            with attempt:
                obj = self._read(ref)
                held = self.records.read(ref, obj)
                record = effective(ref, obj, held)
                if (
                    record.proposal_id == proposal_id
                    and record.previous is not None
                    and record.applied(config)
                    and not undone(ref, obj, record)
                ):  # a re-run: whatever else changed the workload since (an HPA, a person) stays
                    if held.pending is not None and not dry_run:  # it landed; its promotion was lost
                        self._promote(ref, obj, record, held)
                    return ApplyResult(
                        ref=ref,
                        proposal_id=proposal_id,
                        dry_run=dry_run,
                        changed=False,
                        previous=record.previous_config(),
                        message=f"proposal {proposal_id} is already applied",
                    )
                parsed = self._parse_one(obj)
                desired = desired_object(obj, parsed, config, self.resolver)
                if parsed.config == config or not diff(obj, desired):
                    return ApplyResult(
                        ref=ref,
                        proposal_id=proposal_id,
                        dry_run=dry_run,
                        changed=False,
                        previous=parsed.config,
                        message="the workload already runs this config",
                    )
                previous = previous_record(obj, parsed, proposal_id, applied=config)
                self.records.stage(ref, desired, Record(proposal_id, previous))
                ops = with_predictor_generation(self.api, ref, obj, diff(obj, desired))
                would = self._patch(ref, locked(obj, ops), dry_run=True)  # server-side validation first
                written = (
                    patched_fields(would, ref.kind, parsed.container_index)
                    if in_configmap(ref.kind)
                    else None
                )
                new = Record(proposal_id, previous, written=written)
                self.records.write(ref, obj, record, held, pending=new, dry_run=True)
                if not dry_run:
                    pending = self.records.write(ref, obj, record, held, pending=new, dry_run=False)
                    self._patch(ref, locked(obj, ops), dry_run=False)
                    self._promote(ref, obj, new, pending)
                    log.info(
                        "applied proposal %s to %s (%d patch operations)", proposal_id, ref.key, len(ops)
                    )
                return ApplyResult(
                    ref=ref,
                    proposal_id=proposal_id,
                    dry_run=dry_run,
                    changed=True,
                    patch=ops,
                    previous=parsed.config,
                    message="server-side dry run passed" if dry_run else "applied",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _promote(self, ref: DeploymentRef, obj: Mapping[str, Any], new: Record, held: Held) -> None:
        """Make an apply's pending record the last one; from a fresh read after a failed write (it
        may have landed, or another apply moved on: then that one's record stands). Never fails the
        apply, whose patch has landed: a pending record the workload holds counts as applied."""
        for _ in range(self.conflict_attempts):
            try:
                self.records.write(ref, obj, new, held, dry_run=False)
                return
            except (ConflictError, BackendUnavailableError) as exc:
                log.warning("promoting the record of %s on %s: %s", new.proposal_id, ref.key, exc)
            try:
                held = self.records.read(ref, obj)
            except ServewiseError:
                continue
            if (
                held.record.proposal_id == new.proposal_id
                or (held.pending or Record()).proposal_id != new.proposal_id
            ):
                return
        log.warning(
            "could not promote the record of %s on %s; it counts while the workload holds it",
            new.proposal_id,
            ref.key,
        )

    def rollback(self, ref: DeploymentRef, *, proposal_id: str | None = None) -> ApplyResult:
        self._check_allowed(ref)
        for attempt in self._retrying():
            with attempt:
                obj = self._read(ref)
                held = self.records.read(ref, obj)
                record = effective(ref, obj, held)
                applied = record.proposal_id
                previous = record.previous_config()
                if not applied or record.previous is None or previous is None:
                    if held.problem:
                        raise InputError(f"cannot roll back {ref.key}: {held.problem}", source=ref.key)
                    raise NotFoundError(f"{ref.key} has no recorded servewise change to roll back")
                if proposal_id is not None and applied != proposal_id:
                    raise NotFoundError(
                        f"{ref.key}: the last applied proposal is {applied}, not {proposal_id}; nothing recorded for it"
                    )
                restored = restored_object(obj, ref.kind, record.previous)
                after = Record(rolled_back=applied)
                self.records.stage(ref, restored, after)
                ops = with_predictor_generation(self.api, ref, obj, diff(obj, restored))
                self._patch(ref, locked(obj, ops), dry_run=True)
                self.records.write(ref, obj, after, held, dry_run=True)
                if held.pending is not None:
                    # the record rolled back becomes the only one: a redo after the patch, when the
                    # workload no longer holds a pending proposal, still rolls back this one
                    held = self.records.write(ref, obj, record, held, dry_run=False)
                self._patch(ref, locked(obj, ops), dry_run=False)
                self.records.write(ref, obj, after, held, dry_run=False)  # last: a redo restores again
                log.info("rolled back proposal %s on %s", applied, ref.key)
                return ApplyResult(
                    ref=ref,
                    proposal_id=str(applied),
                    dry_run=False,
                    changed=bool(ops),
                    patch=ops,
                    previous=previous,
                    message=f"restored the spec recorded before {applied}"
                    if ops
                    else f"the spec recorded before {applied} was already restored",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- rollout -------------------------------------------------------------------------------------
    def rollout_status(self, ref: DeploymentRef) -> RolloutStatus:
        obj = self._read(ref)
        status = evaluate_rollout(ref, obj)
        if status.done and ref.kind == "InferenceService":
            status = predictor_caught_up(self.api, ref, obj, status)
        if status.done:
            return status
        labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if ref.kind == "InferenceService":
            labels = {KSERVE_ISVC_LABEL: ref.name}
        pods = self.api.call(
            "list",
            "pods",
            ref.namespace,
            self.api.core.list_namespaced_pod,
            ref.namespace,
            label_selector=_selector(labels),
        ).get("items", [])
        events = self.api.call(
            "list", "events", ref.namespace, self.api.core.list_namespaced_event, ref.namespace
        ).get("items", [])
        problems, fatal = pod_problems(pods, events)
        reason = status.reason or (fatal[0] if fatal else None)
        return status.model_copy(
            update={
                "events": [*status.events, *problems],
                "failed": status.failed or bool(fatal),
                "reason": reason,
                "unschedulable": scheduling_stall(pods, events),
            }
        )

    def wait_for_rollout(
        self, ref: DeploymentRef, *, timeout_s: float = 600, unschedulable_s: float | None = None
    ) -> RolloutStatus:
        """Until done, failed or ``timeout_s``; with ``unschedulable_s``, also give up once a pod has
        stayed stuck that long for want of a node or of a volume another node holds
        (``scheduling_stall``), with no node coming for it."""
        deadline = time.monotonic() + timeout_s
        stalled_since: float | None = None
        while True:
            status = self.rollout_status(ref)
            if status.done:
                return status
            if status.failed:
                raise RolloutError(f"rollout of {ref.key} failed: {status.reason}", events=status.events)
            now = time.monotonic()
            stalled_since = (stalled_since or now) if status.unschedulable else None
            if (
                unschedulable_s is not None
                and stalled_since is not None
                and now - stalled_since >= unschedulable_s
            ):
                raise RolloutError(
                    f"{ref.key} cannot start ({status.unschedulable}); still so after {now - stalled_since:.0f}s "
                    "with no node coming for it",
                    events=status.events,
                )
            if time.monotonic() >= deadline:
                raise RolloutError(
                    f"rollout of {ref.key} stalled after {timeout_s:g}s: updated {status.updated_replicas}/"
                    f"{status.desired_replicas}, available {status.available_replicas}/{status.desired_replicas}",
                    events=status.events,
                )
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    # -- benchmarks ----------------------------------------------------------------------------------
    def run_benchmark(self, request: BenchmarkRequest) -> BenchmarkResult:
        """One replica of the config (``request.config``, else the deployed one) on a temporary copy
        of the workload at one replica's load (``request.workload``), never through production's
        Service (``k8s_candidates``)."""
        obj = self._read(request.ref)
        parsed = self._parse_one(obj)
        config = request.config or parsed.config
        if not self.candidate_benchmarks:
            raise InputError(
                f"benchmarks on the cluster are off ({CANDIDATE_BENCHMARKS_ENV}=0); benchmark on the twin",
                source=CANDIDATE_BENCHMARKS_ENV,
            )
        self._check_allowed(request.ref)
        now = datetime.now(UTC)
        try:
            swept = self.candidates.sweep(parsed.namespace, now)
        except ServewiseError as exc:  # housekeeping: never the reason a benchmark does not run
            log.warning("could not sweep expired benchmark copies in %s: %s", parsed.namespace, exc)
            swept = []
        if swept:
            log.warning("deleted expired benchmark copies in %s: %s", parsed.namespace, ", ".join(swept))
        name = candidate_name(parsed, config)
        expires = now + timedelta(seconds=self.candidate_ready_s + request.deadline_s + 600)
        workload, service = candidate_manifests(obj, parsed, config, self.resolver, name, expires_at=expires)
        ref = DeploymentRef(name=name, namespace=parsed.namespace, kind=parsed.kind)
        try:
            self.candidates.create(workload, service)
            self.wait_for_rollout(
                ref, timeout_s=self.candidate_ready_s, unschedulable_s=self.candidate_unschedulable_s
            )
            copy_obj = self._read(ref)
            copy = self._parse_one(copy_obj)
            url = service_url([service], copy) if service is not None else inference_service_url(copy_obj)
            result = self.benchmarks.run(request, copy, url, poll_interval_s=self.poll_interval_s)
        finally:
            # a copy that could not be deleted is logged and expires; the result (or error) stands
            self.candidates.delete(parsed.kind, parsed.namespace, name)
        return result.model_copy(update={"config": config})
