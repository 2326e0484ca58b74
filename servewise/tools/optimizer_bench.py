"""Measure the optimizer against the twin's truth (``servewise bench optimizer``).

For N generated twin scenarios (each with its own hidden efficiencies), every deployment gets:
the true optimum (cheapest shape of a bounded grid at its fewest replicas that *truly* pass), and
the picks of four methods: ``current`` (as deployed), ``uncalibrated`` (catalog-default model, no
benchmarks), ``random`` (random shapes sized by the model, same benchmark budget, cheapest
measured pass) and ``servewise`` (calibrated loop). The truth, for the optimum and for every
method's pick alike, is the *long-run* p99 the SLO is about: the mean p99 of ``TRUTH_REPEATS``
independent benchmark runs of ``TRUTH_REQUESTS`` requests each (draws no method has seen). The
standard 200-request benchmark is no truth: its p99 varies 5-20 % run to run and reads the tail
low (on the twin, a TPOT p99 whose long-run value is 57 ms averages 52 ms over 200-request runs),
so a judge built from short runs passes configs that break the SLO in production, and turns
configs the simulator cannot tell apart into a lottery.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_scenario import Scenario
from servewise.domain import (
    SLO,
    BenchmarkRequest,
    BenchmarkResult,
    InferenceDeployment,
    NodePool,
    ServingConfig,
    TelemetrySnapshot,
)
from servewise.errors import ServewiseError
from servewise.perf.analytical import predict_load
from servewise.perf.catalog import get_catalog
from servewise.tools.calibrating import Calibration
from servewise.tools.choosing import share_of
from servewise.tools.judging import measured_values, requests_ok, worst_ratio
from servewise.tools.optimizing import describe, optimize
from servewise.tools.search_space import SearchPolicy, shapes
from servewise.tools.sizing import Load, Sized, load_for, size

MODELS = [("llama-3.1-8b", 1), ("qwen2.5-7b", 1), ("llama-3.1-70b", 4), ("qwen2.5-32b", 2)]
METHODS = ("servewise", "uncalibrated", "random", "current")
TRUTH_REPEATS = 3  # independent benchmark runs behind each truth verdict
# Requests per truth run. A p99 over 2000 requests reads the long-run tail low: bench seed 1002 svc-2's
# optimum read a TTFT p99 at 0.81 of the objective as the mean of 3 x 2000, 0.91 over 3 x 10 000 and
# 0.91 over 3 x 30 000 (queueing bursts that a short run rarely meets). 10 000 costs ~35 % more time.
TRUTH_REQUESTS = 10_000
# One screening run of SCREEN_REQUESTS settles a verdict when its worst p99 / objective is far from 1:
# a short run reads the tail low (rarely 10 % high: 3 % noise on a p99 that varies ~10 % at this
# length), so above SCREEN_FAIL the long run fails and below SCREEN_PASS it passes.
SCREEN_REQUESTS = 400
SCREEN_PASS, SCREEN_FAIL = 0.6, 1.3
# An optimum whose long-run p99 is within 5 % of the objective sits at the SLO's edge: inside the
# run-to-run spread of the truth's own runs, and above the 0.95 guard band that a method
# that must not break the SLO keeps (``SearchPolicy.confirm_margin``).
SLO_EDGE = 0.95


class Benchmarker(Protocol):
    def run_benchmark(self, request: BenchmarkRequest) -> BenchmarkResult: ...


def generate_scenario(seed: int, deployments: int = 3) -> Scenario:
    rng = np.random.default_rng(seed)
    pools = [
        {"name": "h100", "gpu": "h100-sxm", "nodes": 4, "gpus_per_node": 8},
        {"name": "a100", "gpu": "a100-80gb", "nodes": 4, "gpus_per_node": 8},
        {"name": "l40s", "gpu": "l40s", "nodes": 4, "gpus_per_node": 4},
        {"name": "l4", "gpu": "l4", "nodes": 4, "gpus_per_node": 4},
    ]
    deps = []
    for i in range(deployments):
        model, tp = MODELS[int(rng.integers(len(MODELS)))]
        pool = ["h100", "a100"][int(rng.integers(2))]
        in_mean = float(rng.choice([500, 1500, 3000]))
        out_mean = float(rng.choice([150, 300, 500]))
        deps.append(
            {
                "name": f"svc-{i}",
                "pool": pool,
                "config": {"model": model, "tensor_parallel": tp, "replicas": int(rng.integers(2, 4))},
                "workload": {
                    "input_len": {
                        "kind": "lognormal",
                        "mean": in_mean,
                        "std": in_mean / 3,
                        "min": 16,
                        "max": int(in_mean * 4),
                    },
                    "output_len": {
                        "kind": "lognormal",
                        "mean": out_mean,
                        "std": out_mean / 3,
                        "min": 4,
                        "max": int(out_mean * 4),
                    },
                    "rate_per_s": round(float(rng.uniform(1.0, 6.0)) * (0.3 if tp >= 2 else 1.0), 2),
                },
                "slo": {
                    "ttft_p99_ms": float(rng.choice([1500, 3000])),
                    "tpot_p99_ms": float(rng.choice([50, 80])),
                },
            }
        )
    return Scenario.model_validate(
        {
            "name": f"bench-{seed}",
            "seed": seed,
            "pools": pools,
            "deployments": deps,
            "start": "2026-01-05T14:00:00Z",
        }
    )


def _share(load: Load, dep: InferenceDeployment, cfg: ServingConfig, requests: int) -> BenchmarkRequest:
    return BenchmarkRequest(ref=dep.ref, config=cfg, workload=share_of(load, dep, cfg), num_requests=requests)


def truth_backends(scenario: Scenario, repeats: int = TRUTH_REPEATS) -> list[SimCluster]:
    """Copies of the twin whose clocks are 1..``repeats`` steps past the methods' twin: the same
    hidden truth and benchmark conditions, but measurement draws no method has seen. Every config
    meets the same draws (common random numbers): configs that truly perform alike (batching knobs
    that do not bind) get one verdict, so the optimum cannot be the luckiest of a dozen equivalent
    configs at the SLO's edge."""
    out = []
    for r in range(repeats):
        twin = SimCluster(scenario, warmup_s=0.0, history_s=0.0, common_random_numbers=True)
        twin.advance((r + 1) * twin.step_s, persist=False)
        out.append(twin)
    return out


