"""A deployment that declares no workload is sized for the one its telemetry shows."""

from __future__ import annotations

import numpy as np
import pytest

from servewise.cluster.sim import SimCluster
from servewise.domain import DeploymentRef, DeploymentTelemetry, InferenceDeployment, ServingConfig
from servewise.errors import InputError
from servewise.telemetry.sim import SimTelemetrySource
from servewise.tools.analyzing import analyze_fleet
from servewise.tools.observing import length_distribution, observed_workload, with_observed_workload
from servewise.tools.proposing import optimize_deployment
from servewise.tools.search_space import max_context_needed

SIGNALS = {
    "request_rate_per_s": 2.0,
    "prompt_tokens_per_s": 4000.0,
    "generation_tokens_per_s": 600.0,
    "prompt_len_p99": 9000.0,
    "output_len_p99": 1200.0,
}


def _dep(max_model_len: int | None = None) -> InferenceDeployment:
    config = ServingConfig(model="llama-3.1-8b", gpu="h100-sxm", replicas=2, max_model_len=max_model_len)
    return InferenceDeployment(ref=DeploymentRef(name="llm"), config=config)


def _tel(**signals: float) -> DeploymentTelemetry:
    return DeploymentTelemetry(
        deployment="llm", namespace="default", replicas=2, signals={**SIGNALS, **signals}
    )


@pytest.mark.parametrize(("mean", "p99"), [(2000.0, 9000.0), (300.0, 1200.0), (500.0, 600.0)])
def test_a_log_normal_with_the_observed_mean_and_p99(mean: float, p99: float) -> None:
    dist = length_distribution(mean, p99, longest=131072)
    lengths = dist.sample(np.random.default_rng(0), 400_000)
    assert dist.kind == "lognormal"
    assert lengths.mean() == pytest.approx(mean, rel=0.02)
    assert np.percentile(lengths, 99) == pytest.approx(p99, rel=0.03)


def test_lengths_without_a_tail_above_the_mean_are_fixed() -> None:
    assert length_distribution(1000.0, 995.0, longest=8192).kind == "fixed"  # one length, read in (500, 1000]
    assert length_distribution(1000.0, None, longest=8192).kind == "fixed"  # no length histogram
    assert length_distribution(20000.0, None, longest=8192).mean == 8192  # never beyond the context


def test_the_workload_comes_from_token_rates_and_length_histograms() -> None:
    wl = observed_workload(_dep(), _tel())
    assert wl is not None and wl.arrival_rate_per_s == 2.0
    assert wl.input_len.mean == 2000.0 and wl.output_len.mean == 300.0
    assert wl.input_len.max == 131072  # llama-3.1-8b's context: the server's when it sets none
    assert observed_workload(_dep(), _tel(request_rate_per_s=0.0)) is None
    missing = _tel()
    del missing.signals["prompt_tokens_per_s"]
    assert observed_workload(_dep(), missing) is None


def test_a_candidate_never_gets_a_shorter_context_than_the_server_has() -> None:
    dep, note = with_observed_workload(_dep(max_model_len=16384), _tel())
    assert dep.workload is not None and note is not None
    assert "no workload declared" in note and "input 2000 tokens mean, p99 9000" in note
    assert dep.workload.input_len.max == 16384 and dep.workload.output_len.max == 16384
    assert max_context_needed(dep, 131072) >= 16384


def test_a_declared_workload_is_kept() -> None:
    declared = _dep().model_copy(update={"workload": observed_workload(_dep(), _tel(request_rate_per_s=9.0))})
    dep, note = with_observed_workload(declared, _tel())
    assert dep is declared and note is None


@pytest.fixture(scope="module")
def twin() -> SimCluster:
    return SimCluster.from_scenario("demo", ephemeral=True, start=1763899200.0, warmup_s=900)


def _undeclared(twin: SimCluster, name: str, namespace: str) -> InferenceDeployment:
    return twin.get_deployment(DeploymentRef(name=name, namespace=namespace)).model_copy(
        update={"workload": None}
    )


def test_an_undeclared_deployment_is_optimized_for_its_observed_load(twin: SimCluster) -> None:
    dep = _undeclared(twin, "ticket-triage", "support")
    snap = SimTelemetrySource(twin).snapshot(window="15m")
    tel = snap.for_deployment(dep.ref.name, dep.ref.namespace)
    plan = optimize_deployment(dep, twin, telemetry=tel, benchmark=False)
    assert plan.notes[0].startswith("support/ticket-triage: no workload declared; sized for the observed one")
    declared = twin.specs["support/ticket-triage"].workload
    assert tel is not None and plan.proposal is not None
    # sized for what it serves (3.8 req/s, the twin's offered rate: it keeps up) plus headroom
    assert declared.rate_at(twin.now_s) == pytest.approx(tel.signals["request_rate_per_s"], rel=0.1)
    assert f"; {tel.signals['request_rate_per_s']:.2f} req/s;" in plan.notes[0]
    context = plan.proposal.proposed.max_model_len
    assert context is None or context >= (dep.config.max_model_len or 131072)  # never a shorter one


def test_a_deployment_that_does_not_keep_up_is_not_sized_for_what_it_serves(twin: SimCluster) -> None:
    """support-bot serves 1.45 req/s of the 2.3 offered, 600 requests queued: no workload is made up."""
    dep = _undeclared(twin, "support-bot", "support")
    snap = SimTelemetrySource(twin).snapshot(window="15m")
    analysis = analyze_fleet(twin, snap, deployments=[dep])
    note = next(n for n in analysis.notes if n.startswith("support/support-bot: no workload declared"))
    assert "requests wait on average" in note and "servewise.io/workload" in note
    assert {"slo_violation", "queueing"} <= {f.kind for f in analysis.findings}  # still found
    with pytest.raises(InputError, match="no workload to size for"):
        optimize_deployment(dep, twin, telemetry=snap.for_deployment(dep.ref.name, dep.ref.namespace))
