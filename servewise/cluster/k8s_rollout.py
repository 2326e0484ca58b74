"""Is a rollout done, still going, or stuck, and which pod events explain a stall."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from servewise.domain import DeploymentRef, RolloutStatus

# Reasons that will not heal by waiting (a rollout showing them is reported failed at once).
FATAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
}
# Pod events that say a node is being added for the pod: the cluster autoscaler's, Karpenter's.
NODE_COMING = {"TriggeredScaleUp", "Nominated"}
WARNING_REASONS = {
    "FailedScheduling",
    "BackOff",
    "Failed",
    "FailedMount",
    "FailedCreate",
    "Unhealthy",
    "OOMKilling",
}


def evaluate_rollout(ref: DeploymentRef, obj: Mapping[str, Any]) -> RolloutStatus:
    """Done when the controller saw the latest generation and every replica is updated and available."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    if ref.kind == "InferenceService":
        # A Serverless predictor is done when its latest revision is the ready one. KServe's
        # status.observedGeneration is copied from the child (the predictor's Deployment or Knative
        # Service), not the InferenceService's, so it cannot say whether a patch was seen: in
        # RawDeployment mode the cluster adapter also checks the predictor's Deployment
        # (``predictor_lag``), since a Ready from before a patch reads done here.
        desired = int(spec.get("predictor", {}).get("minReplicas", 1))
        predictor = (status.get("components") or {}).get("predictor") or {}
        created, latest = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        ) and not (created and latest and created != latest)
        return RolloutStatus(
            ref=ref,
            done=ready,
            desired_replicas=desired,
            updated_replicas=desired if ready else 0,
            available_replicas=desired if ready else 0,
        )
    desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = int(meta.get("generation", 0) or 0)
    observed = int(status.get("observedGeneration", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", status.get("readyReplicas", 0)) or 0)
    total = int(status.get("replicas", updated) or 0)
    done = observed >= generation and updated >= desired and available >= desired and total <= desired
    if ref.kind == "StatefulSet" and status.get("updateRevision"):
        done = done and status.get("currentRevision") == status.get("updateRevision")
    failed, reason = False, None
    # a deadline the controller reported for this generation, not one left from the last rollout
    current = observed >= generation
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded" and current:
            failed, reason = True, f"ProgressDeadlineExceeded: {cond.get('message', '')}".strip()
    return RolloutStatus(
        ref=ref,
        done=done and not failed,
        desired_replicas=desired,
        updated_replicas=updated,
        available_replicas=available,
        failed=failed,
        reason=reason,
    )


KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"  # on what KServe makes for an InferenceService
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"  # the annotation (and status.deploymentMode)
RAW_DEPLOYMENT = "RawDeployment"
# On an InferenceService: "<uid>/<generation>" of its predictor Deployment when servewise last
# patched the predictor's pod fields (KServe bumps the generation when it writes the patch in).
PREDICTOR_GENERATION = "servewise.io/predictor-generation"


def predictor_lag(isvc: Mapping[str, Any], deployment: Mapping[str, Any]) -> str | None:
    """What the predictor's Deployment (KServe's RawDeployment child) does not yet carry of the
    InferenceService's predictor; None when it carries all that is compared.

    First, whether KServe has written servewise's last patch at all. KServe copies the
    InferenceService's annotations into the pod template, so the template's ``servewise.io/*``
    annotations (``PREDICTOR_GENERATION``, which servewise rewrites whenever it patches the
    predictor's pod fields) must equal the InferenceService's, whatever else scaled or restarted the
    Deployment meanwhile. A template without any (a KServe that does not copy them, or one that has
    not written servewise's first patch) falls back on the value of ``PREDICTOR_GENERATION``: the
    Deployment's uid and generation at that patch, which the same Deployment must have moved past.
    (servewise's proposal record is not an annotation here: ``k8s_records``.) Then: a container's
    args (equal; a runtime's ``predictor.model``, which KServe makes ``kserve-container`` with the
    InferenceService's args appended after the runtime's and ``{{.Name}}``/``{{.Namespace}}``
    rendered: the Deployment's last args, an arg with any other placeholder matching any value),
    its command (a runtime's model's only when it sets one),
    the predictor's GPU limits, its node selector entries and its affinity's terms (KServe merges a
    runtime's in), and that it has at least ``minReplicas`` replicas (a replicas-only patch changes
    nothing else KServe writes). Not compared, as KServe rewrites it: the image (``-gpu`` suffix,
    ``runtimeVersion``)."""
    dep_meta = deployment.get("metadata") or {}
    name = dep_meta.get("name", "the predictor Deployment")
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    template_meta = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    marks, carried = _marks(annotations), _marks(template_meta.get("annotations") or {})
    if carried and carried != marks:
        return (
            f"KServe has not written the patch into {name} yet (its pods carry an older servewise.io/ record)"
        )
    recorded = str(annotations.get(PREDICTOR_GENERATION) or "")
    uid, _, at = recorded.rpartition("/")
    generation = int(dep_meta.get("generation", 0) or 0)
    same = uid == str(dep_meta.get("uid") or "")
    if not carried and at.isdigit() and same and generation <= int(at):
        return f"KServe has not written the patch into {name} yet (generation {generation})"
    meta = isvc.get("metadata") or {}
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    replicas, held_replicas = predictor.get("minReplicas"), (deployment.get("spec") or {}).get("replicas")
    if replicas is not None and held_replicas is not None and int(held_replicas) < int(replicas):
        # KServe's (or its autoscaler's) to raise; above the minimum is the autoscaler's to keep
        return f"{name} has {held_replicas} replicas, fewer than the predictor's minimum {replicas}, yet"
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    children = {str(c.get("name")): c for c in template.get("containers") or []}
    wanted = [(str(c.get("name")), c, False) for c in predictor.get("containers") or []]
    if not wanted and isinstance(predictor.get("model"), dict):
        wanted = [("kserve-container", predictor["model"], True)]
    for cname, spec, runtime in wanted:
        child = children.get(cname)
        if child is None:
            return f"{name} has no container {cname} yet"
        args = [_render(str(a), meta) if runtime else str(a) for a in spec.get("args") or []]
        held = [str(a) for a in child.get("args") or []]
        if not _args_match(args, held[len(held) - len(args) :] if runtime else held):
            return f"{name}'s {cname} does not carry the predictor's args yet"
        # engine flags may live in the command: a container's is copied as is (none included), a
        # runtime's model's, when it has one, replaces the runtime's (placeholders rendered)
        command = [_render(str(a), meta) if runtime else str(a) for a in spec.get("command") or []]
        if (command or not runtime) and not _args_match(
            command, [str(a) for a in child.get("command") or []]
        ):
            return f"{name}'s {cname} does not carry the predictor's command yet"
        limits = (spec.get("resources") or {}).get("limits") or {}
        held_limits = (child.get("resources") or {}).get("limits") or {}
        for key, count in limits.items():
            if key.endswith("/gpu") and str(count) != str(held_limits.get(key)):
                return f"{name}'s {cname} still asks for {held_limits.get(key)} {key}, not {count}"
    selector = template.get("nodeSelector") or {}
    for key, value in (predictor.get("nodeSelector") or {}).items():
        if selector.get(key) != value:
            return f"{name} does not select {key}={value} yet"
    if predictor.get("affinity") and not _contains(predictor["affinity"], template.get("affinity")):
        return f"{name} does not carry the predictor's affinity yet"
    return None


def _marks(annotations: Mapping[str, Any]) -> dict[str, str]:
    """servewise's annotations: ``PREDICTOR_GENERATION`` and any a user declared."""
    return {str(k): str(v) for k, v in annotations.items() if str(k).startswith("servewise.io/")}


def _args_match(wanted: list[str], held: list[str]) -> bool:
    """Equal, position by position; an arg with a placeholder KServe renders and this does not
    (``{{.Labels.team}}``) matches any value."""
    return len(wanted) == len(held) and all(w == h or "{{" in w for w, h in zip(wanted, held, strict=True))


def _contains(wanted: Any, held: Any) -> bool:
    """Does ``held`` hold everything in ``wanted`` (maps: each key; lists: each item somewhere)?"""
    if isinstance(wanted, Mapping):
        return isinstance(held, Mapping) and all(_contains(v, held.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(held, list) and all(any(_contains(w, h) for h in held) for w in wanted)
    return bool(wanted == held)


def _render(arg: str, meta: Mapping[str, Any]) -> str:
    """KServe's placeholders for the InferenceService's name and namespace, as it renders them in
    a runtime's container (not in the predictor's own containers)."""
    return re.sub(
        r"\{\{\s*\.(Name|Namespace)\s*\}\}",
        lambda m: str(meta.get(m.group(1).lower(), "")),
        arg,
    )


def pod_problems(
    pods: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """(human-readable problems, the fatal ones) from pod statuses and Warning events of those pods."""
    problems: list[str] = []
    fatal: list[str] = []
    names = set()
    for pod in pods:
        name = str(pod.get("metadata", {}).get("name"))
        names.add(name)
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                problems.append(
                    f"pod {name}: {cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".rstrip(
                        ": "
                    )
                )
        for cs in status.get("containerStatuses") or []:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            now = (cs.get("state") or {}).get("terminated") or {}
            waiting = (cs.get("state") or {}).get("waiting") or {}
            for term in (now, last):
                if term.get("reason") == "OOMKilled":
                    msg = (
                        f"pod {name}: container {cs.get('name')} OOMKilled (exit {term.get('exitCode', '?')})"
                    )
                    problems.append(msg)
                    if int(cs.get("restartCount", 0) or 0) >= 2:
                        fatal.append(msg)
                    break
            if waiting.get("reason") in FATAL_WAITING:
                msg = f"pod {name}: container {cs.get('name')} {waiting['reason']}: {waiting.get('message', '')}".rstrip(
                    ": "
                )
                problems.append(msg)
                fatal.append(msg)
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("name") not in names or event.get("type") != "Warning":
            continue
        if event.get("reason") in WARNING_REASONS:
            problems.append(
                f"event {involved.get('name')}: {event.get('reason')}: {event.get('message', '')}"
            )
    return list(dict.fromkeys(problems)), fatal


def _when(event: Mapping[str, Any]) -> datetime:
    """When an event last happened (a repeating event's ``series.lastObservedTime``, else
    ``lastTimestamp``, ``eventTime`` or its creation); the epoch if none."""
    for raw in (
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if raw:
            try:
                return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            except ValueError:
                continue
    return datetime.fromtimestamp(0, UTC)


def _about(event: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Is ``event`` about this very pod (by uid when both have one: a StatefulSet's new pod has its
    predecessor's name)?"""
    involved, meta = event.get("involvedObject") or {}, pod.get("metadata") or {}
    if involved.get("name") != meta.get("name"):
        return False
    return not (involved.get("uid") and meta.get("uid")) or involved.get("uid") == meta.get("uid")


def _latest(
    events: Sequence[Mapping[str, Any]], pod: Mapping[str, Any], reasons: set[str]
) -> Mapping[str, Any] | None:
    return max((e for e in events if e.get("reason") in reasons and _about(e, pod)), key=_when, default=None)


def scheduling_stall(pods: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the first stuck pod cannot start while other pods hold what it needs; None when none is.

    Stuck: the scheduler found no node for it (``Unschedulable``; not a pod held by a scheduling
    gate) and no node is coming: no preemption nominated one, and the autoscaler's latest word on it
    is not ``TriggeredScaleUp`` / Karpenter's ``Nominated``. Or: still pending on a ReadWriteOnce
    volume attached to another node ("Multi-Attach error") with no successful attach since."""
    for pod in pods:
        name = str(pod.get("metadata", {}).get("name"))
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") != "PodScheduled" or cond.get("status") != "False":
                continue
            if cond.get("reason") != "Unschedulable" or status.get("nominatedNodeName"):
                continue
            word = _latest(events, pod, NODE_COMING | {"NotTriggerScaleUp"})
            if word is None or word.get("reason") not in NODE_COMING:
                return f"pod {name}: Unschedulable: {cond.get('message', '')}".rstrip(": ")
        if status.get("phase", "Pending") != "Pending":
            continue
        attach = _latest(events, pod, {"FailedAttachVolume", "SuccessfulAttachVolume"})
        if (
            attach is not None
            and attach.get("reason") == "FailedAttachVolume"
            and "Multi-Attach" in str(attach.get("message"))
        ):
            return f"pod {name}: FailedAttachVolume: {attach.get('message')}"
    return None
