"""Post-change verification: wait for the rollout, observe a window, compare measured with predicted.

A change is a regression when its rollout failed, when it breaks an SLO the deployment met
before the change, or when a latency got worse than before *and* beyond the prediction's band
(``max(regression_tolerance, uncertainty)``). Missing telemetry makes the check inconclusive,
which is reported and never counted as a pass or a regression.
"""

from __future__ import annotations

import logging
from typing import Any

from servewise.domain import SLO, DeploymentTelemetry, Proposal, RolloutStatus, TelemetrySnapshot
from servewise.errors import ServewiseError
from servewise.workflows.environment import Environment
from servewise.workflows.state import RunOptions

log = logging.getLogger(__name__)

# measured signal -> (SLO field, Impact field)
COMPARED = {"ttft_p99_ms": ("ttft_p99_ms", "ttft_p99_ms"), "itl_p99_ms": ("tpot_p99_ms", "tpot_p99_ms")}


def window_label(seconds: float) -> str:
    s = max(1, round(seconds))
    return f"{s // 60}m" if s % 60 == 0 else f"{s}s"


def _slo_view(t: DeploymentTelemetry | None) -> dict[str, float]:
    if t is None:
        return {}
    out = {slo: t.signals[sig] for sig, (slo, _) in COMPARED.items() if sig in t.signals}
    if "e2e_p99_ms" in t.signals:
        out["e2e_p99_ms"] = t.signals["e2e_p99_ms"]
    return out


def verify_change(
    env: Environment, proposals: list[Proposal], before: dict[str, Any], opts: RunOptions
) -> list[dict[str, Any]]:
    if not proposals:
        return []
    rollouts: dict[str, RolloutStatus | None] = {}
    for p in proposals:
        try:
            rollouts[p.id] = env.cluster.wait_for_rollout(p.ref, timeout_s=opts.rollout_timeout_s)
        except ServewiseError as exc:
            rollouts[p.id] = None
            log.warning("rollout of %s: %s", p.id, exc)
    if opts.verify_window_s > 0:
        env.wait(opts.verify_window_s)
    after = env.telemetry.snapshot(window=window_label(opts.verify_window_s or 60))
    before_snap = TelemetrySnapshot.model_validate(before) if before else None
    return [_verify_one(env, p, rollouts[p.id], before_snap, after, opts) for p in proposals]


def _verify_one(
    env: Environment,
    p: Proposal,
    rollout: RolloutStatus | None,
    before: TelemetrySnapshot | None,
    after: TelemetrySnapshot,
    opts: RunOptions,
) -> dict[str, Any]:
    reasons: list[str] = []
    if rollout is None or rollout.failed or not rollout.done:
        why = (
            "rollout did not finish" if rollout is None else (rollout.reason or "rollout failed or timed out")
        )
        reasons.append(f"rollout: {why}")
    t_before = before.for_deployment(p.ref.name, p.ref.namespace) if before else None
    t_after = after.for_deployment(p.ref.name, p.ref.namespace)
    m_before, m_after = _slo_view(t_before), _slo_view(t_after)
    slo: SLO | None = None
    try:
        slo = env.cluster.get_deployment(p.ref).slo
    except ServewiseError as exc:
        log.warning("cannot read SLO of %s: %s", p.ref.key, exc)
    if slo is not None:
        new = sorted(set(slo.violations(m_after)) - set(slo.violations(m_before)))
        reasons += [f"SLO {name} broken: {m_after[name]:.0f} > {getattr(slo, name):.0f}" for name in new]
    band = max(opts.regression_tolerance, p.predicted.uncertainty_pct / 100.0)
    compared: dict[str, dict[str, float | None]] = {}
    for name, (_, impact_field) in COMPARED.items():
        measured = t_after.signals.get(name) if t_after else None
        predicted = getattr(p.predicted, impact_field)
        prior = t_before.signals.get(name) if t_before else None
        rel = None if measured is None or not predicted else (measured - predicted) / predicted
        compared[name] = {"measured": measured, "predicted": predicted, "before": prior, "rel_error": rel}
        if rel is not None and rel > band and prior is not None and measured is not None and measured > prior:
            reasons.append(
                f"{name} {measured:.0f} ms is worse than before ({prior:.0f}) and {rel:.0%} above the prediction"
            )
    inconclusive = t_after is None or all(c["measured"] is None for c in compared.values())
    return {
        "proposal_id": p.id,
        "ref": p.ref.key,
        "regression": bool(reasons),
        "inconclusive": inconclusive and not reasons,
        "reasons": reasons,
        "compared": compared,
        "window": after.window,
    }
