"""Post-change verification: wait for the rollout, observe a window, compare measured with predicted.

A change is a regression when its rollout failed, when it breaks an SLO the deployment met
before the change, or when a latency got worse than before *and* beyond the band
(``max(regression_tolerance, uncertainty)``) above what the change was approved on: the
prediction, or the benchmark's measurement when that is higher; a p99 read from a histogram is
only known to lie in its bucket, so "above" means the bucket's lower bound is. An SLO limit that lies inside the
histogram bucket holding the measured p99 cannot be judged from the histogram: when the benchmark
met it, the check reports it under ``unresolved`` instead of rolling back. The window is long enough for
a p99 (``P99_REQUESTS`` requests of the slowest changed deployment, at most ``MAX_WINDOW_S``).
Missing telemetry makes the check inconclusive, which is reported and never counted as a pass
or a regression.
"""

from __future__ import annotations

import logging
from typing import Any

from servewise.domain import SLO, DeploymentTelemetry, Proposal, RolloutStatus, TelemetrySnapshot
from servewise.domain.histograms import SIGNAL_BUCKETS_MS, bucket_around
from servewise.errors import ServewiseError
from servewise.workflows.environment import Environment
from servewise.workflows.state import RunOptions

log = logging.getLogger(__name__)

# measured signal -> (SLO field, Impact field)
COMPARED = {"ttft_p99_ms": ("ttft_p99_ms", "ttft_p99_ms"), "itl_p99_ms": ("tpot_p99_ms", "tpot_p99_ms")}
# A p99 read from a window of N requests rests on N/100 of them: the window is stretched (up to
# MAX_WINDOW_S) until the slowest-traffic changed deployment sends about this many requests.
P99_REQUESTS = 500
MAX_WINDOW_S = 1800.0


# Bucket bounds (ms) of the histograms behind each SLO's signal: vLLM's, which the twin exports too.
# A p99 read through histogram_quantile is only known to lie inside the bucket it falls in.
SLO_BUCKETS_MS = {
    "ttft_p99_ms": SIGNAL_BUCKETS_MS["vllm"]["ttft_p99_ms"],
    "tpot_p99_ms": SIGNAL_BUCKETS_MS["vllm"]["itl_p99_ms"],
}


def unresolved_by_buckets(name: str, measured: float, limit: float, benchmarked: float | None) -> bool:
    """True when the SLO limit lies inside the bucket holding the measured p99 (the histogram cannot
    tell which side of the limit the true p99 is on) and the benchmark at peak + headroom met it."""
    bounds = SLO_BUCKETS_MS.get(name)
    if bounds is None or benchmarked is None or benchmarked > limit:
        return False
    lower, upper = bucket_around(measured, bounds)
    return lower < limit < upper


def observation_window_s(
    proposals: list[Proposal], before: TelemetrySnapshot | None, minimum_s: float
) -> float:
    """Seconds to observe after the rollouts: ``minimum_s`` (the run's ``--verify-window``), longer
    when a changed deployment's request rate (before the change) is too low for a p99 in that time."""
    if minimum_s <= 0 or before is None:
        return minimum_s
    needed = minimum_s
    for p in proposals:
        t = before.for_workload(p.ref)
        rate = t.signals.get("request_rate_per_s") if t is not None else None
        if rate and rate > 0:
            needed = max(needed, P99_REQUESTS / rate)
    return float(min(max(needed, minimum_s), max(MAX_WINDOW_S, minimum_s)))


def verdict(result: dict[str, Any] | None) -> str:
    """One line for people: ``passed``, ``regression: ...``, ``unresolved: ...`` or ``inconclusive``."""
    if not result:
        return "not verified"
    if result.get("regression"):
        return "regression: " + "; ".join(result.get("reasons") or [])
    if result.get("inconclusive"):
        return "inconclusive: no latency series after the change"
    if result.get("unresolved"):
        return "unresolved (kept, look at it): " + "; ".join(result["unresolved"])
    return "passed"


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
    before_snap = TelemetrySnapshot.model_validate(before) if before else None
    window_s = observation_window_s(proposals, before_snap, opts.verify_window_s)
    if window_s > 0:
        env.wait(window_s)
    after = env.telemetry.snapshot(window=window_label(window_s or 60))
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
    t_before = before.for_workload(p.ref) if before else None
    t_after = after.for_workload(p.ref)
    m_before, m_after = _slo_view(t_before), _slo_view(t_after)
    slo: SLO | None = None
    try:
        slo = env.cluster.get_deployment(p.ref).slo
    except ServewiseError as exc:
        log.warning("cannot read SLO of %s: %s", p.ref.key, exc)
    unresolved: list[str] = []
    if slo is not None:
        for name in sorted(set(slo.violations(m_after)) - set(slo.violations(m_before))):
            limit = getattr(slo, name)
            benchmarked = getattr(p.measured, name, None) if p.measured is not None else None
            if unresolved_by_buckets(name, m_after[name], limit, benchmarked):
                lower, upper = bucket_around(m_after[name], SLO_BUCKETS_MS[name])
                unresolved.append(
                    f"SLO {name}: p99 {m_after[name]:.0f} read from the {lower:g}-{upper:g} ms bucket that holds "
                    f"the limit {limit:.0f}; the benchmark at peak + headroom measured {benchmarked:.0f}"
                )
            else:
                reasons.append(f"SLO {name} broken: {m_after[name]:.0f} > {limit:.0f}")
    band = max(opts.regression_tolerance, p.predicted.uncertainty_pct / 100.0)
    compared: dict[str, dict[str, float | None]] = {}
    for name, (slo_field, impact_field) in COMPARED.items():
        measured = t_after.signals.get(name) if t_after else None
        predicted = getattr(p.predicted, impact_field)
        benchmarked = getattr(p.measured, impact_field) if p.measured is not None else None
        # The change was approved on both numbers: the model's and, when there is one, the benchmark's
        # (at peak + headroom). Only a latency above both, beyond the band, is a surprise.
        expected = max((v for v in (predicted, benchmarked) if v), default=None)
        prior = t_before.signals.get(name) if t_before else None
        rel = None if measured is None or not predicted else (measured - predicted) / predicted
        rel_expected = None if measured is None or not expected else (measured - expected) / expected
        compared[name] = {
            "measured": measured, "predicted": predicted, "benchmarked": benchmarked, "before": prior,
            "rel_error": rel,
        }  # fmt: skip
        worse = prior is not None and measured is not None and measured > prior
        # read through a histogram, the true p99 is only known to be above its bucket's lower bound
        floor = bucket_around(measured, SLO_BUCKETS_MS[slo_field])[0] if measured is not None else None
        surely_above = floor is not None and expected is not None and floor > expected * (1 + band)
        if rel_expected is not None and rel_expected > band and worse and surely_above:
            basis = "the prediction and the benchmark" if benchmarked else "the prediction"
            reasons.append(
                f"{name} {measured:.0f} ms is worse than before ({prior:.0f}) and {rel_expected:.0%} above "
                f"{basis} ({expected:.0f})"
            )
    inconclusive = t_after is None or all(c["measured"] is None for c in compared.values())
    return {
        "proposal_id": p.id,
        "ref": p.ref.key,
        "regression": bool(reasons),
        "inconclusive": inconclusive and not reasons,
        "reasons": reasons,
        "unresolved": unresolved,
        "compared": compared,
        "window": after.window,
    }