class Judge:
    """Whether a config meets the SLO: the mean of each p99 over independent benchmark runs (one
    per backend, ``requests`` each) against the objective, failures included. With the defaults
    this is the long-run p99; ``Judge([twin], dep, load, 200)`` is the single standard run the
    methods themselves see. Memoized: the same config at the same load measures the same."""

    def __init__(
        self,
        backends: Sequence[Benchmarker],
        dep: InferenceDeployment,
        load: Load,
        requests: int = TRUTH_REQUESTS,
    ) -> None:
        self.backends, self.dep, self.load, self.requests = backends, dep, load, requests
        self.cache: dict[ServingConfig, float] = {}

    def passes(self, cfg: ServingConfig, network_ms: float = 0.0) -> bool:
        return self.worst(cfg, network_ms) <= 1.0

    def worst(self, cfg: ServingConfig, network_ms: float = 0.0) -> float:
        """The worst p99 / objective (inf: did not start or failed requests); a clear verdict of
        the screening run is returned as the screening run's ratio."""
        if cfg not in self.cache:
            self.cache[cfg] = self._measure(cfg, network_ms)
        return self.cache[cfg]

    def _measure(self, cfg: ServingConfig, network_ms: float) -> float:
        if len(self.backends) > 1:  # a short screening run settles the clear cases (most of the grid)
            screen = self._worst([self.backends[0]], cfg, network_ms, SCREEN_REQUESTS)
            if not SCREEN_PASS < screen < SCREEN_FAIL:
                return screen
        return self._worst(self.backends, cfg, network_ms, self.requests)

    def _worst(
        self, backends: Sequence[Benchmarker], cfg: ServingConfig, network_ms: float, requests: int
    ) -> float:
        """The worst ratio of mean measured p99 to objective over ``backends`` (inf: failed)."""
        runs: list[BenchmarkResult] = []
        for backend in backends:
            try:
                runs.append(backend.run_benchmark(_share(self.load, self.dep, cfg, requests)))
            except ServewiseError:  # did not start (OOM, unschedulable)
                return math.inf
        # the runs' mean p99s, judged as one run (a run that failed requests fails the mean)
        mean = runs[0].model_copy(
            update={
                "completed": sum(r.completed for r in runs),
                "failed": sum(r.failed for r in runs),
                **{
                    k: statistics.fmean(getattr(r, k) for r in runs)
                    for k in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms")
                },
            }
        )
        if not requests_ok(mean):
            return math.inf
        return worst_ratio(self.dep.slo, measured_values(mean, network_ms))


