"""Fleet placement: assign deployments to shared GPU pools with ``scipy.optimize.milp``.

A deployment takes part when it can be sized: it declares an SLO and has a workload (declared or
observed). Each such deployment brings its cheapest predicted-feasible option per pool (ties: the
fewest GPUs, so a free pool is not filled by one deployment's largest TP; edge pools add their
network latency to TTFT inside the sizing, and are offered only to their own site's users:
``domain.fleet.serves_site``) and one *keep* option: it stays as it runs, holding its current GPUs
in its current pool, at its current cost plus a penalty above any plan's total. Binary x[d, o] picks
one option per deployment; a pool's GPUs (free ones plus what the deployments taking part hold
there now) bound the sum. The objective is total $/hour: as few deployments kept as possible, then
the cheapest, and among equal costs the deployment's current pool.

Deployments that cannot be sized are left as they run and their GPUs stay theirs; they and the kept
ones are listed in ``unplaced`` with a reason, and both costs of the plan cover the whole fleet.

Capacity is counted per pool, not per node: the free GPUs of a pool are summed over its nodes (and
the GPUs a moved deployment frees are not located on a node), so a replica of TP=4 may be placed
in a pool whose free GPUs are spread 2 + 2 over two nodes. A replica needs no more than one node's
GPUs (TP <= ``gpus_per_node``), but whether the scheduler finds a node with that many free is left
to the rollout, which reports such a pod as unschedulable (``RolloutStatus.unschedulable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import Bounds, LinearConstraint, milp

from servewise.cluster.backend import ClusterBackend
from servewise.domain import InferenceDeployment, NodePool, ServingConfig, TelemetrySnapshot
from servewise.errors import ServewiseError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.tools.calibrating import Calibration, fit_calibration
from servewise.tools.choosing import search
from servewise.tools.context import current_context
from servewise.tools.observing import with_observed_workload
from servewise.tools.optimizing import telemetry_observation
from servewise.tools.registry import registry
from servewise.tools.search_space import SearchPolicy, current_cost_per_hour
from servewise.tools.sizing import Load, load_for

# $/h added to an option outside the deployment's current pool: among equal costs it stays put
# (a move is a rollout). Far below any price difference, above the solver's tolerance.
MOVE_TIEBREAK = 1e-4
NO_CAPACITY = "insufficient pool capacity"
NO_OPTION = "no configuration predicted to meet its SLO fits in the GPUs the pools can give it"


class Placement(BaseModel):
    deployment: str
    namespace: str
    pool: str
    config: ServingConfig
    cost_per_hour: float


class Unplaced(BaseModel):
    """A deployment the plan leaves as it runs: it keeps its current GPUs and config."""

    deployment: str
    namespace: str
    reason: str


class FleetPlan(BaseModel):
    status: str = Field(
        description="'optimal' (every deployment placed), 'partial' (some are left as they run:"
        " ``unplaced``) or the solver's message"
    )
    total_cost_per_hour: float | None = Field(
        description="$/h of the whole fleet after the plan: the placements' costs plus the current"
        " cost of every unplaced deployment (None when the solver failed)"
    )
    current_cost_per_hour: float = Field(
        description="$/h of the whole fleet as it runs (the same deployments as total_cost_per_hour)"
    )
    placements: list[Placement] = Field(default_factory=list)
    unplaced: list[Unplaced] = Field(
        default_factory=list, description="deployments left as they run (keeping their GPUs), with why"
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what the plan's $/h does not show, e.g. deployments cut to a single replica",
    )


@dataclass(frozen=True)
class _Option:
    deployment: int  # index into the fleet
    pool: str | None  # where its GPUs are counted (None: outside the pools the plan knows)
    config: ServingConfig
    cost_per_hour: float
    kept: bool = False  # left as it runs: not a placement


def optimize_fleet(
    deployments: list[InferenceDeployment],
    pools: list[NodePool],
    *,
    snapshot: TelemetrySnapshot | None = None,
    policy: SearchPolicy | None = None,
) -> FleetPlan:
    """Plain-Python API: cheapest joint placement (no benchmarks; per-deployment loops validate later)."""
    policy = policy or SearchPolicy()
    catalog = get_catalog()
    by_name = {p.name: p for p in pools}
    costs = [current_cost_per_hour(d, by_name.get(d.pool or ""), catalog) for d in deployments]
    taking_part, unplaced = _sizing_inputs(deployments, by_name, snapshot, policy, catalog)
    capacity = {p.name: p.free_gpus for p in pools}
    for d, _, _ in taking_part.values():
        if d.pool in capacity:
            capacity[d.pool] += d.config.total_gpus
    options: list[_Option] = []
    for i, (d, load, cal) in taking_part.items():
        options.append(_Option(i, d.pool if d.pool in by_name else None, d.config, costs[i], kept=True))
        try:
            options.extend(_pool_options(i, d, pools, capacity, load, cal, policy, catalog))
        except ServewiseError as exc:
            unplaced[i] = str(exc)  # kept, and said why (the MILP picks its keep option)
    left_as_they_run = sum(c for i, c in enumerate(costs) if i not in taking_part)
    chosen = _solve(options, deployments, capacity) if options else []
    if isinstance(chosen, str):
        return FleetPlan(status=chosen, total_cost_per_hour=None, current_cost_per_hour=round(sum(costs), 4))
    for o in chosen:
        if o.kept and o.deployment not in unplaced:
            has_options = any(p.deployment == o.deployment and not p.kept for p in options)
            unplaced[o.deployment] = NO_CAPACITY if has_options else NO_OPTION
    placements = [
        Placement(
            deployment=deployments[o.deployment].ref.name,
            namespace=deployments[o.deployment].ref.namespace,
            pool=o.pool,
            config=o.config,
            cost_per_hour=round(o.cost_per_hour, 4),
        )
        for o in chosen
        if not o.kept and o.pool is not None
    ]
    single = [
        f"{deployments[o.deployment].ref.key} ({deployments[o.deployment].config.replicas} -> 1)"
        for o in chosen
        if not o.kept and o.config.replicas == 1 < deployments[o.deployment].config.replicas
    ]
    notes = (
        [
            f"{len(single)} deployment(s) placed at one replica where they ran more, so with no redundancy"
            f" left (a pod restart or a node loss is an outage): {', '.join(single)}; the SLO sized"
            " for says nothing about availability, so keep 2 replicas where the service needs them"
        ]
        if single
        else []
    )
    return FleetPlan(
        notes=notes,
        status="partial" if unplaced else "optimal",
        total_cost_per_hour=round(left_as_they_run + sum(o.cost_per_hour for o in chosen), 4),
        current_cost_per_hour=round(sum(costs), 4),
        placements=placements,
        unplaced=[
            Unplaced(deployment=deployments[i].ref.name, namespace=deployments[i].ref.namespace, reason=r)
            for i, r in sorted(unplaced.items())
        ],
    )


def _sizing_inputs(
    deployments: list[InferenceDeployment],
    pools: dict[str, NodePool],
    snapshot: TelemetrySnapshot | None,
    policy: SearchPolicy,
    catalog: Catalog,
) -> tuple[dict[int, tuple[InferenceDeployment, Load, Calibration]], dict[int, str]]:
    """Per deployment that can take part (by index): itself with its observed workload, its load and
    calibration; and why each other one cannot (it is left as it runs)."""
    taking_part: dict[int, tuple[InferenceDeployment, Load, Calibration]] = {}
    left: dict[int, str] = {}
    for i, d in enumerate(deployments):
        tel = snapshot.for_workload(d.ref) if snapshot else None
        d, _ = with_observed_workload(d, tel, catalog)
        if d.slo is None:
            left[i] = "declares no SLO"
            continue
        try:
            load = load_for(d, tel.get("request_rate_per_s") if tel else None, policy)
        except ServewiseError as exc:
            left[i] = str(exc)
            continue
        home = pools.get(d.pool or "")
        obs = telemetry_observation(d, tel, home.network_latency_ms if home else 0.0)
        taking_part[i] = (d, load, fit_calibration([obs]) if obs else Calibration())
    return taking_part, left


def _solve(
    options: list[_Option], deployments: list[InferenceDeployment], capacity: dict[str, int]
) -> list[_Option] | str:
    """The options the MILP picks, one per deployment taking part; the solver's message if it fails."""
    # Keeping a deployment costs more than any plan's total: the MILP keeps as few as it can.
    penalty = 1.0 + sum(o.cost_per_hour for o in options)
    objective = np.array(
        [
            o.cost_per_hour
            + (penalty if o.kept else 0.0)
            + (MOVE_TIEBREAK if not o.kept and o.pool != deployments[o.deployment].pool else 0.0)
            for o in options
        ]
    )
    rows, lo, hi = [], [], []
    for i in sorted({o.deployment for o in options}):  # exactly one option per deployment taking part
        rows.append([1.0 if o.deployment == i else 0.0 for o in options])
        lo.append(1.0)
        hi.append(1.0)
    for pool, gpus in capacity.items():
        rows.append([float(o.config.total_gpus) if o.pool == pool else 0.0 for o in options])
        lo.append(0.0)
        hi.append(float(gpus))
    res = milp(
        objective,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.ones(len(options)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if not res.success or res.x is None:
        return f"infeasible: {res.message}"
    return [o for k, o in enumerate(options) if res.x[k] > 0.5]


def _pool_options(
    i: int,
    d: InferenceDeployment,
    pools: list[NodePool],
    capacity: dict[str, int],
    load: Load,
    cal: Calibration,
    policy: SearchPolicy,
    catalog: Catalog,
) -> list[_Option]:
    """The cheapest predicted-feasible option of ``d`` per pool (ties: fewest GPUs), each sized
    within the pool's whole capacity (the MILP shares it out)."""
    # available_gpus adds the deployment's own GPUs back in its pool: they are in capacity already
    shared = [
        p.model_copy(
            update={"free_gpus": capacity[p.name] - (d.config.total_gpus if p.name == d.pool else 0)}
        )
        for p in pools
    ]
    best: dict[str, _Option] = {}
    for c in search(d, shared, load, cal, policy, catalog):
        o = _Option(i, c.shape.pool.name, c.config, c.cost_per_hour)
        so_far = best.get(c.shape.pool.name)
        if so_far is None or _cheapest_first(o) < _cheapest_first(so_far):
            best[c.shape.pool.name] = o
    return list(best.values())


def _cheapest_first(o: _Option) -> tuple[float, int]:
    """Cost, then GPUs: at a price of 0 every option costs the same, and the smallest leaves room."""
    return (round(o.cost_per_hour, 6), o.config.total_gpus)


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
