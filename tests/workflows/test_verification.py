"""Post-change verification on the twin: a change that passed its benchmark passes verification, and
a real SLO failure after the change (the twin's traffic really changed) is still a regression."""

from __future__ import annotations

import pytest

from servewise.cluster.sim import SimCluster
from servewise.domain import (
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    Impact,
    InferenceDeployment,
    Proposal,
    ServingConfig,
    TelemetrySnapshot,
)
from servewise.telemetry.sim import SimTelemetrySource
from servewise.tools.choosing import BENCHMARK_REQUESTS, share_of
from servewise.tools.judging import benchmark_passes
from servewise.tools.registry import ToolRegistry
from servewise.tools.search_space import SearchPolicy
from servewise.tools.sizing import load_for
from servewise.workflows.environment import Environment
from servewise.workflows.state import RunOptions
from servewise.workflows.verification import (
    MAX_WINDOW_S,
    P99_REQUESTS,
    observation_window_s,
    unresolved_by_buckets,
    verify_change,
)

START = 1763899200.0  # 2025-11-23T12:00:00Z
RAG = DeploymentRef(name="rag-search", namespace="search")
LEGAL = DeploymentRef(name="legal-summarizer", namespace="legal")
OPTS = RunOptions(cluster="sim:demo", verify_window_s=600)


def _twin() -> tuple[SimCluster, Environment]:
    sim = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=900)
    env = Environment(
        spec="sim:demo", cluster=sim, telemetry=SimTelemetrySource(sim), registry=ToolRegistry()
    )
    return sim, env


def _benchmark(sim: SimCluster, dep: InferenceDeployment, config: ServingConfig) -> BenchmarkResult:
    """What the optimizer runs: one replica at its share of the peak + headroom load."""
    load = load_for(dep, None, SearchPolicy())
    request = BenchmarkRequest(
        ref=dep.ref, config=config, workload=share_of(load, dep, config), num_requests=BENCHMARK_REQUESTS
    )
    return sim.run_benchmark(request)


def _proposal(dep: InferenceDeployment, config: ServingConfig, res: BenchmarkResult | None) -> Proposal:
    """A proposal predicted (and, with ``res``, measured) at the benchmark's numbers."""
    impact = Impact(
        cost_per_hour_before=1.0,
        cost_per_hour_after=0.5,
        ttft_p99_ms=res.ttft_p99_ms if res else 100.0,
        tpot_p99_ms=res.tpot_p99_ms if res else 10.0,
        uncertainty_pct=10.0,
    )
    return Proposal(
        id=f"p-{dep.ref.name}-test",
        ref=dep.ref,
        current=dep.config,
        proposed=config,
        summary="test change",
        predicted=impact,
        measured=impact if res else None,
    )


def _apply_and_verify(
    sim: SimCluster, env: Environment, p: Proposal, *, then: object = None
) -> dict[str, object]:
    before = env.telemetry.snapshot(window="15m").model_dump(mode="json")
    sim.apply(p.ref, p.proposed, proposal_id=p.id)
    if callable(then):
        then()
    return verify_change(env, [p], before, OPTS)[0]


def test_a_change_that_passed_its_benchmark_passes_verification() -> None:
    """rag-search at half its GPUs (TP 2 -> 1): benchmarked at peak + headroom, then verified on the
    fleet. Before the twin's fleet and benchmark shared one physics, the fleet's p99 TTFT came out
    2-3x the benchmark's and this change was rolled back."""
    sim, env = _twin()
    dep = sim.get_deployment(RAG)
    assert dep.slo is not None
    candidate = dep.config.with_changes(tensor_parallel=1, replicas=2)
    res = _benchmark(sim, dep, candidate)
    assert benchmark_passes(res, dep.slo, 0.0), res
    result = _apply_and_verify(sim, env, _proposal(dep, candidate, res))
    assert result["regression"] is False, result["reasons"]
    assert not result["inconclusive"]