def true_optimum(
    sim: SimCluster,
    dep: InferenceDeployment,
    pools: list[NodePool],
    load: Load,
    judge: Judge,
    policy: SearchPolicy,
    *,
    full_grid: bool = False,
) -> tuple[float, ServingConfig] | None:
    """Cheapest cost over the grid, each shape at its fewest replicas the judge passes. The grid
    holds every variant, KV format, GPU class and TP the optimizer may pick, with the batching
    knobs limited to 128/256 sequences x 8192 tokens unless ``full_grid`` (all of the policy's:
    over 10 minutes per 5 scenarios on 2 cores), so a method may land below this optimum."""
    catalog = get_catalog()
    grid = policy
    if not full_grid:
        grid = policy.model_copy(update={"max_num_seqs": [128, 256], "max_num_batched_tokens": [8192]})
    pairs = [(s, t) for s in grid.max_num_seqs for t in grid.max_num_batched_tokens]
    seq_len = int(load.input_len + load.output_len_p99)
    bounds = []
    for shape in shapes(dep, pools, grid, catalog, seq_len, batching=pairs):
        eff = sim.truth.efficiency(shape.config.engine.value, shape.config.gpu)
        try:
            cap = predict_load(
                shape.config,
                input_len=round(load.input_len),
                output_len=round(load.output_len),
                arrival_rate_per_s=0.01,
                efficiency=eff,
            ).capacity_rate_per_s
        except ServewiseError:
            continue
        n_lo = max(1, math.ceil(load.rate_per_s / (1.3 * cap)))
        bounds.append((n_lo * shape.config.gpus_per_replica * shape.price_per_gpu_hour, n_lo, shape))
    best: tuple[float, ServingConfig] | None = None
    for lower, n_lo, shape in sorted(bounds, key=lambda b: b[0]):
        if best is not None and lower >= best[0]:
            break
        max_n = min(policy.max_replicas, shape.available_gpus // shape.config.gpus_per_replica)
        for n in range(n_lo, max_n + 1):
            cost = n * shape.config.gpus_per_replica * shape.price_per_gpu_hour
            if best is not None and cost >= best[0]:
                break
            cfg = shape.config.with_changes(replicas=n)
            if judge.passes(cfg, shape.pool.network_latency_ms):
                best = (cost, cfg)
                break
    return best


def _random_pick(
    dep: InferenceDeployment,
    pools: list[NodePool],
    load: Load,
    probe: Judge,
    policy: SearchPolicy,
    rng: np.random.Generator,
) -> tuple[Sized | None, int]:
    """Random shapes sized by the uncalibrated model, each benchmarked once (``probe``: the same
    single run servewise's benchmarks are); the cheapest measured pass."""
    catalog = get_catalog()
    pairs = [(s, t) for s in policy.max_num_seqs for t in policy.max_num_batched_tokens]
    all_shapes = list(
        shapes(dep, pools, policy, catalog, int(load.input_len + load.output_len_p99), batching=pairs)
    )
    best: Sized | None = None
    used = 0
    for i in rng.permutation(len(all_shapes)):
        if used >= policy.benchmark_budget:
            break
        sized = size(all_shapes[i], load, dep.slo or SLO(), Calibration(), policy)
        if sized is None:
            continue
        used += 1
        if probe.passes(sized.config, sized.shape.pool.network_latency_ms) and (
            best is None or sized.cost_per_hour < best.cost_per_hour
        ):
            best = sized
    return best, used


def _describe_pick(pick: Sized | None) -> str:
    return describe(pick.config) + f" in {pick.shape.pool.name}" if pick else "current config"


def _snapshot(sim: SimCluster) -> TelemetrySnapshot | None:
    """The twin's telemetry (servewise calibrates on it first), when the twin's source is available."""
    try:
        from servewise.telemetry.sim import SimTelemetrySource
    except ImportError:
        return None
    return SimTelemetrySource(sim).snapshot(window="5m")


def _summary(rows: list[dict[str, float]]) -> dict[str, float | int]:
    ratios = [r["ratio"] for r in rows]
    return {
        "cost_ratio_to_optimum": round(statistics.fmean(ratios), 4),
        "cost_ratio_median": round(statistics.median(ratios), 4),
        "cost_ratio_max": round(max(ratios), 4),
        "at_or_below_optimum": round(sum(r <= 1.0 + 1e-9 for r in ratios) / len(ratios), 3),
        "above_optimum": int(sum(r > 1.0 + 1e-9 for r in ratios)),
        "cost_ratio_to_single_run_optimum": round(statistics.fmean(r["ratio_single"] for r in rows), 4),
        "slo_violations": int(sum(r["violation"] for r in rows)),
        "benchmarks_per_deployment": round(statistics.fmean(r["bench"] for r in rows), 2),
        "benchmarks_max": int(max(r["bench"] for r in rows)),
        "above_optimum_at_slo_edge": int(sum(r["ratio"] > 1 + 1e-9 and r["edge"] for r in rows)),
        "deployments": len(rows),
    }


def run(
    scenarios: int,
    seed: int,
    *,
    progress: Callable[[str], None] | None = None,
    truth_repeats: int = TRUTH_REPEATS,
    truth_requests: int = TRUTH_REQUESTS,
    policy: SearchPolicy | None = None,
) -> dict[str, Any]:
    """The bench (see the module docstring); ``truth_*`` trade the truth's precision for time;
    ``policy`` is every method's (the default: ``SearchPolicy()``)."""
    policy = policy or SearchPolicy()
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    skipped = 0
    details: list[dict[str, Any]] = []
    for k in range(scenarios):
        scen = generate_scenario(seed + k)
        sim = SimCluster(scen, warmup_s=60.0, history_s=300.0)
        truth = truth_backends(scen, truth_repeats)
        pools = sim.list_node_pools()
        by_name = {p.name: p for p in pools}
        snapshot = _snapshot(sim)
        for dep in sim.list_deployments():
            load = load_for(dep, None, policy)
            judge = Judge(truth, dep, load, truth_requests)  # the truth: the long-run p99 of fresh runs
            probe = Judge([sim], dep, load, policy.benchmark_requests)  # one standard run, as the methods see
            optimum = true_optimum(sim, dep, pools, load, judge, policy)
            single = true_optimum(sim, dep, pools, load, probe, policy)
            if progress:
                progress(f"scenario {k + 1}/{scenarios} {dep.ref.name}: optimum ${optimum and optimum[0]}")
            if optimum is None:
                skipped += 1
                continue
            price = (
                by_name[dep.pool or ""].price_per_gpu_hour
                or get_catalog().gpu(dep.config.gpu).price_per_gpu_hour
            )
            cur_cost = dep.config.total_gpus * price
            picks: dict[str, tuple[Sized | None, int]] = {"current": (None, 0)}
            trials: list[dict[str, Any]] = []
            tel = snapshot.for_workload(dep.ref) if snapshot else None
            for name, calibrate in (("servewise", True), ("uncalibrated", False)):
                # Every method sizes for the load the truth judges (the scenario's declared peak);
                # a 5-minute observed rate is up to 28 % off it, which would make the methods and
                # the optimum answer different questions. Telemetry still calibrates servewise.
                out = optimize(
                    dep,
                    pools,
                    benchmark=sim.run_benchmark if calibrate else None,
                    policy=policy,
                    calibrate=calibrate,
                    telemetry=tel if calibrate else None,
                    peak_rate_per_s=load.rate_per_s / (1 + policy.headroom),
                )
                picks[name] = (out.pick, len(out.trials))
                if calibrate:
                    trials = [
                        {
                            "config": describe(t.config),
                            "pool": t.pool,
                            "requests": t.requests,
                            "confirming": t.confirming,
                            "passed": t.passed,
                            "cost_per_hour": round(t.cost_per_hour, 4),
                            "measured": {k: round(v, 1) for k, v in t.measured.items()},
                        }
                        for t in out.trials
                    ]
            picks["random"] = _random_pick(dep, pools, load, probe, policy, np.random.default_rng(seed + k))
            results: dict[str, tuple[float, int, bool]] = {}
            for name, (pick, used) in picks.items():  # every pick judged the same way; none = current
                if pick is None:
                    results[name] = (cur_cost, used, not judge.passes(dep.config))
                else:
                    ok = judge.passes(pick.config, pick.shape.pool.network_latency_ms)
                    results[name] = (pick.cost_per_hour, used, not ok)
            single_cost = single[0] if single else optimum[0]
            for name, (c, n, violated) in results.items():
                rows[name].append(
                    {
                        "ratio": c / optimum[0],
                        "ratio_single": c / single_cost,
                        "bench": n,
                        "violation": float(violated),
                        "edge": float(judge.worst(optimum[1]) > SLO_EDGE),
                    }
                )
            details.append(
                {
                    "scenario": scen.name,
                    "deployment": dep.ref.name,
                    "model": dep.config.model,
                    "optimum_cost_per_hour": round(optimum[0], 4),
                    "optimum": describe(optimum[1]),
                    "optimum_worst_ratio": round(judge.worst(optimum[1]), 3),
                    "slo": (dep.slo or SLO()).model_dump(exclude_none=True),
                    "single_run_optimum_cost_per_hour": round(single_cost, 4),
                    **{
                        name: {
                            "cost_per_hour": round(c, 4),
                            "benchmarks": n,
                            "slo_violation": v,
                            "pick": _describe_pick(picks[name][0]),
                        }
                        for name, (c, n, v) in results.items()
                    },
                    "servewise_trials": trials,
                }
            )
    return {
        "scenarios": scenarios,
        "seed": seed,
        "truth": f"mean p99 of {truth_repeats} independent benchmark runs of {truth_requests} requests",
        "max_benchmark_minutes": policy.max_benchmark_minutes,
        "deployments_without_optimum": skipped,
        "methods": {name: _summary(rs) for name, rs in rows.items() if rs},
        "deployments": details,
    }
