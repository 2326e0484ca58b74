"""From an optimizer outcome to a ``Proposal``: impact with uncertainty, validation, diff, risk, rollback.

``optimize_deployment`` (tool and plain function) runs ``optimizing.optimize`` on one deployment
and returns the proposal (None when nothing cheaper meets the SLO) and the Pareto front of cost
vs predicted p99 latency. Nothing here mutates the cluster: the manifest diff comes from the
backend's dry run, or from ``patching.render_patch`` when the backend cannot render one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from pydantic import BaseModel, Field

from servewise.cluster.backend import ClusterBackend
from servewise.domain import DeploymentTelemetry, Impact, InferenceDeployment, Proposal, ServingConfig
from servewise.errors import InputError, ServewiseError
from servewise.tools.analyzing import find_deployment
from servewise.tools.choosing import Trial
from servewise.tools.context import current_context
from servewise.tools.judging import worst_ratio
from servewise.tools.observing import with_observed_workload
from servewise.tools.optimizing import Outcome, describe, optimize, proposal_id, run_duration, verdicts
from servewise.tools.patching import render_patch
from servewise.tools.registry import registry
from servewise.tools.search_space import SearchPolicy
from servewise.tools.sizing import Sized

log = logging.getLogger(__name__)


class ParetoPoint(BaseModel):
    config: ServingConfig
    pool: str
    cost_per_hour: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float
    picked: bool = False


class TrialRecord(BaseModel):
    config: ServingConfig
    pool: str
    cost_per_hour: float
    passed: bool
    predicted: dict[str, float]
    measured: dict[str, float]
    requests: int = Field(
        description="benchmark length (a confirming run is longer unless max_benchmark_minutes caps it)"
    )
    ratio_bound: float | None = Field(
        default=None,
        description="worst measured p99 / objective widened by the run's simulated run-to-run spread",
    )
    confirming: bool = Field(
        default=False, description="this run confirmed (and decided) a narrow pass of the same config"
    )
    calibrated_on: int = Field(
        default=0,
        description="this deployment's benchmark runs in the calibration that made `predicted`",
    )


class DeploymentPlan(BaseModel):
    deployment: str
    namespace: str
    proposal: Proposal | None
    pareto_front: list[ParetoPoint] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(default_factory=list)
    candidates_evaluated: int = 0
    current_cost_per_hour: float
    before: dict[str, float] | None = Field(default=None, description="predicted p99s of the current config")
    after: dict[str, float] | None = Field(default=None, description="predicted p99s of the pick")
    notes: list[str] = Field(default_factory=list)
    no_proposal_reason: str | None = Field(
        default=None, description="why there is no proposal, when there is none"
    )


def pareto_front(
    candidates: list[Sized], pick: Sized | None, trials: Sequence[Trial] = ()
) -> list[ParetoPoint]:
    """Non-dominated candidates on (cost, predicted e2e p99), cheapest first, leaving out those
    whose benchmark failed and always holding the pick (which exploration may have found beyond the
    predicted candidates, or a measured pass the predictions dominate: demo ticket-triage's 1 x L40S
    at $1.86/h was cheaper than every point of a front that started at $3.72/h, and the plot showed
    no pick)."""
    failed = {key for key, t in verdicts(list(trials)).items() if not t.passed}
    pts = [s for s in candidates if (s.shape.pool.name, s.config) not in failed]

    def is_pick(s: Sized) -> bool:  # the same config in another pool (zones of one GPU) is not the pick
        return pick is not None and (s.shape.pool.name, s.config) == (pick.shape.pool.name, pick.config)

    if pick is not None and not any(is_pick(s) for s in pts):
        pts.append(pick)
    pts.sort(key=lambda s: (s.cost_per_hour, s.forecast.e2e_p99_ms))
    front: list[Sized] = []
    best_lat = math.inf
    for s in pts:
        if s.forecast.e2e_p99_ms < best_lat - 1e-9 or is_pick(s):
            front.append(s)
            best_lat = min(best_lat, s.forecast.e2e_p99_ms)
    return [
        ParetoPoint(
            config=s.config,
            pool=s.shape.pool.name,
            cost_per_hour=round(s.cost_per_hour, 4),
            ttft_p99_ms=s.forecast.ttft_p99_ms,
            tpot_p99_ms=s.forecast.tpot_p99_ms,
            e2e_p99_ms=s.forecast.e2e_p99_ms,
            picked=is_pick(s),
        )
        for s in front
    ]


BANDED_P99S = ("ttft_p99_ms", "tpot_p99_ms")


class _Benchmarked(Protocol):
    @property
    def predicted(self) -> Mapping[str, float]: ...
    @property
    def measured(self) -> Mapping[str, float]: ...


_T = TypeVar("_T", bound=_Benchmarked)


def worst_p99_error(trials: Iterable[_T]) -> tuple[float, _T, str] | None:
    """The benchmark run whose TTFT or TPOT p99 the model missed by the most, relative to the
    prediction: (error in %, the run, the p99's name); ``None`` when no run measured one predicted."""
    worst: tuple[float, _T, str] | None = None
    for t in trials:
        for k in BANDED_P99S:
            pred, meas = t.predicted.get(k), t.measured.get(k)
            if pred and meas:
                err = abs(pred - meas) / pred * 100
                if worst is None or err > worst[0]:
                    worst = (err, t, k)
    return worst


class _Calibrated(_Benchmarked, Protocol):
    @property
    def calibrated_on(self) -> int: ...
    @property
    def config(self) -> ServingConfig: ...


_C = TypeVar("_C", bound=_Calibrated)


def banded_runs(trials: Sequence[_C], proposed: ServingConfig | None = None) -> list[_C]:
    """The runs the band is taken over: those of the proposed config's engine and GPU class (the
    model is calibrated per class: doc-extract's ±17,360 % came from a failed H100 run whose queue ran
    away, for an A100 pick), and of those, the ones the model predicted once at least one of this
    deployment's benchmarks calibrated it (the proposal's prediction comes from a model calibrated on
    all of them); each filter only where it leaves a run. The first prediction, from the catalog or
    from telemetry of another config, can be off by far more than the model the proposal uses: demo
    support-bot's first run was predicted at 352 ms and measured 990 (a ±181 % band), its third,
    predicted after two runs, at 826 and measured 636 (23 %)."""
    runs = list(trials)
    if proposed is not None:
        same = [t for t in runs if (t.config.engine, t.config.gpu) == (proposed.engine, proposed.gpu)]
        runs = same or runs
    calibrated = [t for t in runs if t.calibrated_on > 0]
    return calibrated or runs


def _uncertainty_pct(out: Outcome) -> float:
    """± band on the predicted p99s, relative to the prediction (a measured p99 within
    ``predicted x (1 +- band)``, as verification reads it): the worst relative error seen on
    ``banded_runs`` (min 10%), else the telemetry fit residual (min 25%)."""
    worst = worst_p99_error(banded_runs(out.trials, out.pick.config if out.pick else None))
    if worst is not None:
        return round(max(10.0, worst[0]), 1)
    return round(max(25.0, out.calibration.residual_pct or 0.0), 1)


def _how_measured(out: Outcome, trial: Trial) -> str:
    """The deciding run in words: its length and load, whether it confirmed an earlier narrow pass, and its
    worst p99 / objective with and without the run-to-run spread (``judging.upper_ratio``)."""
    share = out.load.rate_per_replica(trial.config.replicas)
    replicas = trial.config.replicas
    text = (
        f"benchmark of {trial.requests} requests to one replica at {share:.2f} req/s (its share of"
        f" {out.load.rate_per_s:.2f} req/s, peak + headroom, over {replicas} replica{'s' if replicas > 1 else ''}),"
        f" {run_duration(trial.requests, share)} of traffic"
    )
    if trial.confirming:
        text += ", confirming an earlier run's narrow pass"
    if trial.measured:
        text += f"; worst p99 at {worst_ratio(out.deployment.slo, trial.measured):.2f} of its objective"
        if trial.ratio_bound is not None:
            text += f" ({trial.ratio_bound:.2f} with its run-to-run spread)"
    return text


def no_proposal_reason(out: Outcome) -> str:
    """Why ``build_proposal`` proposes nothing for ``out``: the optimizer's reason for having no
    pick, or a pick that is the current config at no lower cost."""
    return out.no_pick_reason or "the current configuration is already the cheapest that meets the SLO"


def _risk(current: ServingConfig, proposed: ServingConfig, verified: bool) -> str:
    changed = {k for k in ServingConfig.model_fields if getattr(current, k) != getattr(proposed, k)}
    to_one = proposed.replicas == 1 < current.replicas
    if not verified:
        risk = "high: not benchmarked"
    elif changed & {"model", "quantization"}:
        risk = "medium: model variant or quantization changes output quality within the policy's floor"
    elif changed & {"gpu", "tensor_parallel"}:
        risk = "medium: pods move to other nodes; capacity must be free during the rollout"
    else:
        risk = f"{'medium' if to_one else 'low'}: engine flags and replicas only"
    if to_one:
        risk += (
            f"; {current.replicas} replicas -> 1: no redundancy left, a pod restart or node loss is an"
            " outage (keep 2 if the service needs it)"
        )
    return risk


def build_proposal(out: Outcome, cluster: ClusterBackend | None) -> Proposal | None:
    dep, pick = out.deployment, out.pick
    if pick is None or (pick.config == dep.config and pick.cost_per_hour >= out.current_cost_per_hour):
        return None
    pid = proposal_id(dep, pick.config)
    verified = out.verified
    # the last run of the pick decides (a short pass may have been overruled by a longer confirming run)
    trial = next((t for t in reversed(out.trials) if t.config == pick.config), None)
    before = out.current_forecast or {}
    predicted = Impact(
        cost_per_hour_before=out.current_cost_per_hour,
        cost_per_hour_after=pick.cost_per_hour,
        ttft_p99_ms=pick.forecast.ttft_p99_ms,
        tpot_p99_ms=pick.forecast.tpot_p99_ms,
        uncertainty_pct=_uncertainty_pct(out),
        validated_by=(f"benchmark:{len(out.trials)}" if verified or out.unconfirmed else "model")
        + (f"+telemetry-calibrated({out.calibration.observations} obs)" if out.telemetry_calibrated else ""),
    )
    measured = None
    if trial is not None:
        measured = Impact(
            cost_per_hour_before=out.current_cost_per_hour,
            cost_per_hour_after=pick.cost_per_hour,
            ttft_p99_ms=trial.measured.get("ttft_p99_ms"),
            tpot_p99_ms=trial.measured.get("tpot_p99_ms"),
            validated_by=_how_measured(out, trial),
        )
    patch: list[dict[str, object]] = []
    refused = ""
    if cluster is not None:
        try:
            patch = cluster.apply(dep.ref, pick.config, proposal_id=pid, dry_run=True).patch
        except InputError as exc:  # the change cannot be written into this workload's manifest
            refused = (
                f"high: the dry run refused it ({exc}); applying it will fail, edit the manifest by hand. "
            )
            log.warning("dry run of %s refused: %s", dep.ref.key, exc)
        except (ServewiseError, NotImplementedError) as exc:
            log.info("dry run unavailable for %s (%s); rendering the diff locally", dep.ref.key, exc)
    if not patch:
        patch = render_patch(dep.config, pick.config)
    saving = out.current_cost_per_hour - pick.cost_per_hour
    summary = (
        f"{describe(dep.config)} -> {describe(pick.config)}: ${out.current_cost_per_hour:.2f}/h -> "
        f"${pick.cost_per_hour:.2f}/h ({'saves' if saving >= 0 else 'adds'} ${abs(saving):.2f}/h) at "
        f"{out.load.rate_per_s:.2f} req/s peak+headroom; the current config predicted at that load: "
        + ", ".join(f"{k}={v:.0f}" for k, v in before.items())
    )
    return Proposal(
        id=pid,
        ref=dep.ref,
        current=dep.config,
        proposed=pick.config,
        summary=summary,
        predicted=predicted,
        measured=measured,
        risk=refused
        + (
            "high: measured within the SLO but without the margin a pass needs; proposed because the current"
            " config breaks its SLO. "
            if out.unconfirmed
            else ""
        )
        + _risk(dep.config, pick.config, verified or out.unconfirmed),
        manifest_patch=patch,
        rollback=(
            f"rollback({dep.ref.key}, proposal_id={pid}) restores the recorded previous spec "
            f"({describe(dep.config)}); trigger it if the post-apply SLO check fails"
        ),
    )


def optimize_deployment(
    dep: InferenceDeployment,
    cluster: ClusterBackend,
    *,
    telemetry: DeploymentTelemetry | None = None,
    policy: SearchPolicy | None = None,
    benchmark: bool = True,
    findings: list[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> DeploymentPlan:
    """Plain-Python API: optimize one deployment and return its plan (proposal + Pareto front).

    ``on_progress`` receives one line per benchmark run (for a progress bar)."""
    dep, observed = with_observed_workload(dep, telemetry)
    out = optimize(
        dep,
        cluster.list_node_pools(),
        telemetry=telemetry,
        benchmark=cluster.run_benchmark if benchmark else None,
        policy=policy,
        on_progress=on_progress,
    )
    proposal = build_proposal(out, cluster)
    if proposal is not None and findings:
        proposal = proposal.model_copy(update={"findings": findings})
    return DeploymentPlan(
        deployment=dep.ref.name,
        namespace=dep.ref.namespace,
        proposal=proposal,
        pareto_front=pareto_front(out.candidates, out.pick, out.trials),
        trials=[
            TrialRecord(
                config=t.config,
                pool=t.pool,
                cost_per_hour=t.cost_per_hour,
                passed=t.passed,
                predicted=t.predicted,
                measured=t.measured,
                requests=t.requests,
                ratio_bound=t.ratio_bound,
                confirming=t.confirming,
                calibrated_on=t.calibrated_on,
            )
            for t in out.trials
        ],
        candidates_evaluated=len(out.candidates),
        current_cost_per_hour=out.current_cost_per_hour,
        notes=[observed, *out.notes] if observed else out.notes,
        before=out.current_forecast,
        after=out.pick.forecast.as_dict() if out.pick else None,
        no_proposal_reason=None if proposal else no_proposal_reason(out),
    )


class OptimizeDeploymentInput(BaseModel):
    name: str = Field(description="deployment name")
    namespace: str = "default"
    policy: SearchPolicy = Field(default_factory=SearchPolicy)
    benchmark: bool = Field(default=True, description="validate candidates with benchmark runs (budgeted)")
    window: str = "15m"


@registry.tool(name="optimize_deployment")
def optimize_deployment_tool(args: OptimizeDeploymentInput) -> DeploymentPlan:
    """Find the cheapest configuration meeting the SLO at peak load + headroom; returns a Proposal
    (validated by benchmarks) and the cost-vs-latency Pareto front. Does not change the cluster."""
    ctx = current_context()
    dep = find_deployment(ctx.cluster, args.name, args.namespace)
    snap = ctx.telemetry.snapshot(window=args.window)
    tel = snap.for_workload(dep.ref)
    return optimize_deployment(
        dep,
        ctx.cluster,
        telemetry=tel,
        policy=args.policy,
        benchmark=args.benchmark,
        on_progress=ctx.extras.get("on_progress"),  # a line per benchmark run, when the caller asks
    )