def test_a_real_slo_failure_after_the_change_still_rolls_back() -> None:
    """Same change, but the traffic really grows fivefold after it: the SLO breaks and the check says so."""
    sim, env = _twin()
    dep = sim.get_deployment(RAG)
    candidate = dep.config.with_changes(tensor_parallel=1, replicas=2)
    res = _benchmark(sim, dep, candidate)
    spec = sim.specs[RAG.key]

    def traffic_grows() -> None:
        load = spec.workload.model_copy(update={"rate_per_s": spec.workload.rate_per_s * 5})
        sim.specs[RAG.key] = spec.model_copy(update={"workload": load})

    result = _apply_and_verify(sim, env, _proposal(dep, candidate, res), then=traffic_grows)
    assert result["regression"] is True
    reasons = result["reasons"]
    assert isinstance(reasons, list) and any(r.startswith("SLO") and "broken" in r for r in reasons), reasons


def test_a_change_that_breaks_the_slo_without_a_benchmark_rolls_back() -> None:
    """An approved change that was never benchmarked and starves the deployment is rolled back."""
    sim, env = _twin()
    dep = sim.get_deployment(RAG)
    starved = dep.config.with_changes(tensor_parallel=1, replicas=1, max_num_seqs=2)
    result = _apply_and_verify(sim, env, _proposal(dep, starved, None))
    assert result["regression"] is True and result["reasons"]


def test_the_window_is_long_enough_for_a_p99_of_the_slowest_deployment() -> None:
    sim, env = _twin()
    before = env.telemetry.snapshot(window="15m")
    legal, rag = sim.get_deployment(LEGAL), sim.get_deployment(RAG)
    p_legal, p_rag = _proposal(legal, legal.config, None), _proposal(rag, rag.config, None)
    rag_rate = before.for_deployment(RAG.name, RAG.namespace).signals["request_rate_per_s"]  # type: ignore[union-attr]
    legal_rate = before.for_deployment(LEGAL.name, LEGAL.namespace).signals["request_rate_per_s"]  # type: ignore[union-attr]
    assert rag_rate * 600 > P99_REQUESTS > legal_rate * 600  # the demo: busy rag-search, quiet legal
    assert observation_window_s([p_rag], before, 600) == 600
    assert observation_window_s([p_rag, p_legal], before, 600) == pytest.approx(
        min(P99_REQUESTS / legal_rate, MAX_WINDOW_S)
    )
    assert observation_window_s([p_rag, p_legal], before, 0) == 0  # no window asked: none waited
    assert observation_window_s([p_rag], None, 300) == 300
    empty = TelemetrySnapshot(source="sim:demo", taken_at=before.taken_at)
    assert observation_window_s([p_legal], empty, 300) == 300


@pytest.mark.parametrize(
    ("measured", "limit", "benchmarked", "unresolved"),
    [
        (47.0, 40.0, 36.0, True),  # ITL bucket 25-50 ms holds both: the benchmark met the limit
        (47.0, 40.0, 44.0, False),  # the benchmark itself broke it
        (47.0, 40.0, None, False),  # no benchmark: the histogram's estimate decides
        (80.0, 40.0, 36.0, False),  # 75-100 ms bucket lies wholly above the limit: broken
    ],
)
def test_an_slo_inside_the_p99s_histogram_bucket_is_unresolved_only_with_a_passing_benchmark(
    measured: float, limit: float, benchmarked: float | None, unresolved: bool
) -> None:
    assert unresolved_by_buckets("tpot_p99_ms", measured, limit, benchmarked) is unresolved


def test_verdict_names_the_outcome_a_person_must_act_on() -> None:
    from servewise.workflows.verification import verdict

    assert verdict(None) == "not verified"
    assert verdict({"regression": False, "inconclusive": False, "unresolved": []}) == "passed"
    assert verdict({"regression": True, "reasons": ["SLO ttft_p99_ms broken: 900 > 500"]}).startswith(
        "regression: SLO ttft_p99_ms broken"
    )
    assert "inconclusive" in verdict({"regression": False, "inconclusive": True})
    unresolved = verdict(
        {"regression": False, "inconclusive": False, "unresolved": ["SLO itl_p99_ms: p99 45"]}
    )
    assert unresolved.startswith("unresolved") and "itl_p99_ms" in unresolved
