"""The registered tools end to end on the twin, and the fleet MILP under pool capacity."""

from __future__ import annotations

import pytest

import servewise.tools  # noqa: F401  (registers the tools)
from servewise.domain import SLO, DeploymentRef, InferenceDeployment, NodePool, ServingConfig, Workload
from servewise.tools.context import ToolContext, use_context
from servewise.tools.placing import optimize_fleet
from servewise.tools.registry import ToolError, registry

EXPECTED = {
    "list_fleet",
    "get_telemetry",
    "analyze_deployment",
    "analyze_fleet",
    "predict_performance",
    "what_if",
    "optimize_deployment",
    "optimize_fleet",
    "run_benchmark",
}


def test_every_tool_is_registered_with_a_schema() -> None:
    assert set(registry.names()) >= EXPECTED
    schemas = {s["function"]["name"]: s for s in registry.openai_schemas()}
    assert schemas["what_if"]["function"]["parameters"]["required"] == ["name", "changes"]


@pytest.fixture(scope="module")
def ctx():
    from servewise.cluster.sim import SimCluster
    from servewise.telemetry.sim import SimTelemetrySource

    sim = SimCluster.from_scenario("demo", ephemeral=True)
    return ToolContext(cluster=sim, telemetry=SimTelemetrySource(sim))


def test_analyze_and_what_if_through_the_registry(ctx) -> None:
    with use_context(ctx):
        out = registry.call("analyze_deployment", {"name": "chat-assistant", "namespace": "chat"})
        assert not isinstance(out, ToolError), out
        kinds = {f.kind for f in out.findings}  # type: ignore[attr-defined]
        assert "kv_saturation" in kinds  # the scenario's documented problem
        wi = registry.call(
            "what_if", {"name": "rag-search", "namespace": "search", "changes": {"replicas": 1}}
        )
        assert not isinstance(wi, ToolError), wi
        assert wi.after.replicas == 1 and wi.after.cost_per_hour < wi.before.cost_per_hour  # type: ignore[attr-defined]
        bad = registry.call("analyze_deployment", {"name": "nope"})
        assert isinstance(bad, ToolError) and "no inference deployment" in bad.error


def _dep(name: str, rate: float) -> InferenceDeployment:
    cfg = ServingConfig(model="llama-3.1-8b", gpu="h100-sxm", replicas=1)
    return InferenceDeployment(
        ref=DeploymentRef(name=name),
        config=cfg,
        pool="big",
        workload=Workload.fixed(1000, 200, rate=rate),
        slo=SLO(ttft_p99_ms=2000, tpot_p99_ms=80),
    )


def test_fleet_milp_respects_pool_capacity() -> None:
    cheap = NodePool(name="cheap", gpu="l40s", nodes=1, gpus_per_node=4, free_gpus=4)
    big = NodePool(name="big", gpu="h100-sxm", nodes=1, gpus_per_node=8, free_gpus=6)
    deps = [_dep(f"svc-{i}", 3.0) for i in range(3)]
    plan = optimize_fleet(deps, [cheap, big])
    assert plan.status == "optimal" and len(plan.placements) == 3
    used = sum(p.config.total_gpus for p in plan.placements if p.pool == "cheap")
    assert used <= 4
    assert plan.total_cost_per_hour == pytest.approx(sum(p.cost_per_hour for p in plan.placements), rel=1e-6)
    alone = optimize_fleet(deps[:1], [cheap, big])
    assert alone.placements[0].pool == "cheap"  # the cheap pool wins when it has room


@pytest.mark.slow
def test_optimize_deployment_tool_on_the_twin(ctx) -> None:
    lines: list[str] = []
    ctx.extras["on_progress"] = lines.append  # what a workflow sets to show each benchmark run
    with use_context(ctx):
        before = ctx.cluster.get_deployment(DeploymentRef(name="rag-search", namespace="search")).config
        plan = registry.call("optimize_deployment", {"name": "rag-search", "namespace": "search"})
        assert not isinstance(plan, ToolError), plan
        assert len(lines) == len(plan.trials) and lines[0].startswith("benchmark 1/8: ")  # type: ignore[attr-defined]
        prop = plan.proposal  # type: ignore[attr-defined]
        assert prop is not None and prop.predicted.cost_per_hour_after < prop.predicted.cost_per_hour_before
        assert prop.predicted.validated_by.startswith("benchmark:") and prop.measured is not None
        trials = plan.trials  # type: ignore[attr-defined]
        assert 1 <= len(trials) <= 8
        # each record says how long its run was and how far its worst p99 sits from the SLO with
        # the run's spread; the run that decided the pick is a pass within that bound
        assert all(t.requests >= 1000 for t in trials)
        deciding = [t for t in trials if t.config == prop.proposed and t.passed]
        assert deciding and deciding[-1].ratio_bound is not None and deciding[-1].ratio_bound <= 1.0
        assert prop.manifest_patch and all(
            op["op"] in ("add", "remove", "replace") for op in prop.manifest_patch
        )
        # a proposal is only a proposal: the twin still runs the old config
        assert (
            ctx.cluster.get_deployment(DeploymentRef(name="rag-search", namespace="search")).config == before
        )
