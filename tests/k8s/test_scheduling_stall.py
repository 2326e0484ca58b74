"""Which pods are stuck for want of a node or a volume (a benchmark copy gives up on them early)."""

from __future__ import annotations

from typing import Any

from servewise.cluster.k8s_rollout import scheduling_stall

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}


def _pod(*conditions: dict[str, Any], phase: str = "Pending", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": list(conditions), **status}}


def _event(reason: str, at: str, message: str = "") -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "Pod", "name": "p"},
        "reason": reason,
        "lastTimestamp": at,
        "message": message,
    }


def test_an_unschedulable_pod_with_no_node_coming_is_stuck() -> None:
    assert scheduling_stall([_pod(UNSCHEDULABLE)], []) == "pod p: Unschedulable: 0/3 nodes"


def test_a_node_coming_means_waiting_helps() -> None:
    pod = _pod(UNSCHEDULABLE)
    assert scheduling_stall([pod], [_event("TriggeredScaleUp", "2026-11-24T10:00:00Z")]) is None
    assert scheduling_stall([pod], [_event("Nominated", "2026-11-24T10:00:00Z")]) is None  # Karpenter
    assert scheduling_stall([_pod(UNSCHEDULABLE, nominatedNodeName="gpu-a")], []) is None  # preemption


def test_the_autoscalers_latest_word_decides() -> None:
    pod = _pod(UNSCHEDULABLE)
    up, no = (
        _event("TriggeredScaleUp", "2026-11-24T10:00:00Z"),
        _event("NotTriggerScaleUp", "2026-11-24T10:05:00Z"),
    )
    assert scheduling_stall([pod], [up, no]) is not None  # the group reached its max since
    again = _event("TriggeredScaleUp", "2026-11-24T10:09:00Z")
    assert scheduling_stall([pod], [up, no, again]) is None


def test_a_pod_held_by_a_scheduling_gate_is_not_stuck() -> None:
    gated = {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}  # Kueue, say
    assert scheduling_stall([_pod(gated)], []) is None


def test_a_multi_attach_error_counts_until_the_volume_attaches() -> None:
    placed = {"type": "PodScheduled", "status": "True"}
    failed = _event("FailedAttachVolume", "2026-11-24T10:00:00Z", 'Multi-Attach error for volume "pvc-1"')
    assert "Multi-Attach" in (scheduling_stall([_pod(placed)], [failed]) or "")
    attached = _event("SuccessfulAttachVolume", "2026-11-24T10:02:00Z")
    assert scheduling_stall([_pod(placed)], [failed, attached]) is None
    assert scheduling_stall([_pod(placed, phase="Running")], [failed]) is None  # events outlive the cause
    other = _event("FailedAttachVolume", "2026-11-24T10:00:00Z", "rpc error: timed out")
    assert scheduling_stall([_pod(placed)], [other]) is None  # not another pod's hold: a rollout waits it out


def test_a_statefulset_pods_predecessor_events_do_not_count() -> None:
    """A StatefulSet's new pod takes its predecessor's name: events are matched by uid too."""
    pod = _pod(UNSCHEDULABLE)
    pod["metadata"]["uid"] = "new-uid"
    old = _event("TriggeredScaleUp", "2026-11-24T10:00:00Z")
    old["involvedObject"]["uid"] = "old-uid"
    assert scheduling_stall([pod], [old]) is not None
    old["involvedObject"]["uid"] = "new-uid"
    assert scheduling_stall([pod], [old]) is None


def test_a_repeating_event_is_as_recent_as_its_last_occurrence() -> None:
    """events.k8s.io keeps the first occurrence in eventTime, the last in series.lastObservedTime."""
    pod = _pod(UNSCHEDULABLE)
    no = {**_event("NotTriggerScaleUp", ""), "eventTime": "2026-11-24T09:00:00.000000Z"}
    no["series"] = {"count": 12, "lastObservedTime": "2026-11-24T10:30:00.000000Z"}
    up = _event("TriggeredScaleUp", "2026-11-24T10:00:00Z")
    assert scheduling_stall([pod], [up, no]) is not None  # "no scale-up" is the latest word
