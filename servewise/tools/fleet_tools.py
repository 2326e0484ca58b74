"""Read-only tools over the cluster and telemetry: what runs where, and its current signals."""

from __future__ import annotations

from pydantic import BaseModel, Field

from servewise.domain import DeploymentTelemetry, InferenceDeployment, NodePool, UnparsedWorkload
from servewise.tools.context import current_context
from servewise.tools.registry import registry


class ListFleetInput(BaseModel):
    namespace: str | None = Field(default=None, description="only this namespace (None = all)")


class FleetListing(BaseModel):
    cluster: str
    deployments: list[InferenceDeployment]
    unparsed: list[UnparsedWorkload] = Field(default_factory=list)
    pools: list[NodePool] = Field(default_factory=list)


@registry.tool()
def list_fleet(args: ListFleetInput) -> FleetListing:
    """List inference deployments (config, workload, SLO), unparsed inference workloads and GPU node pools."""
    cluster = current_context().cluster
    deps = [d for d in cluster.list_deployments() if args.namespace in (None, d.ref.namespace)]
    unparsed = [u for u in cluster.list_unparsed() if args.namespace in (None, u.namespace)]
    return FleetListing(
        cluster=cluster.name, deployments=deps, unparsed=unparsed, pools=cluster.list_node_pools()
    )


class GetTelemetryInput(BaseModel):
    window: str = Field(default="15m", description="e.g. '5m', '15m', '1h'")
    deployment: str | None = Field(default=None, description="only this deployment (None = all)")
    namespace: str | None = None


class TelemetryView(BaseModel):
    source: str
    window: str
    deployments: list[DeploymentTelemetry]


@registry.tool()
def get_telemetry(args: GetTelemetryInput) -> TelemetryView:
    """Current telemetry signals per deployment over a window (missing series are listed, never zeroed)."""
    ctx = current_context()
    snap = ctx.telemetry.snapshot(window=args.window)
    deps = [
        d
        for d in snap.deployments
        if args.deployment in (None, d.deployment) and args.namespace in (None, d.namespace)
    ]
    if args.deployment and not deps:  # an InferenceService: read from its predictor's Deployment
        for workload in ctx.cluster.list_deployments():
            ref = workload.ref
            if ref.name == args.deployment and args.namespace in (None, ref.namespace):
                found = snap.for_workload(ref)
                deps += [found] if found is not None else []
    return TelemetryView(source=snap.source, window=snap.window, deployments=deps)
