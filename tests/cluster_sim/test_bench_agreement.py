"""The twin's benchmark Jobs and its fleet serve the same physics (issue 5: a change that passed its
benchmark was rolled back by the fleet's verification because the two disagreed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_metrics import ITL_BUCKETS, TTFT_BUCKETS
from servewise.domain import BenchmarkRequest, DeploymentRef
from servewise.telemetry.sim import SimTelemetrySource

from .conftest import START


def _bucket(value_ms: float, bounds_s: tuple[float, ...]) -> int:
    return int(np.searchsorted(np.asarray(bounds_s) * 1e3, value_ms, side="left"))


def _same_within_resolution(fleet_ms: float, bench_ms: float, bounds_s: tuple[float, ...]) -> bool:
    """The fleet's histogram p99 lies in a bucket that a value within 15 % of the benchmark's would."""
    return _bucket(fleet_ms, bounds_s) in {_bucket(bench_ms * f, bounds_s) for f in (0.85, 1.0, 1.15)}


@pytest.mark.parametrize(("name", "namespace"), [("rag-search", "search"), ("doc-extract", "docs")])
def test_fleet_p99s_agree_with_a_benchmark_at_the_same_rate(name: str, namespace: str) -> None:
    """Half an hour of the fleet's telemetry and a 1000-request benchmark of one replica at the
    fleet's mean per-replica rate: the p99s agree within the histogram's resolution."""
    sim = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=60)
    ref = DeploymentRef(name=name, namespace=namespace)
    spec, t0 = sim.specs[ref.key], sim.now_s
    sim.advance(1800, persist=False)
    fleet = SimTelemetrySource(sim).snapshot(window="30m").for_deployment(name, namespace)
    assert fleet is not None
    replicas = sim.get_deployment(ref).config.replicas
    rate = float(np.mean([spec.workload.rate_at(t) for t in np.arange(t0 + 15, sim.now_s + 1, 15)]))
    workload = spec.workload.as_workload().model_copy(update={"arrival_rate_per_s": rate / replicas})
    bench = sim.run_benchmark(BenchmarkRequest(ref=ref, workload=workload, num_requests=1000))

    ttft, itl = fleet.signals["ttft_p99_ms"], fleet.signals["itl_p99_ms"]
    assert _same_within_resolution(ttft, bench.ttft_p99_ms, TTFT_BUCKETS), (ttft, bench.ttft_p99_ms)
    assert _same_within_resolution(itl, bench.tpot_p99_ms, ITL_BUCKETS), (itl, bench.tpot_p99_ms)
    assert fleet.signals["ttft_p50_ms"] == pytest.approx(bench.ttft_p50_ms, rel=0.3)


def test_the_fleets_latency_profile_is_the_benchmarks_steady_state() -> None:
    """The latency samples the fleet draws from and repeated 1000-request benchmarks measure the
    same p99s (the benchmark warms up first, so it does not see an empty queue's short tail)."""
    sim = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=60)
    ref = DeploymentRef(name="doc-extract", namespace="docs")
    spec = sim.specs[ref.key]
    config = sim.get_deployment(ref).config
    rate = 0.6  # requests/s per replica: a busy but stable replica
    profile = sim.truth.latencies(config, ref.key, spec.workload, rate)
    assert profile is not None
    workload = spec.workload.as_workload().model_copy(update={"arrival_rate_per_s": rate})
    runs = []
    for _ in range(5):
        runs.append(sim.run_benchmark(BenchmarkRequest(ref=ref, workload=workload, num_requests=1000)))
        sim.advance(60, persist=False)  # another benchmark run: other requests, other noise
    ttft = float(np.median([r.ttft_p99_ms for r in runs]))
    tpot = float(np.median([r.tpot_p99_ms for r in runs]))
    assert ttft == pytest.approx(profile.percentile_ms("ttft", 99), rel=0.15)
    assert tpot == pytest.approx(float(np.percentile(profile.tpot_s, 99)) * 1e3, rel=0.15)


