"""Measure the optimizer against the twin's truth (``servewise bench optimizer``).

For N generated twin scenarios (each with its own hidden efficiencies), every deployment gets:
the true optimum (cheapest shape of a bounded grid whose fewest passing replicas are found by
benchmarking on the twin), and the picks of four methods, each judged by a benchmark on the twin:
``current`` (as deployed), ``uncalibrated`` (catalog-default model, no benchmarks), ``random``
(random shapes sized by the model, same benchmark budget) and ``servewise`` (calibrated loop).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_scenario import Scenario
from servewise.domain import (
    SLO,
    BenchmarkRequest,
    InferenceDeployment,
    NodePool,
    ServingConfig,
    TelemetrySnapshot,
)
from servewise.errors import ServewiseError
from servewise.perf.analytical import predict_load
from servewise.perf.catalog import get_catalog
from servewise.tools.calibrating import Calibration
from servewise.tools.optimizing import benchmark_passes, optimize
from servewise.tools.search_space import SearchPolicy, shapes
from servewise.tools.sizing import Load, load_for, size

MODELS = [("llama-3.1-8b", 1), ("qwen2.5-7b", 1), ("llama-3.1-70b", 4), ("qwen2.5-32b", 2)]
METHODS = ("servewise", "uncalibrated", "random", "current")


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


def _share(load: Load, dep: InferenceDeployment, cfg: ServingConfig) -> BenchmarkRequest:
    wl = load.workload(dep.workload).model_copy(update={"arrival_rate_per_s": load.rate_per_s / cfg.replicas})
    return BenchmarkRequest(ref=dep.ref, config=cfg, workload=wl)


class Judge:
    """Benchmarks on the twin, memoized (the same config at the same load measures the same)."""

    def __init__(
        self, sim: SimCluster, dep: InferenceDeployment, load: Load, pools: dict[str, NodePool]
    ) -> None:
        self.sim, self.dep, self.load, self.pools = sim, dep, load, pools
        self.cache: dict[ServingConfig, bool] = {}

    def passes(self, cfg: ServingConfig, network_ms: float = 0.0) -> bool:
        if cfg not in self.cache:
            try:
                res = self.sim.run_benchmark(_share(self.load, self.dep, cfg))
                self.cache[cfg] = benchmark_passes(res, self.dep.slo or SLO(), network_ms)
            except ServewiseError:
                self.cache[cfg] = False
        return self.cache[cfg]


def true_optimum(
    sim: SimCluster,
    dep: InferenceDeployment,
    pools: list[NodePool],
    load: Load,
    judge: Judge,
    policy: SearchPolicy,
) -> float | None:
    """Cheapest cost over the grid, each shape at its fewest replicas passing on the twin."""
    catalog = get_catalog()
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
    best = math.inf
    for lower, n_lo, shape in sorted(bounds, key=lambda b: b[0]):
        if lower >= best:
            break
        max_n = min(policy.max_replicas, shape.available_gpus // shape.config.gpus_per_replica)
        n = n_lo
        while n <= max_n and n * shape.config.gpus_per_replica * shape.price_per_gpu_hour < best:
            if judge.passes(shape.config.with_changes(replicas=n), shape.pool.network_latency_ms):
                best = n * shape.config.gpus_per_replica * shape.price_per_gpu_hour
                break
            n += 1
    return best if math.isfinite(best) else None


def _random_pick(
    dep: InferenceDeployment,
    pools: list[NodePool],
    load: Load,
    judge: Judge,
    policy: SearchPolicy,
    rng: np.random.Generator,
) -> tuple[float | None, int]:
    catalog = get_catalog()
    pairs = [(s, t) for s in policy.max_num_seqs for t in policy.max_num_batched_tokens]
    all_shapes = list(
        shapes(dep, pools, policy, catalog, int(load.input_len + load.output_len_p99), batching=pairs)
    )
    best, used = None, 0
    for i in rng.permutation(len(all_shapes)):
        if used >= policy.benchmark_budget:
            break
        sized = size(all_shapes[i], load, dep.slo or SLO(), Calibration(), policy)
        if sized is None:
            continue
        used += 1
        if judge.passes(sized.config, sized.shape.pool.network_latency_ms):
            best = sized.cost_per_hour if best is None else min(best, sized.cost_per_hour)
    return best, used


def _snapshot(sim: SimCluster) -> TelemetrySnapshot | None:
    """The twin's telemetry (servewise calibrates on it first), when the twin's source is available."""
    try:
        from servewise.telemetry.sim import SimTelemetrySource
    except ImportError:
        return None
    return SimTelemetrySource(sim).snapshot(window="5m")


def run(scenarios: int, seed: int, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    policy = SearchPolicy()
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    skipped = 0
    details: list[dict[str, Any]] = []
    for k in range(scenarios):
        scen = generate_scenario(seed + k)
        sim = SimCluster(scen, warmup_s=60.0, history_s=300.0)
        pools = sim.list_node_pools()
        by_name = {p.name: p for p in pools}
        snapshot = _snapshot(sim)
        for dep in sim.list_deployments():
            load = load_for(dep, None, policy)
            judge = Judge(sim, dep, load, by_name)
            optimum = true_optimum(sim, dep, pools, load, judge, policy)
            if progress:
                progress(f"scenario {k + 1}/{scenarios} {dep.ref.name}: optimum ${optimum}")
            if optimum is None:
                skipped += 1
                continue
            price = (
                by_name[dep.pool or ""].price_per_gpu_hour
                or get_catalog().gpu(dep.config.gpu).price_per_gpu_hour
            )
            results: dict[str, tuple[float | None, int, bool]] = {}
            cur_cost = dep.config.total_gpus * price
            results["current"] = (cur_cost, 0, not judge.passes(dep.config))
            tel = snapshot.for_deployment(dep.ref.name, dep.ref.namespace) if snapshot else None
            for name, calibrate in (("servewise", True), ("uncalibrated", False)):
                out = optimize(
                    dep,
                    pools,
                    benchmark=sim.run_benchmark if calibrate else None,
                    policy=policy,
                    calibrate=calibrate,
                    telemetry=tel if calibrate else None,
                )
                if out.pick is None:
                    results[name] = (cur_cost, len(out.trials), not judge.passes(dep.config))
                else:
                    ok = judge.passes(out.pick.config, out.pick.shape.pool.network_latency_ms)
                    results[name] = (out.pick.cost_per_hour, len(out.trials), not ok)
            cost, used = _random_pick(dep, pools, load, judge, policy, np.random.default_rng(seed + k))
            results["random"] = (
                cost if cost is not None else cur_cost,
                used,
                False if cost is not None else not judge.passes(dep.config),
            )
            for name, (c, n, violated) in results.items():
                rows[name].append(
                    {"ratio": (c or cur_cost) / optimum, "bench": n, "violation": float(violated)}
                )
            details.append(
                {
                    "scenario": scen.name,
                    "deployment": dep.ref.name,
                    "model": dep.config.model,
                    "optimum_cost_per_hour": round(optimum, 4),
                    **{
                        name: {"cost_per_hour": round(c or cur_cost, 4), "benchmarks": n, "slo_violation": v}
                        for name, (c, n, v) in results.items()
                    },
                }
            )
    methods = {}
    for name, rs in rows.items():
        if not rs:
            continue
        methods[name] = {
            "cost_ratio_to_optimum": round(statistics.fmean(r["ratio"] for r in rs), 4),
            "cost_ratio_median": round(statistics.median(r["ratio"] for r in rs), 4),
            "cost_ratio_max": round(max(r["ratio"] for r in rs), 4),
            "at_or_below_optimum": round(sum(r["ratio"] <= 1.0 + 1e-9 for r in rs) / len(rs), 3),
            "slo_violations": int(sum(r["violation"] for r in rs)),
            "benchmarks_per_deployment": round(statistics.fmean(r["bench"] for r in rs), 2),
            "benchmarks_max": int(max(r["bench"] for r in rs)),
            "deployments": len(rs),
        }
    return {
        "scenarios": scenarios,
        "seed": seed,
        "deployments_without_optimum": skipped,
        "methods": methods,
        "deployments": details,
    }
