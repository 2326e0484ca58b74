"""A deployment that declares no workload is sized for the one its telemetry shows."""

from __future__ import annotations

import numpy as np
import pytest

from servewise.cluster.sim import SimCluster
from servewise.domain import DeploymentRef, DeploymentTelemetry, InferenceDeployment, ServingConfig
from servewise.errors import InputError
from servewise.telemetry.sim import SimTelemetrySource
from servewise.tools.analyzing import analyze_fleet
from servewise.tools.observing import (
    length_distribution,
    observed_workload,
    unobservable,
    with_observed_workload,
)
from servewise.tools.proposing import optimize_deployment
from servewise.tools.search_space import SearchPolicy, max_context_needed

SIGNALS = {
    "request_rate_per_s": 2.0,
    "request_rate_peak_per_s": 3.0,
    "requests_running": 40.0,
    "requests_waiting": 2.0,
    "requests_waiting_peak": 30.0,
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


@pytest.mark.parametrize(("mean", "p99", "longest"), [(300.0, 5000.0, 8192), (500.0, 20000.0, 32768)])
def test_a_tail_heavier_than_the_context_keeps_the_mean(mean: float, p99: float, longest: int) -> None:
    """p99/mean above 15 is out of a log-normal's reach, and its heaviest one, clipped at the
    context, would draw shorter lengths than observed: a lighter tail keeps the mean."""
    dist = length_distribution(mean, p99, longest=longest)
    lengths = dist.sample(np.random.default_rng(0), 400_000)
    assert dist.mean == mean and lengths.mean() == pytest.approx(mean, rel=0.01)
    assert lengths.max() <= longest and np.percentile(lengths, 99) > 5 * mean


def test_a_mean_that_fills_the_room_is_fixed_there() -> None:
    """A review's crash: prompt mean 4300 with a 4192-token room (brentq found no root)."""
    dist = length_distribution(4300.0, 4500.0, longest=4192)
    assert (dist.kind, dist.mean, dist.max) == ("fixed", 4192, 4192)


def test_lengths_without_a_tail_above_the_mean_are_fixed() -> None:
    assert length_distribution(1000.0, 995.0, longest=8192).kind == "fixed"  # one length, read in (500, 1000]
    assert length_distribution(1000.0, None, longest=8192).kind == "fixed"  # no length histogram
    assert length_distribution(20000.0, None, longest=8192).mean == 8192  # never beyond the context


def test_the_workload_comes_from_token_rates_length_histograms_and_the_peak_rate() -> None:
    wl = observed_workload(_dep(), _tel())
    assert wl is not None and wl.arrival_rate_per_s == 3.0  # the busiest 5 minutes, not the window's 2
    assert wl.input_len.mean == 2000.0 and wl.output_len.mean == 300.0
    assert wl.input_len.max + wl.output_len.max == 131072  # llama-3.1-8b's context: the server's
    assert observed_workload(_dep(), _tel(request_rate_per_s=0.0)) is None


@pytest.mark.parametrize(
    "signal", ["prompt_tokens_per_s", "request_rate_peak_per_s", "requests_waiting", "requests_waiting_peak"]
)
def test_a_missing_signal_leaves_the_load_unknown(signal: str) -> None:
    tel = _tel()
    del tel.signals[signal]
    assert observed_workload(_dep(), tel) is None
    assert unobservable(_dep(), tel) == f"telemetry lacks {signal}"


def test_a_backlog_beyond_the_running_requests_means_it_does_not_keep_up() -> None:
    assert unobservable(_dep(), _tel(requests_waiting=35.0)) is None  # a stable queue (M/M/c near 0.9)
    why = unobservable(_dep(), _tel(requests_waiting=50.0))
    assert why is not None and "50 requests wait on average beside 40 running" in why


def test_a_queue_beyond_a_full_batch_at_its_busiest_means_the_peak_is_its_capacity() -> None:
    """Quiet now, but in its busiest 5 minutes 600 requests waited (2 replicas x 256 sequences)."""
    why = unobservable(_dep(), _tel(requests_waiting_peak=600.0))
    assert why is not None and "600 requests waited in its busiest 5 minutes" in why and "(512)" in why
    assert unobservable(_dep(), _tel(requests_waiting_peak=400.0)) is None


@pytest.mark.parametrize(
    ("prompt_mean", "prompt_p99", "output_p99", "longest"),
    [(6000.0, 5000.0, 2000.0, 8192), (3000.0, 3500.0, 1000.0, 4096), (7000.0, 7500.0, 1000.0, 8192)],
)
def test_long_prompts_keep_their_length_when_the_room_is_shared(
    prompt_mean: float, prompt_p99: float, output_p99: float, longest: int
) -> None:
    """A review's finding: outputs took up to half the context and cut prompt means by 12-30 %."""
    tel = _tel(prompt_tokens_per_s=2 * prompt_mean, prompt_len_p99=prompt_p99, output_len_p99=output_p99)
    wl = observed_workload(_dep(max_model_len=longest), tel)
    assert wl is not None and wl.input_len.mean == prompt_mean
    assert wl.input_len.max + wl.output_len.max == longest and wl.output_len.max >= output_p99 * 0.7


def test_a_tgi_p99_is_a_value_not_a_bound() -> None:
    """TGI's length buckets are linear, not vLLM's 1-2-5: 6000 at an 8192 context is a reading."""
    tgi = _dep(max_model_len=8192).model_copy()
    tgi = tgi.model_copy(update={"config": tgi.config.with_changes(engine="tgi")})
    dep, note = with_observed_workload(tgi, _tel(prompt_len_p99=6000.0))
    assert note is not None and "p99 6000" in note and ">=" not in note


def test_a_candidate_never_gets_a_shorter_context_than_the_server_has() -> None:
    dep, note = with_observed_workload(_dep(max_model_len=16384), _tel())
    assert dep.workload is not None and note is not None
    assert "no workload declared" in note and "input 2000 tokens mean, p99 9000" in note
    assert "3.00 req/s, the busiest 5 minutes over ?" in note
    assert dep.workload.input_len.max + dep.workload.output_len.max == 16384
    assert max_context_needed(dep, 131072) == 16384


def test_a_p99_beyond_the_top_bucket_is_a_lower_bound() -> None:
    """With max_model_len 8192 vLLM's top prompt bucket is 5000: a p99 read there is at least 5000."""
    dep, note = with_observed_workload(_dep(max_model_len=8192), _tel(prompt_len_p99=5000.0))
    assert note is not None and "p99 >= 5000" in note
    assert dep.workload is not None
    tail = np.percentile(dep.workload.input_len.sample(np.random.default_rng(0), 100_000), 99)
    assert tail > 5000  # fitted up to the room the context leaves, not at the bound


def test_the_prefix_caches_hit_rate_is_the_shared_prefix() -> None:
    dep, note = with_observed_workload(_dep(), _tel(prefix_cache_hit_rate=0.42))
    assert dep.workload is not None and dep.workload.prefix_share == 0.42
    assert note is not None and "prefix share 0.42, the prefix cache's hit rate" in note
    dep, note = with_observed_workload(_dep(), _tel())  # caching off: no lookups, no rate
    assert dep.workload is not None and dep.workload.prefix_share == 0.0
    assert note is not None and "no prefix sharing assumed (no prefix-cache lookups seen)" in note


def test_sglang_without_length_histograms_says_which_flag_exports_them() -> None:
    signals = {k: v for k, v in SIGNALS.items() if not k.endswith("_len_p99")}
    tel = DeploymentTelemetry(
        deployment="llm", namespace="default", replicas=2, signals=signals, engine="sglang"
    )
    dep, note = with_observed_workload(_dep(), tel)
    assert dep.workload is not None and note is not None
    assert "p99 unknown" in note and "--collect-tokens-histogram" in note
    _, vllm_note = with_observed_workload(_dep(), tel.model_copy(update={"engine": "vllm"}))
    assert vllm_note is not None and "--collect-tokens-histogram" not in vllm_note
    _, with_histograms = with_observed_workload(_dep(), _tel().model_copy(update={"engine": "sglang"}))
    assert with_histograms is not None and "--collect-tokens-histogram" not in with_histograms


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


def test_an_undeclared_deployment_is_optimized_for_its_observed_peak(twin: SimCluster) -> None:
    dep = _undeclared(twin, "ticket-triage", "support")
    snap = SimTelemetrySource(twin).snapshot(window="15m")
    tel = snap.for_deployment(dep.ref.name, dep.ref.namespace)
    assert tel is not None
    plan = optimize_deployment(dep, twin, telemetry=tel, benchmark=False)
    note = plan.notes[0]
    assert note.startswith("support/ticket-triage: no workload declared; sized for the observed one")
    peak = tel.signals["request_rate_peak_per_s"]
    assert peak > tel.signals["request_rate_per_s"]  # within the twin's 15 minutes of history
    lookback = tel.evidence["request_rate_peak_per_s"].window  # all the history the twin keeps
    assert (
        lookback == "885s" and f"; {peak:.2f} req/s, the busiest 5 minutes over 885s, less than a day" in note
    )
    assert plan.proposal is not None
    assert f"at {peak * (1 + SearchPolicy().headroom):.2f} req/s peak+headroom" in plan.proposal.summary


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
