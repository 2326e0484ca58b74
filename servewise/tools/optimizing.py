"""Per-deployment optimizer: the cheapest configuration that meets the SLO at peak load + headroom.

1. Calibrate the performance model on the deployment's own telemetry (``calibrating``).
2. Sweep every valid shape (variant, quantization, pool/GPU, TP) at the current batching knobs,
   sizing replicas per shape (``sizing``); sweep the batching knobs of the best few shapes
   (``choosing.search``).
3. Benchmark the cheapest candidate the simulator predicts to pass (``choosing.next_candidate``)
   on the cluster, judge the run against its run-to-run spread (a narrow pass gets a longer
   confirming run, of at most ``max_benchmark_minutes`` of traffic: ``_judge``), add the
   measurement to the calibration, re-rank, and repeat within the budget until no cheaper
   candidate is predicted to pass. The pick is the cheapest candidate
   *measured* to meet the SLO (never an unmeasured one when benchmarks are allowed); with no
   budget, the cheapest predicted one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from servewise.domain import (
    SLO,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentTelemetry,
    InferenceDeployment,
    NodePool,
    ServingConfig,
)
from servewise.domain.histograms import quantile_bucket
from servewise.errors import InputError, ServewiseError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.tools.calibrating import Calibration, Observation, fit_calibration
from servewise.tools.choosing import (
    Problem,
    Trial,
    next_candidate,
    share_of,
    twin_key,
    verdicts,
)
from servewise.tools.judging import (
    benchmark_passes,
    measured_values,
    observed_values,
    underpredicted,
    upper_ratio,
    worst_ratio,
)
from servewise.tools.search_space import (
    SearchPolicy,
    Shape,
    available_gpus,
    confirm_length,
    current_cost_per_hour,
    price_of,
)
from servewise.tools.sizing import Load, Sized, forecast, load_for
from servewise.tools.verifying import simulated_spread

log = logging.getLogger(__name__)
Benchmark = Callable[[BenchmarkRequest], BenchmarkResult]
EXPLORE_MARGINS = (1.1, 1.3, 1.6, 2.0)  # relaxed analytical margins whose candidates the simulator may accept
# With nothing passed and this many benchmarks left, only a clear simulated pass (``SAFE_MARGIN``) is
# tried: a candidate that is not clear may need its confirming run, and the safe one after it must
# still be able to have its own (bench seed 2002, svc-1 spent 7 of 8 on near misses at 0.95-0.97 of
# the objective, and its unconfirmable 8th kept the current config at 13x the optimum's cost).
SAFE_REMAINING = 3
# Telemetry the fitted model still misses by more than this (RMS relative error of its medians) is
# not a steady state the model describes; fitting it would bend every factor (and tail) to explain it.
TELEMETRY_RESIDUAL_LIMIT_PCT = 100.0


@dataclass
class Outcome:
    deployment: InferenceDeployment
    load: Load
    current_cost_per_hour: float
    current_forecast: dict[str, float] | None
    pick: Sized | None
    candidates: list[Sized]
    trials: list[Trial] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    notes: list[str] = field(default_factory=list)
    # the pick measured within the SLO without the margin a pass needs, proposed only because the
    # current config breaks its SLO (``_better_than_current``)
    unconfirmed: bool = False
    telemetry_calibrated: bool = False  # the deployment's own telemetry is in ``calibration``

    @property
    def no_pick_reason(self) -> str | None:
        """Why there is no pick (None when there is one)."""
        if self.pick is not None:
            return None
        if self.trials:
            return (
                f"no candidate passed its benchmark in {len(self.trials)} run(s); keeping the current config"
            )
        return (
            "no candidate is predicted to meet the SLO, so none was benchmarked; keeping the current config"
        )

    @property
    def verified(self) -> bool:
        if self.pick is None:
            return False
        return any(t.passed and t.config == self.pick.config for t in verdicts(self.trials).values())


def telemetry_observation(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, network_ms: float = 0.0
) -> Observation | None:
    """The deployment's own telemetry as one calibration point (current config, observed rate).
    Users' TTFT includes ``network_ms`` (an edge pool's latency); the model predicts the server's."""
    if tel is None or dep.workload is None:
        return None
    rate = tel.get("request_rate_per_s")
    replicas = tel.replicas or dep.config.replicas
    # the rate covers the window: per replica, over the replicas that served it on average (a
    # scale-up or a crashed pod within the window), not the count now
    available = tel.get("replicas_available")
    serving = float(replicas) if available is None else available
    if not rate or rate <= 0 or replicas < 1 or serving <= 0:
        return None

    def server_side(ttft: float | None) -> float | None:
        return None if ttft is None or ttft <= network_ms else ttft - network_ms

    # Quantiles read through histogram_quantile lie anywhere in their bucket (TTFT's net of the network).
    buckets = []
    for name, signal, shift in (
        ("ttft_p50", "ttft_p50_ms", network_ms), ("ttft_p99", "ttft_p99_ms", network_ms),
        ("tpot_p50", "itl_p50_ms", 0.0), ("tpot_p99", "itl_p99_ms", 0.0),
    ):  # fmt: skip
        value = tel.get(signal)
        bucket = quantile_bucket(dep.config.engine.value, signal, value) if value else None
        if bucket is not None:
            buckets.append((name, max(bucket[0] - shift, 0.0), bucket[1] - shift))
    return Observation(
        config=dep.config.with_changes(replicas=replicas),
        input_len=dep.workload.input_len.mean,
        output_len=dep.workload.output_len.mean,
        rate_per_replica=rate / serving,
        ttft_p50_ms=server_side(tel.get("ttft_p50_ms")),
        tpot_p50_ms=tel.get("itl_p50_ms"),
        ttft_p99_ms=server_side(tel.get("ttft_p99_ms")),
        tpot_p99_ms=tel.get("itl_p99_ms"),
        source="telemetry",
        buckets=tuple(buckets),
    )


