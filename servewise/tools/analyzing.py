"""Bottleneck analysis of a fleet: telemetry + config + rollout status -> findings.

``analyze_fleet(cluster, snapshot)`` is the plain-Python API; ``analyze_fleet_tool`` and
``analyze_deployment`` are the registered agent tools (they read the cluster and telemetry from
the tool context).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pydantic import BaseModel, Field

from servewise.cluster.backend import ClusterBackend
from servewise.domain import DeploymentTelemetry, Finding, InferenceDeployment, NodePool, TelemetrySnapshot
from servewise.errors import NotFoundError, ServewiseError
from servewise.perf.analytical import predict
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.memory import plan_memory
from servewise.tools.analyzers import AnalysisInput, GpuAlternative, ModelPick, coverage_notes, run_analyzers
from servewise.tools.analyzers.base import mean_input_len
from servewise.tools.calibrating import Calibration
from servewise.tools.context import current_context
from servewise.tools.observing import with_observed_workload
from servewise.tools.optimizing import optimize
from servewise.tools.registry import registry
from servewise.tools.search_space import SearchPolicy, current_cost_per_hour, shapes
from servewise.tools.sizing import load_for, size

log = logging.getLogger(__name__)
# Analysis only needs to know whether a much cheaper config exists: a narrower batching sweep.
ANALYSIS_POLICY = SearchPolicy(
    refine_top=2, max_num_seqs=[128, 256, 512], max_num_batched_tokens=[8192, 16384]
)


class FleetAnalysis(BaseModel):
    source: str
    window: str
    findings: list[Finding] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    deployments: int = 0


def _alternatives(
    dep: InferenceDeployment, pools: list[NodePool], observed: float | None, catalog: Catalog
) -> tuple[GpuAlternative, ...]:
    """Cheapest predicted way to serve the observed load per GPU class, same model variant."""
    if dep.workload is None or dep.slo is None:
        return ()
    policy = SearchPolicy(weights=[], kv_cache=[dep.config.quantization.kv_cache], headroom=0.0)
    load = load_for(dep, observed, policy)
    best: dict[str, GpuAlternative] = {}
    same_variant = dep.config.quantization
    seq_len = int(load.input_len + load.output_len_p99)
    for shape in shapes(dep, pools, policy.model_copy(update={"weights": ["bf16"]}), catalog, seq_len):
        shape = shape.__class__(
            shape.config.with_changes(quantization=same_variant),
            shape.pool,
            shape.price_per_gpu_hour,
            shape.available_gpus,
            shape.quality,
        )
        try:
            sized = size(shape, load, dep.slo, Calibration(), policy)
        except ServewiseError:
            continue
        if sized is None:
            continue
        alt = GpuAlternative(
            sized.config.gpu, sized.config.tensor_parallel, sized.config.replicas, sized.cost_per_hour
        )
        if alt.gpu not in best or alt.cost_per_hour < best[alt.gpu].cost_per_hour:
            best[alt.gpu] = alt
    return tuple(best.values())


def _model_pick(
    dep: InferenceDeployment, pools: list[NodePool], tel: DeploymentTelemetry | None, catalog: Catalog
) -> ModelPick | None:
    if dep.workload is None or dep.slo is None:
        return None
    out = optimize(dep, pools, telemetry=tel, benchmark=None, policy=ANALYSIS_POLICY, catalog=catalog)
    if out.pick is None:
        return None
    return ModelPick(out.pick.config, out.pick.shape.pool.name, out.pick.cost_per_hour)


def analysis_input(
    dep: InferenceDeployment,
    snapshot: TelemetrySnapshot | None,
    cluster: ClusterBackend | None,
    pools: list[NodePool],
    catalog: Catalog,
) -> AnalysisInput:
    tel = snapshot.for_workload(dep.ref) if snapshot else None
    dep, observed = with_observed_workload(dep, tel, catalog)
    rollout = None
    if cluster is not None:
        try:
            rollout = cluster.rollout_status(dep.ref)
        except ServewiseError as exc:
            log.warning("rollout status of %s unavailable: %s", dep.ref.key, exc)
    hw = memory = half = None
    pick = None
    alternatives: tuple[GpuAlternative, ...] = ()
    cost = None
    try:
        model, hw = catalog.model(dep.config.model), catalog.gpu(dep.config.gpu)
        seq = None
        if dep.workload is not None:
            seq = int(dep.workload.input_len.mean + dep.workload.output_len.mean)
        memory = plan_memory(model, hw, dep.config, seq)
        if dep.config.tensor_parallel > 1:
            half = plan_memory(
                model, hw, dep.config.with_changes(tensor_parallel=dep.config.tensor_parallel // 2), seq
            )
        cost = current_cost_per_hour(dep, next((p for p in pools if p.name == dep.pool), None), catalog)
        alternatives = _alternatives(dep, pools, tel.get("request_rate_per_s") if tel else None, catalog)
        pick = _model_pick(dep, pools, tel, catalog)
    except ServewiseError as exc:
        log.warning("perf facts for %s unavailable: %s", dep.ref.key, exc)
    inp = AnalysisInput(
        deployment=dep,
        telemetry=tel,
        window=snapshot.window if snapshot else "15m",
        rollout=rollout,
        hardware=hw,
        memory=memory,
        memory_half_tp=half,
        alternatives=alternatives,
        current_cost_per_hour=cost,
        model_pick=pick,
        notes=(observed,) if observed else (),
    )
    # the prompt length prefill_bound reads (observed first), not the declared one
    in_len = mean_input_len(inp)
    if in_len is None or hw is None:
        return inp
    try:
        one = predict(dep.config, input_len=max(1, round(in_len)), output_len=1, concurrency=1)
    except ServewiseError as exc:
        log.warning("prefill time of %s unavailable: %s", dep.ref.key, exc)
        return inp
    return replace(inp, prefill_ms=one.ttft_ms)


def analyze_fleet(
    cluster: ClusterBackend,
    snapshot: TelemetrySnapshot | None,
    *,
    deployments: list[InferenceDeployment] | None = None,
    catalog: Catalog | None = None,
) -> FleetAnalysis:
    """Findings for every deployment (or the given ones), most severe first per deployment."""
    catalog = catalog or get_catalog()
    deps = deployments if deployments is not None else cluster.list_deployments()
    pools = cluster.list_node_pools()
    out = FleetAnalysis(
        source=snapshot.source if snapshot else cluster.name,
        window=snapshot.window if snapshot else "",
        deployments=len(deps),
    )
    if snapshot is not None:
        out.notes.extend(snapshot.notes)  # e.g. a Prometheus without any series in the window
    for dep in deps:
        inp = analysis_input(dep, snapshot, cluster, pools, catalog)
        out.findings.extend(run_analyzers(inp))
        out.notes.extend(coverage_notes(inp))
    return out


# --- registered tools ---------------------------------------------------------------------------


class AnalyzeFleetInput(BaseModel):
    window: str = Field(default="15m", description="telemetry window, e.g. '15m', '1h'")


class AnalyzeDeploymentInput(BaseModel):
    name: str = Field(description="deployment name")
    namespace: str = "default"
    window: str = "15m"


@registry.tool(name="analyze_fleet")
def analyze_fleet_tool(args: AnalyzeFleetInput) -> FleetAnalysis:
    """Run every bottleneck analyzer on every inference deployment; returns findings with evidence."""
    ctx = current_context()
    return analyze_fleet(ctx.cluster, ctx.telemetry.snapshot(window=args.window))


@registry.tool()
def analyze_deployment(args: AnalyzeDeploymentInput) -> FleetAnalysis:
    """Run every bottleneck analyzer on one deployment; returns findings with evidence."""
    ctx = current_context()
    dep = find_deployment(ctx.cluster, args.name, args.namespace)
    return analyze_fleet(ctx.cluster, ctx.telemetry.snapshot(window=args.window), deployments=[dep])


def find_deployment(cluster: ClusterBackend, name: str, namespace: str = "default") -> InferenceDeployment:
    deps = cluster.list_deployments()
    for dep in deps:
        if dep.ref.name == name and dep.ref.namespace == namespace:
            return dep
    same = [d.ref.key for d in deps if d.ref.name == name]
    if len(same) == 1 and namespace == "default":
        return next(d for d in deps if d.ref.name == name)
    known = sorted(d.ref.key for d in deps)
    raise NotFoundError(f"no inference deployment {namespace}/{name}; known: {known}")