def test_an_overloaded_replica_keeps_the_analytical_latencies() -> None:
    sim = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=60)
    ref = DeploymentRef(name="doc-extract", namespace="docs")
    config = sim.get_deployment(ref).config
    assert sim.truth.latencies(config, ref.key, sim.specs[ref.key].workload, 50.0) is None


def test_benchmark_on_another_pool_carries_no_network_latency_of_the_current_pool() -> None:
    """A benchmark Job measures next to the replica; the caller adds the candidate pool's network
    latency. The twin used to add the *current* pool's latency even for a candidate elsewhere."""
    sim = SimCluster.from_scenario("edge", ephemeral=True, start=START, warmup_s=60)
    dep = next(d for d in sim.list_deployments() if d.pool is not None)
    pools = {p.name: p for p in sim.list_node_pools()}
    current = pools[dep.pool or ""]
    # make the current pool's network latency unmistakable
    i = next(i for i, p in enumerate(sim.scenario.pools) if p.name == current.name)
    sim.scenario.pools[i] = sim.scenario.pools[i].model_copy(update={"network_latency_ms": 60_000.0})
    other = next(p for p in pools.values() if p.name != current.name and p.gpu != current.gpu)
    candidate = dep.config.with_changes(gpu=other.gpu)
    assert dep.workload is not None
    workload = dep.workload.model_copy(update={"arrival_rate_per_s": 0.2})
    res = sim.run_benchmark(BenchmarkRequest(ref=dep.ref, config=candidate, workload=workload))
    assert res.ttft_p50_ms < 60_000.0


@pytest.mark.parametrize("common", [True, False])
def test_common_random_numbers_give_equivalent_configs_one_measurement(common: bool) -> None:
    """With common random numbers, two configs that differ only in a knob that does not bind at
    this load (max_num_seqs far above the running batch) meet the same requests and noise, so they
    measure alike; without, each config draws its own."""
    sim = SimCluster.from_scenario(
        "demo", ephemeral=True, start=START, warmup_s=60, common_random_numbers=common
    )
    dep = sim.list_deployments()[0]
    assert dep.workload is not None
    workload = dep.workload.model_copy(update={"arrival_rate_per_s": 0.5})
    one, other = (dep.config.with_changes(replicas=1, max_num_seqs=n) for n in (256, 512))
    runs = [
        sim.run_benchmark(BenchmarkRequest(ref=dep.ref, config=c, workload=workload, num_requests=300))
        for c in (one, other)
    ]
    same = runs[0].tpot_p99_ms == runs[1].tpot_p99_ms and runs[0].ttft_p99_ms == runs[1].ttft_p99_ms
    assert same is common


def test_each_benchmark_run_is_a_fresh_draw_and_the_count_survives_a_new_process(tmp_path: Path) -> None:
    """Without common random numbers, the same config benchmarked twice (or confirmed by a longer run)
    meets new requests and noise, as a new benchmark Job on a cluster does; the twin counts the runs
    in its state file, so a later process does not repeat an earlier one's draws."""

    def twin() -> SimCluster:
        return SimCluster.from_scenario("demo", state_dir=tmp_path, start=START, warmup_s=60)

    sim = twin()
    dep = sim.list_deployments()[0]
    assert dep.workload is not None
    request = BenchmarkRequest(
        ref=dep.ref,
        config=dep.config.with_changes(replicas=1),
        workload=dep.workload.model_copy(update={"arrival_rate_per_s": 0.5}),
        num_requests=300,
    )
    first, second = sim.run_benchmark(request), sim.run_benchmark(request)
    assert sim.now_s == twin().now_s  # the clock did not move: only the count tells the runs apart
    third = twin().run_benchmark(request)
    p99s = {(r.ttft_p99_ms, r.tpot_p99_ms) for r in (first, second, third)}
    assert len(p99s) == 3
    assert twin().deployment_state(dep.ref).benchmark_runs == 3