def optimize(
    dep: InferenceDeployment,
    pools: list[NodePool],
    *,
    telemetry: DeploymentTelemetry | None = None,
    benchmark: Benchmark | None = None,
    policy: SearchPolicy | None = None,
    peak_rate_per_s: float | None = None,
    calibrate: bool = True,
    catalog: Catalog | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    policy = policy or SearchPolicy()
    catalog = catalog or get_catalog()
    if dep.slo is None:
        raise InputError(
            f"deployment {dep.ref.key} declares no SLO; nothing to optimize against", field="slo"
        )
    observed = telemetry.get("request_rate_per_s") if telemetry else None
    load = load_for(dep, observed, policy, peak_rate_per_s)
    pool_by_name = {p.name: p for p in pools}
    notes: list[str] = []
    busiest = telemetry.get("request_rate_peak_per_s") if telemetry else None
    if busiest is not None and busiest > load.rate_per_s:  # sized below what the lookback saw
        notes.append(
            f"sized for {load.rate_per_s:.3g} req/s (the peak it was given + {policy.headroom:.0%} headroom),"
            f" below the busiest 5 minutes telemetry saw ({busiest:.3g} req/s): if that peak is"
            " the load to serve, declare it (servewise.io/workload) or raise the policy's headroom"
        )
    observations: list[Observation] = []
    cal = Calibration()
    current_pool = pool_by_name.get(dep.pool or "")
    if calibrate:
        obs = telemetry_observation(dep, telemetry, current_pool.network_latency_ms if current_pool else 0.0)
        fitted = fit_calibration([obs]) if obs is not None else None
        if obs is None or fitted is None:
            notes.append("no usable telemetry: starting from the uncalibrated model")
        elif (fitted.residual_pct or 0.0) > TELEMETRY_RESIDUAL_LIMIT_PCT:
            notes.append(
                f"telemetry of {dep.config.gpu} does not fit the model (fit residual"
                f" {fitted.residual_pct:.0f}%, over {TELEMETRY_RESIDUAL_LIMIT_PCT:.0f}%: a backlog or a"
                " transient the steady-state model cannot explain); not used to calibrate, starting"
                " from the uncalibrated model"
            )
        else:
            observations.append(obs)
            cal = fitted
            fit = "n/a" if cal.residual_pct is None else f"{cal.residual_pct:.1f}%"
            notes.append(f"calibrated on telemetry of {dep.config.gpu}: fit residual {fit}")
    current_cost = current_cost_per_hour(dep, current_pool, catalog)

    def current_forecast() -> dict[str, float] | None:
        try:
            return forecast(
                cal, dep.config, load, current_pool.network_latency_ms if current_pool else 0
            ).as_dict()
        except ServewiseError:
            return None

    trials: list[Trial] = []
    tried: set[tuple[str, ServingConfig]] = set()
    budget = policy.benchmark_budget if (benchmark is not None and calibrate) else 0
    problem = Problem(dep, pools, load, policy, catalog)
    candidates = problem.search(cal)
    # Exploration: once no cheaper candidate is predicted to pass at the strict margin, try ones
    # predicted within a relaxed margin (the model's error band); only measured passes are picked.
    margins = sorted({policy.slo_margin, *(m for m in EXPLORE_MARGINS if m > policy.slo_margin)})
    by_margin: dict[float, list[Sized]] = {policy.slo_margin: candidates}
    while len(trials) < budget:
        final = list(verdicts(trials).values())
        best_pass = min((t.cost_per_hour for t in final if t.passed), default=float("inf"))
        safe = best_pass == float("inf") and budget - len(trials) <= SAFE_REMAINING
        nxt = next_candidate(problem, cal, margins, by_margin, tried, best_pass, final, safe)
        if nxt is None:
            break
        tried.add((nxt.shape.pool.name, nxt.config))
        requests, confirming = policy.benchmark_requests, False
        rate = load.rate_per_replica(nxt.config.replicas)  # the benchmark's arrival rate
        # benchmark runs already in ``cal``, which predicted ``nxt`` (a run that failed to start adds none)
        calibrated_on = sum(o.source == "benchmark" for o in observations)
        while True:
            if on_progress:
                on_progress(
                    f"benchmark {len(trials) + 1}/{budget}: {describe(nxt.config)} in {nxt.shape.pool.name}"
                    f" ({requests} requests, {run_duration(requests, rate)} of traffic at {rate:.2f} req/s)"
                )
            trial, obs = _benchmark(benchmark, dep, load, nxt, requests, notes)  # type: ignore[arg-type]
            trial.confirming, trial.calibrated_on = confirming, calibrated_on
            trials.append(trial)
            if obs is not None:
                observations.append(obs)
            if not _judge(trial, trials, cal, load, dep, policy):
                break
            if len(trials) >= budget:
                trial.passed = False  # an unconfirmed narrow pass is not trusted
                notes.append(f"{describe(nxt.config)} passed narrowly with no budget left to confirm it")
                break
            requests, confirming = confirm_length(policy, rate), True
        cal = fit_calibration(observations, cal)
        candidates = problem.search(cal)
        by_margin = {policy.slo_margin: candidates}

    pick: Sized | None
    if budget:
        winners = [t for t in verdicts(trials).values() if t.passed]
        best = min(winners, key=lambda t: t.cost_per_hour) if winners else None
        pick, unconfirmed = None, False
        if best is None:  # nothing confirmed: still better than a current config that breaks the SLO?
            best = _better_than_current(trials, dep, current_forecast(), telemetry)
            unconfirmed = best is not None
            if best is not None:
                notes.append(
                    f"no candidate passed with margin, and the current config breaks its SLO: proposing"
                    f" {describe(best.config)}, measured within it (worst p99 at"
                    f" {worst_ratio(dep.slo, best.measured):.2f} of its objective) but unconfirmed"
                )
        if best is not None:
            shape = _shape_for(best, pool_by_name, dep, catalog)
            pick = Sized(
                shape,
                best.config,
                forecast(cal, best.config, load, shape.pool.network_latency_ms),
                best.cost_per_hour,
            )
    else:
        pick, unconfirmed = (candidates[0] if candidates else None), False
    out = Outcome(
        dep, load, current_cost, current_forecast(), pick, candidates, trials, cal, notes, unconfirmed,
        telemetry_calibrated=any(o.source == "telemetry" for o in observations),
    )  # fmt: skip
    if budget and out.no_pick_reason:
        out.notes.append(out.no_pick_reason)
    return out


def _better_than_current(
    trials: list[Trial],
    dep: InferenceDeployment,
    now: dict[str, float] | None,
    telemetry: DeploymentTelemetry | None,
) -> Trial | None:
    """When no candidate passed with margin: the benchmarked one whose last run read furthest inside
    the SLO (ties: the cheapest), if the current config breaks the SLO (its telemetry or its forecast
    at the peak load). Keeping the current config is then a known violation, and a candidate measured
    within every objective, if only by less than a pass needs, is the better bet (bench seed 1304,
    svc-1: four candidates read 0.89-0.99 of the objective in their 10 000-request runs, none with the
    margin, and the current config that stayed broke the SLO)."""
    p99s = ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms")
    observed = observed_values(telemetry.signals, p99s) if telemetry is not None else {}
    if max(worst_ratio(dep.slo, now or {}), worst_ratio(dep.slo, observed)) <= 1.0:
        return None
    inside = [t for t in verdicts(trials).values() if t.measured and worst_ratio(dep.slo, t.measured) < 1.0]
    return min(inside, key=lambda t: (worst_ratio(dep.slo, t.measured), t.cost_per_hour), default=None)


def _judge(
    trial: Trial,
    trials: list[Trial],
    cal: Calibration,
    load: Load,
    dep: InferenceDeployment,
    policy: SearchPolicy,
) -> bool:
    """Settle ``trial.passed`` for a run of ``trial.requests``; True when it is a pass that a longer
    confirming run must back before it counts.

    A pass by less than its run-to-run spread may be luck, and so may one where a twin (other
    batching knobs only) failed, or one the model under-predicted (it does not know the regime).
    A confirming run must itself clear the guard band and its own spread bound: a run's p99 reads
    the long-run tail a few % low and strays from it by the spread the simulator predicts at the
    run's own length (shorter when ``max_benchmark_minutes`` caps it, so the bound is stricter)."""
    if not trial.passed:
        return False
    spread = simulated_spread(
        cal, trial.config, share_of(load, dep, trial.config), trial.requests, trial.network_ms
    )
    trial.ratio_bound = upper_ratio(dep.slo, trial.measured, spread, policy.confidence_z)
    worst = worst_ratio(dep.slo, trial.measured)
    if trial.confirming or trial.requests >= policy.confirm_requests:
        trial.passed = worst <= policy.confirm_margin and trial.ratio_bound <= 1.0
        return False
    twin_failed = any(not t.passed and twin_key(t.config) == twin_key(trial.config) for t in trials)
    return (
        twin_failed
        or worst > policy.confirm_above
        or trial.ratio_bound > 1.0
        or underpredicted(dep.slo, trial.predicted, trial.measured, policy.tolerance)
    )


def _benchmark(
    benchmark: Benchmark, dep: InferenceDeployment, load: Load, cand: Sized, requests: int, notes: list[str]
) -> tuple[Trial, Observation | None]:
    """One benchmark of one replica of ``cand`` at its share of the load; a candidate that does
    not start (OOM, unschedulable) is a failed trial with no observation."""
    request = BenchmarkRequest(
        ref=dep.ref, config=cand.config, workload=share_of(load, dep, cand.config), num_requests=requests
    )
    pool, predicted = cand.shape.pool.name, cand.forecast.as_dict()
    try:
        res = benchmark(request)
    except ServewiseError as exc:
        notes.append(f"benchmark of {describe(cand.config)} failed: {exc}")
        return Trial(cand.config, pool, predicted, {}, False, cand.cost_per_hour, requests), None
    net = cand.shape.pool.network_latency_ms
    obs = Observation(
        config=cand.config,
        input_len=load.input_len,
        output_len=load.output_len,
        rate_per_replica=load.rate_per_replica(cand.config.replicas),
        ttft_p50_ms=res.ttft_p50_ms,
        tpot_p50_ms=res.tpot_p50_ms,
        ttft_p99_ms=res.ttft_p99_ms,
        tpot_p99_ms=res.tpot_p99_ms,
    )
    passed = benchmark_passes(res, dep.slo or SLO(), net)
    trial = Trial(
        cand.config, pool, predicted, measured_values(res, net), passed, cand.cost_per_hour, requests, net
    )
    return trial, obs


def _shape_for(t: Trial, pools: dict[str, NodePool], dep: InferenceDeployment, catalog: Catalog) -> Shape:
    pool = pools[t.pool]
    return Shape(
        t.config.with_changes(replicas=1), pool, price_of(pool, catalog), available_gpus(pool, dep), None
    )


def run_duration(requests: int, rate_per_s: float) -> str:
    """How long a benchmark's measured requests take to send at ``rate_per_s``, in words: traffic
    time (the twin simulates it in seconds; a cluster's benchmark takes it)."""
    if rate_per_s <= 0:
        return "unknown duration"
    minutes = requests / rate_per_s / 60
    return f"~{minutes:.0f} min" if minutes < 90 else f"~{minutes / 60:.1f} h"


def describe(c: ServingConfig) -> str:
    return (
        f"{c.replicas}x {c.model} {c.quantization.label} on {c.tensor_parallel}x{c.gpu} "
        f"seqs={c.max_num_seqs} tokens={c.max_num_batched_tokens}"
    )


def proposal_id(dep: InferenceDeployment, config: ServingConfig) -> str:
    digest = hashlib.sha256((dep.ref.key + config.model_dump_json()).encode()).hexdigest()[:10]
    return f"p-{dep.ref.name}-{digest}"
