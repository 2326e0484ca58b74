"""Fleet placement: assign deployments to shared GPU pools with ``scipy.optimize.milp``.

Each deployment brings its cheapest predicted-feasible candidate per pool (edge pools add their
network latency to TTFT inside the sizing); binary x[d, o] picks one option per deployment, pool
GPU capacity (free GPUs plus what fleet deployments hold there now) bounds the sum, and the
objective is total $/hour.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import Bounds, LinearConstraint, milp

from servewise.cluster.backend import ClusterBackend
from servewise.domain import InferenceDeployment, NodePool, ServingConfig, TelemetrySnapshot
from servewise.errors import ServewiseError
from servewise.perf.catalog import get_catalog
from servewise.tools.calibrating import Calibration
from servewise.tools.choosing import search
from servewise.tools.context import current_context
from servewise.tools.observing import with_observed_workload
from servewise.tools.optimizing import telemetry_observation
from servewise.tools.registry import registry
from servewise.tools.search_space import SearchPolicy
from servewise.tools.sizing import load_for


class Placement(BaseModel):
    deployment: str
    namespace: str
    pool: str
    config: ServingConfig
    cost_per_hour: float


class FleetPlan(BaseModel):
    status: str = Field(description="'optimal', 'infeasible' or the solver's message")
    total_cost_per_hour: float | None
    current_cost_per_hour: float
    placements: list[Placement] = Field(default_factory=list)
    unplaced: list[str] = Field(default_factory=list, description="deployments with no feasible option")


def optimize_fleet(
    deployments: list[InferenceDeployment],
    pools: list[NodePool],
    *,
    snapshot: TelemetrySnapshot | None = None,
    policy: SearchPolicy | None = None,
) -> FleetPlan:
    """Plain-Python API: cheapest joint placement (no benchmarks; per-deployment loops validate later)."""
    from servewise.tools.calibrating import fit_calibration

    policy = policy or SearchPolicy()
    catalog = get_catalog()
    capacity = {p.name: p.free_gpus for p in pools}
    current = 0.0
    for d in deployments:
        if d.pool in capacity:
            capacity[d.pool] += d.config.total_gpus
        pool = next((p for p in pools if p.name == d.pool), None)
        price = (
            pool.price_per_gpu_hour
            if pool and pool.price_per_gpu_hour is not None
            else catalog.gpu(d.config.gpu).price_per_gpu_hour
        )
        current += d.config.total_gpus * price
    # Each deployment may use a whole pool's capacity while searching; the MILP shares it.
    shared = [p.model_copy(update={"free_gpus": capacity[p.name]}) for p in pools]
    options: list[tuple[int, str, ServingConfig, float, int]] = []
    unplaced = []
    for i, d in enumerate(deployments):
        tel = snapshot.for_workload(d.ref) if snapshot else None
        d, _ = with_observed_workload(d, tel, catalog)
        home_pool = next((p for p in pools if p.name == d.pool), None)
        obs = telemetry_observation(d, tel, home_pool.network_latency_ms if home_pool else 0.0)
        cal = fit_calibration([obs]) if obs else Calibration()
        try:
            load = load_for(d, tel.get("request_rate_per_s") if tel else None, policy)
            home = d.model_copy(update={"pool": None})  # capacity already pooled above
            cands = search(home, shared, load, cal, policy, catalog) if d.slo else []
        except ServewiseError:
            cands = []
        best: dict[str, tuple[ServingConfig, float]] = {}
        for c in cands:
            if c.shape.pool.name not in best:
                best[c.shape.pool.name] = (c.config, c.cost_per_hour)
        if not best:
            unplaced.append(d.ref.key)
        for pool_name, (cfg, cost) in best.items():
            options.append((i, pool_name, cfg, cost, cfg.total_gpus))
    placed = sorted({o[0] for o in options})
    if not options:
        return FleetPlan(
            status="infeasible", total_cost_per_hour=None, current_cost_per_hour=current, unplaced=unplaced
        )
    n = len(options)
    objective = np.array([o[3] for o in options])
    rows, lo, hi = [], [], []
    for i in placed:  # exactly one option per placeable deployment
        rows.append([1.0 if o[0] == i else 0.0 for o in options])
        lo.append(1.0)
        hi.append(1.0)
    for p in pools:
        rows.append([float(o[4]) if o[1] == p.name else 0.0 for o in options])
        lo.append(0.0)
        hi.append(float(capacity[p.name]))
    res = milp(
        objective,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
    )
    if not res.success or res.x is None:
        return FleetPlan(
            status=f"infeasible: {res.message}",
            total_cost_per_hour=None,
            current_cost_per_hour=current,
            unplaced=unplaced,
        )
    chosen = [options[k] for k in range(n) if res.x[k] > 0.5]
    placements = [
        Placement(
            deployment=deployments[i].ref.name,
            namespace=deployments[i].ref.namespace,
            pool=pool,
            config=cfg,
            cost_per_hour=round(c, 4),
        )
        for i, pool, cfg, c, _ in chosen
    ]
    return FleetPlan(
        status="optimal",
        total_cost_per_hour=round(float(res.fun), 4),
        current_cost_per_hour=current,
        placements=placements,
        unplaced=unplaced,
    )


class OptimizeFleetInput(BaseModel):
    policy: SearchPolicy = Field(default_factory=SearchPolicy)
    window: str = "15m"


@registry.tool(name="optimize_fleet")
def optimize_fleet_tool(args: OptimizeFleetInput) -> FleetPlan:
    """Assign every deployment to a GPU pool and size it, minimizing total $/h under pool capacity."""
    ctx = current_context()
    cluster: ClusterBackend = ctx.cluster
    return optimize_fleet(
        cluster.list_deployments(),
        cluster.list_node_pools(),
        snapshot=ctx.telemetry.snapshot(window=args.window),
        policy=args.policy,
    )
