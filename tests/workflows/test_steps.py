"""The workflow's optimize step hands the run's benchmark-duration cap to the optimizer tool."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from servewise.cluster.sim import SimCluster
from servewise.domain import DeploymentRef, Finding, Severity
from servewise.telemetry.sim import SimTelemetrySource
from servewise.tools.proposing import OptimizeDeploymentInput
from servewise.tools.registry import ToolRegistry
from servewise.workflows import steps
from servewise.workflows.environment import Environment


class NoPlan(BaseModel):
    proposal: None = None
    no_proposal_reason: str


@pytest.mark.parametrize("minutes", [None, 45.0])
def test_the_optimize_step_passes_the_duration_cap_to_the_tool(minutes: float | None) -> None:
    received: list[OptimizeDeploymentInput] = []
    registry = ToolRegistry()

    def optimize_deployment(args: OptimizeDeploymentInput) -> NoPlan:
        received.append(args)
        return NoPlan(no_proposal_reason="recorded only")

    registry.register(optimize_deployment)
    sim = SimCluster.from_scenario("demo", ephemeral=True, warmup_s=0.0)
    env = Environment(spec="sim:demo", cluster=sim, telemetry=SimTelemetrySource(sim), registry=registry)
    ref = DeploymentRef(name="rag-search", namespace="search")
    finding = Finding(ref=ref, kind="over_provisioned", severity=Severity.WARNING, summary="idle")

    proposals, notes = steps.optimize(env, "15m", [finding], benchmark=True, max_benchmark_minutes=minutes)

    assert proposals == [] and notes == ["search/rag-search: no proposal: recorded only"]
    (args,) = received
    assert args.name == "rag-search" and args.benchmark
    assert args.policy.max_benchmark_minutes == minutes
