"""Health analyzers: crashes, OOM kills, unschedulable pods, and load imbalance across replicas."""

from __future__ import annotations

import re

from servewise.domain import Evidence, Finding, Severity
from servewise.tools.analyzers.base import AnalysisInput

# (finding kind, event pattern, suggested knob)
_EVENT_KINDS = (
    ("oom", re.compile(r"OOMKilled|out of memory|CUDA out of memory", re.I), "gpu_memory_utilization"),
    ("crash_loop", re.compile(r"CrashLoopBackOff|Back-off restarting|Error: exit", re.I), None),
    (
        "unschedulable",
        re.compile(r"FailedScheduling|Unschedulable|Insufficient nvidia\.com/gpu", re.I),
        "gpu",
    ),
)
IMBALANCE = 1.5  # busiest pod / mean above this is imbalance
IMBALANCE_MIN_GAP = 4.0  # ... and at least this many requests apart


def pod_failures(inp: AnalysisInput) -> list[Finding]:
    """Crash loops, OOM kills and unschedulable pods, from rollout status and events."""
    ro = inp.rollout
    out: list[Finding] = []
    if ro is not None:
        texts = [*ro.events, ro.reason or ""]
        for kind, pattern, knob in _EVENT_KINDS:
            hits = [t for t in texts if t and pattern.search(t)]
            if hits:
                out.append(
                    inp.finding(
                        kind,
                        Severity.CRITICAL,
                        f"{len(hits)} event(s) show {kind.replace('_', ' ')}: {hits[0][:160]}",
                        [
                            Evidence(
                                signal="events",
                                value=float(len(hits)),
                                threshold=0.0,
                                window=inp.window,
                                query=f"rollout_status({inp.deployment.ref.key}).events",
                            )
                        ],
                        knob,
                    )
                )
    desired = inp.config.replicas
    ready = inp.deployment.ready_replicas
    if ro is not None:
        ready = ro.available_replicas if ready is None else min(ready, ro.available_replicas)
        desired = ro.desired_replicas or desired
    if ready is not None and ready < desired and not out:
        out.append(
            inp.finding(
                "replicas_unavailable",
                Severity.CRITICAL if ready == 0 else Severity.WARNING,
                f"only {ready} of {desired} replicas are available"
                + (f" ({ro.reason})" if ro and ro.reason else ""),
                [
                    Evidence(
                        signal="available_replicas",
                        value=float(ready),
                        threshold=float(desired),
                        window=inp.window,
                        query=f"rollout_status({inp.deployment.ref.key})",
                    )
                ],
                "replicas",
            )
        )
    return out


def replica_imbalance(inp: AnalysisInput) -> list[Finding]:
    """Running requests spread unevenly over the pods (needs per-pod series)."""
    pods = {p: s["requests_running"] for p, s in inp.pod_signals().items() if "requests_running" in s}
    if len(pods) < 2:
        return []
    values = list(pods.values())
    mean = sum(values) / len(values)
    busiest = max(pods, key=lambda p: pods[p])
    top, low = pods[busiest], min(values)
    if mean <= 0 or top / mean <= IMBALANCE or top - low < IMBALANCE_MIN_GAP:
        return []
    return [
        inp.finding(
            "replica_imbalance",
            Severity.WARNING,
            f"pod {busiest} runs {top:.0f} requests vs a mean of {mean:.1f} over {len(pods)} pods: the load "
            "balancer is not spreading load (sticky sessions or prefix-affinity routing?).",
            [
                Evidence(
                    signal=f"pod/{busiest}/requests_running",
                    value=top,
                    threshold=IMBALANCE * mean,
                    window=inp.window,
                    query=inp.evidence("requests_running").query,
                )
            ],
            "load_balancer",
        )
    ]


def coverage_notes(inp: AnalysisInput) -> list[str]:
    """What could not be assessed for lack of data (said, never guessed)."""
    notes = []
    if inp.telemetry is None:
        notes.append(
            f"{inp.deployment.ref.key}: no telemetry: rollout health was checked, and sizing against its"
            " declared workload and SLO; nothing that needs engine or GPU series"
        )
    elif inp.replicas() > 1 and sum("requests_running" in s for s in inp.pod_signals().values()) < 2:
        notes.append(
            f"{inp.deployment.ref.key}: replica imbalance not assessed: the snapshot has no per-pod series"
        )
    if inp.deployment.slo is None:
        notes.append(f"{inp.deployment.ref.key}: no SLO declared; SLO and slack checks skipped")
    serving = inp.signal("replicas_available")
    if serving is not None and abs(serving - inp.replicas()) > 0.1:
        notes.append(
            f"{inp.deployment.ref.key}: {serving:.1f} replicas available on average over the window, "
            f"{inp.replicas()} desired (a scale change or unavailable pods): per-replica rates use the average"
        )
    if inp.telemetry is not None and inp.telemetry.missing:
        notes.append(f"{inp.deployment.ref.key}: missing signals {sorted(inp.telemetry.missing)}")
    notes.extend(inp.notes)  # e.g. the workload read from telemetry
    if inp.telemetry is not None:  # the source's caveats (pods replaced in the window, a short history)
        notes.extend(f"{inp.deployment.ref.key}: {n}" for n in inp.telemetry.notes)
    return notes
