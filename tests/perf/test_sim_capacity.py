"""Capacity search and the catalog-backed entry point of the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_fakes import LinearCost

from servewise.domain import SLO, ServingConfig, Workload
from servewise.errors import DoesNotFitError, InputError
from servewise.perf import simulator
from servewise.perf.sim_capacity import max_sustainable_rate
from servewise.perf.simulator import simulate, simulate_config

CFG = ServingConfig(model="llama-3.1-8b", gpu="h100-sxm", max_num_seqs=32)
WL = Workload.fixed(500, 100, rate=1.0)
SLO_ = SLO(ttft_p99_ms=400, tpot_p99_ms=40)
KV = 200_000
COST = LinearCost(a=0.01, b=2e-5, c=1e-8)


def rate(config: ServingConfig = CFG, cost: LinearCost = COST, slo: SLO = SLO_) -> float:
    return max_sustainable_rate(config, WL, slo, cost=cost, kv_capacity_tokens=KV, num_requests=400, tol=0.02)


def test_found_rate_meets_the_slo_and_a_higher_rate_does_not() -> None:
    found = rate()
    assert found > 0
    at = simulate(
        CFG,
        WL.model_copy(update={"arrival_rate_per_s": found}),
        cost=COST,
        kv_capacity_tokens=KV,
        num_requests=400,
    )
    assert at.ttft_ms.p99 <= SLO_.ttft_p99_ms and at.tpot_ms.p99 <= SLO_.tpot_p99_ms  # type: ignore[operator]
    above = simulate(
        CFG,
        WL.model_copy(update={"arrival_rate_per_s": found * 1.15}),
        cost=COST,
        kv_capacity_tokens=KV,
        num_requests=400,
    )
    assert above.ttft_ms.p99 > SLO_.ttft_p99_ms or above.tpot_ms.p99 > SLO_.tpot_p99_ms  # type: ignore[operator]


def test_capacity_grows_with_max_num_seqs_and_a_faster_step() -> None:
    base = rate()
    assert rate(config=CFG.with_changes(max_num_seqs=4)) < base
    assert rate(cost=LinearCost(a=0.005, b=1e-5, c=5e-9)) > 1.5 * base


def test_impossible_slo_gives_zero() -> None:
    # a 500-token prefill alone takes 20 ms, longer than the TTFT objective
    assert rate(slo=SLO(ttft_p99_ms=15)) == 0.0


def test_loose_slo_is_bounded_by_stability() -> None:
    loose = rate(slo=SLO(ttft_p99_ms=1e7))
    assert loose > 0
    over = simulate(
        CFG,
        WL.model_copy(update={"arrival_rate_per_s": loose * 1.3}),
        cost=COST,
        kv_capacity_tokens=KV,
        num_requests=400,
    )
    assert over.request_throughput_per_s < loose * 1.3 * 0.97


def test_capacity_rejects_half_given_replica_and_bad_tol() -> None:
    with pytest.raises(InputError, match="kv_capacity_tokens"):
        max_sustainable_rate(CFG, WL, SLO_, cost=COST)
    with pytest.raises(InputError, match="tol"):
        max_sustainable_rate(CFG, WL, SLO_, cost=COST, kv_capacity_tokens=KV, tol=0)


def test_simulate_config_uses_catalog_cost_memory_and_price() -> None:
    wl = Workload.fixed(1024, 128, rate=4.0)
    res = simulate_config(CFG, wl, num_requests=200, slo=SLO(ttft_p99_ms=2000))
    assert res.completed == 200
    assert 0 < res.ttft_ms.p50 < 1000 and 0 < res.tpot_ms.p50 < 200
    assert res.cost_per_1m_output_tokens > 0
    assert res.slo_attainment is not None
    # the same config on slower silicon decodes slower
    slow = simulate_config(CFG.with_changes(gpu="a100-80gb"), wl, num_requests=200)
    assert slow.tpot_ms.p50 > res.tpot_ms.p50


def test_simulate_config_rejects_a_replica_that_does_not_fit() -> None:
    with pytest.raises(DoesNotFitError):
        simulate_config(ServingConfig(model="llama-3.1-70b", gpu="l4"), WL, num_requests=10)


def test_catalog_capacity_search_is_reexported_and_positive() -> None:
    assert simulator.max_sustainable_rate is max_sustainable_rate
    found = max_sustainable_rate(
        CFG,
        Workload.fixed(512, 128, rate=1.0),
        SLO(ttft_p99_ms=1000, tpot_p99_ms=100),
        num_requests=300,
        tol=0.05,
    )
    assert found > 0.5


def test_simulate_config_sizes_memory_from_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_len,output_len\n0.0,500,50\n0.5,700,80\n1.0,600,20\n")
    # an L4 cannot hold the model's full 128k context for llama-3.1-8b but easily holds these requests
    res = simulate_config(ServingConfig(model="llama-3.1-8b", gpu="l4"), Workload(trace=str(path)))
    assert res.completed == 3
