"""Behaviour of the continuous-batching simulator, checked against timings derivable by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sim_fakes import LinearCost, ScalarOnlyCost

from servewise.domain import SLO, LengthDistribution, ServingConfig, SimulationResult, Workload
from servewise.errors import InputError
from servewise.perf import sim_engine
from servewise.perf.sim_engine import Engine, EngineLimits
from servewise.perf.sim_requests import build_requests
from servewise.perf.simulator import simulate, simulate_trace

CFG = ServingConfig(model="llama-3.1-8b", gpu="h100-sxm")
BIG_KV = 1_000_000


def one_request(cost: LinearCost, prompt: int, out: int, **cfg: object) -> SimulationResult:
    return simulate(
        CFG.with_changes(**cfg),
        Workload.fixed(prompt, out, rate=1.0),
        cost=cost,
        kv_capacity_tokens=BIG_KV,
        num_requests=1,
    )


def test_single_request_ttft_is_one_prefill_step_and_tpot_the_decode_step() -> None:
    cost = LinearCost(a=0.01, b=1e-5, c=1e-7)
    prompt, out = 100, 11
    res = one_request(cost, prompt, out)
    ttft = cost.a + cost.b * prompt
    # decode j (j = 1..out-1) attends over prompt + j tokens
    decode = [cost.a + cost.b + cost.c * (prompt + j) for j in range(1, out)]
    assert res.ttft_ms.p50 == pytest.approx(ttft * 1e3)
    assert res.tpot_ms.mean == pytest.approx(np.mean(decode) * 1e3)
    assert res.e2e_ms.p99 == pytest.approx((ttft + sum(decode)) * 1e3)
    assert res.completed == 1
    assert res.throughput_tok_s == pytest.approx(out / (ttft + sum(decode)))
    assert res.gpu_busy_fraction == pytest.approx(1.0)


def test_max_num_seqs_one_makes_requests_queue() -> None:
    cost = LinearCost(a=0.01, b=1e-5)
    prompt, out, n = 64, 8, 5
    service = (cost.a + cost.b * prompt) + (out - 1) * (cost.a + cost.b)
    wl = Workload.fixed(prompt, out, rate=1e6)  # everyone arrives within microseconds
    serial = simulate_trace(
        CFG.with_changes(max_num_seqs=1), wl, cost=cost, kv_capacity_tokens=BIG_KV, num_requests=n
    )
    assert np.allclose(np.sort(serial.finish_s), service * np.arange(1, n + 1))
    batched = simulate_trace(
        CFG.with_changes(max_num_seqs=n), wl, cost=cost, kv_capacity_tokens=BIG_KV, num_requests=n
    )
    assert np.nanmax(batched.finish_s) < 0.5 * np.nanmax(serial.finish_s)


def test_small_kv_cache_preempts_and_still_completes_everything() -> None:
    cost = LinearCost(a=0.005, b=1e-5)
    wl = Workload.fixed(200, 300, concurrency=16)
    cfg = CFG.with_changes(max_num_seqs=16)
    tight = simulate(cfg, wl, cost=cost, kv_capacity_tokens=2000, num_requests=64)
    roomy = simulate(cfg, wl, cost=cost, kv_capacity_tokens=BIG_KV, num_requests=64)
    assert tight.preemptions > 0
    assert roomy.preemptions == 0
    assert tight.completed == roomy.completed == 64
    assert tight.kv_usage_peak <= 1.0
    assert tight.kv_usage_peak > 0.9 > roomy.kv_usage_peak
    assert tight.throughput_tok_s < roomy.throughput_tok_s


def test_kv_blocks_and_running_set_are_all_released_at_the_end() -> None:
    wl = Workload(
        input_len=LengthDistribution(kind="lognormal", mean=300, std=200, max=1500),
        output_len=LengthDistribution(kind="exponential", mean=120, max=1000),
        arrival_rate_per_s=40.0,
    )
    reqs = build_requests(wl, 300, np.random.default_rng(3), prefix_caching=False, max_model_len=4000)
    engine = Engine(EngineLimits(32, 512, True, 4000 // 16), reqs, LinearCost())
    trace = engine.run()
    assert engine.used == 0 and engine.dec.n == 0 and engine.partial < 0 and not engine.waiting
    assert trace.preemptions > 0
    assert np.all(trace.finish_s >= trace.first_token_s) and np.all(trace.first_token_s > trace.arrival_s)


def test_bigger_token_budget_lowers_ttft_of_long_prompts() -> None:
    cost = LinearCost(a=0.01, b=1e-5)
    wl = Workload.fixed(4000, 50, rate=2.0)
    ttft = {
        budget: simulate(
            CFG.with_changes(max_num_batched_tokens=budget),
            wl,
            cost=cost,
            kv_capacity_tokens=BIG_KV,
            num_requests=200,
        ).ttft_ms.p50
        for budget in (512, 1024, 4096)
    }
    assert ttft[512] > ttft[1024] > ttft[4096]
    # one request alone: 8 chunks of 500 prompt tokens at budget 512 vs one 4000-token step
    alone = one_request(cost, 4000, 2, max_num_batched_tokens=512)
    assert alone.ttft_ms.p50 == pytest.approx((8 * cost.a + 4000 * cost.b) * 1e3)


def test_without_chunked_prefill_a_prompt_longer_than_the_budget_runs_whole() -> None:
    cost = LinearCost(a=0.01, b=1e-5)
    res = one_request(cost, 1000, 3, max_num_batched_tokens=256, enable_chunked_prefill=False)
    assert res.ttft_ms.p50 == pytest.approx((cost.a + 1000 * cost.b) * 1e3)
    assert res.completed == 1


def test_same_seed_reproduces_exactly_and_another_seed_differs() -> None:
    wl = Workload(
        input_len=LengthDistribution(kind="normal", mean=500, std=100),
        output_len=LengthDistribution(kind="normal", mean=100, std=30),
        arrival_rate_per_s=30.0,
    )
    runs = [
        simulate(CFG, wl, cost=LinearCost(c=1e-8), kv_capacity_tokens=20000, num_requests=300, seed=s)
        for s in (7, 7, 8)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_prefix_cache_hits_skip_prefill_compute() -> None:
    cost = LinearCost(a=0.01, b=1e-5)
    wl = Workload(
        input_len=LengthDistribution.fixed(1000),
        output_len=LengthDistribution.fixed(4),
        prefix_share=0.5,
        arrival_rate_per_s=1.0,
    )
    on = simulate(CFG, wl, cost=cost, kv_capacity_tokens=BIG_KV, num_requests=1)
    off = simulate(
        CFG.with_changes(enable_prefix_caching=False),
        wl,
        cost=cost,
        kv_capacity_tokens=BIG_KV,
        num_requests=1,
    )
    cached = (500 // 16) * 16  # full blocks only
    assert on.ttft_ms.p50 == pytest.approx((cost.a + cost.b * (1000 - cached)) * 1e3)
    assert off.ttft_ms.p50 == pytest.approx((cost.a + cost.b * 1000) * 1e3)


def test_closed_loop_sends_the_next_request_when_one_completes() -> None:
    wl = Workload(
        input_len=LengthDistribution(kind="uniform", mean=300, std=80),
        output_len=LengthDistribution(kind="uniform", mean=60, std=30),
        concurrency=4,
    )
    trace = simulate_trace(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, num_requests=40)
    assert np.all(trace.arrival_s[:4] == 0.0)
    assert np.allclose(trace.arrival_s[4:], np.sort(trace.finish_s)[:36])


@pytest.mark.parametrize(
    ("cfg", "kv"),
    [
        ({}, BIG_KV),
        ({"max_num_seqs": 24, "max_num_batched_tokens": 256}, 6000),
        ({"enable_chunked_prefill": False, "max_num_batched_tokens": 512}, 9000),
    ],
)
def test_decode_jumps_match_step_by_step_simulation(
    cfg: dict[str, object], kv: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    wl = Workload(
        input_len=LengthDistribution(kind="lognormal", mean=400, std=300, max=3000),
        output_len=LengthDistribution(kind="lognormal", mean=150, std=120, max=2000),
        arrival_rate_per_s=12.0,
        prefix_share=0.3,
    )
    config = CFG.with_changes(**cfg)
    cost = LinearCost(a=0.004, b=2e-5, c=2e-8)
    args = {"cost": cost, "kv_capacity_tokens": kv, "num_requests": 250, "seed": 1}
    jumped = simulate_trace(config, wl, **args)  # type: ignore[arg-type]
    looped = simulate_trace(config, wl, **{**args, "cost": ScalarOnlyCost(cost)})  # type: ignore[arg-type]
    monkeypatch.setattr(sim_engine.Engine, "_jump", lambda self: False)
    stepped = simulate_trace(config, wl, **args)  # type: ignore[arg-type]
    assert stepped.events > 2 * jumped.events
    for other in (jumped, looped):
        assert other.steps == stepped.steps
        assert other.preemptions == stepped.preemptions
        assert np.allclose(other.first_token_s, stepped.first_token_s, rtol=1e-9)
        assert np.allclose(other.finish_s, stepped.finish_s, rtol=1e-9)


def test_slo_goodput_and_attainment() -> None:
    wl = Workload.fixed(200, 50, rate=5.0)
    easy = simulate(
        CFG,
        wl,
        cost=LinearCost(),
        kv_capacity_tokens=BIG_KV,
        num_requests=200,
        slo=SLO(ttft_p99_ms=1e4, tpot_p99_ms=1e3),
    )
    hard = simulate(
        CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, num_requests=200, slo=SLO(ttft_p99_ms=1.0)
    )
    assert easy.slo_attainment == 1.0
    assert easy.goodput_per_s == pytest.approx(easy.request_throughput_per_s, rel=0.05)
    assert hard.slo_attainment == 0.0 and hard.goodput_per_s == 0.0
    assert (
        simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, num_requests=20).goodput_per_s is None
    )


def test_cost_per_million_tokens_scales_with_price_and_warmup_changes_only_latency_stats() -> None:
    wl = Workload.fixed(300, 80, rate=20.0)
    args = {"cost": LinearCost(), "kv_capacity_tokens": BIG_KV, "num_requests": 300}
    base = simulate(CFG, wl, price_per_hour=2.0, **args)  # type: ignore[arg-type]
    double = simulate(CFG, wl, price_per_hour=4.0, **args)  # type: ignore[arg-type]
    assert base.cost_per_1m_output_tokens > 0
    assert double.cost_per_1m_output_tokens == pytest.approx(2 * base.cost_per_1m_output_tokens)
    assert simulate(CFG, wl, **args).cost_per_1m_output_tokens == 0.0  # type: ignore[arg-type]
    warm = simulate(CFG, wl, price_per_hour=2.0, warmup_fraction=0.5, **args)  # type: ignore[arg-type]
    assert warm.throughput_tok_s == base.throughput_tok_s
    assert warm.ttft_ms != base.ttft_ms


def test_max_model_len_rejects_long_prompts_and_truncates_outputs() -> None:
    cost = LinearCost()
    rejected = simulate(
        CFG.with_changes(max_model_len=500),
        Workload.fixed(600, 10, rate=1.0),
        cost=cost,
        kv_capacity_tokens=BIG_KV,
        num_requests=3,
    )
    assert rejected.completed == 0
    cut = simulate_trace(
        CFG.with_changes(max_model_len=300),
        Workload.fixed(100, 1000, rate=1.0),
        cost=cost,
        kv_capacity_tokens=BIG_KV,
        num_requests=2,
    )
    assert list(cut.output_len) == [200, 200]


def test_bad_inputs_name_the_field() -> None:
    wl = Workload.fixed(100, 10, rate=1.0)
    with pytest.raises(InputError, match="max_num_batched_tokens"):
        simulate(
            CFG.with_changes(max_num_seqs=512, max_num_batched_tokens=256),
            wl,
            cost=LinearCost(),
            kv_capacity_tokens=BIG_KV,
        )
    with pytest.raises(InputError, match="kv_capacity_tokens"):
        simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=8)
    with pytest.raises(InputError, match="num_requests"):
        simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, num_requests=0)
    with pytest.raises(InputError, match="warmup_fraction"):
        simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, warmup_fraction=1.0)
    with pytest.raises(InputError, match="step time"):
        simulate(CFG, wl, cost=LinearCost(a=-1.0, b=0.0), kv_capacity_tokens=BIG_KV, num_requests=2)


def test_the_most_recently_admitted_request_is_preempted_and_recomputed() -> None:
    step = 0.01
    cost = LinearCost(a=step, b=0.0)  # every step takes the same time
    wl = Workload(
        input_len=LengthDistribution.fixed(32),
        output_len=LengthDistribution.fixed(40),
        trace=None,
        arrival_rate_per_s=1e6,
        arrival="uniform",
    )
    # 6 blocks: each request alone grows to ceil(71 / 16) = 5 blocks, both together do not fit
    trace = simulate_trace(CFG, wl, cost=cost, kv_capacity_tokens=6 * 16, num_requests=2)
    first, second = trace.finish_s
    assert trace.preemptions >= 1
    assert first == pytest.approx(40 * step)  # the older request never noticed the younger one
    assert second > first
    assert trace.first_token_s[1] == pytest.approx(2 * step)  # first token kept from before preemption


def test_trace_workload_replays_its_arrivals_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_len,output_len\n0.0,100,5\n10.0,300,3\n10.0,50,1\n")
    cost = LinearCost(a=0.01, b=1e-5)
    trace = simulate_trace(CFG, Workload(trace=str(path)), cost=cost, kv_capacity_tokens=BIG_KV)
    assert list(trace.arrival_s) == [0.0, 10.0, 10.0]
    assert list(trace.output_len) == [5, 3, 1]
    assert trace.first_token_s[0] == pytest.approx(cost.a + 100 * cost.b)
    # the two later requests share one prefill step of 350 tokens
    assert trace.first_token_s[1] == trace.first_token_s[2] == pytest.approx(10.0 + cost.a + 350 * cost.b)
    assert trace.finish_s[2] == trace.first_token_s[2]  # a one-token output ends at its first token


def test_workload_num_requests_is_the_default_count() -> None:
    wl = Workload(
        input_len=LengthDistribution.fixed(50),
        output_len=LengthDistribution.fixed(5),
        arrival_rate_per_s=5.0,
        num_requests=17,
    )
    assert simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV).num_requests == 17
    assert simulate(CFG, wl, cost=LinearCost(), kv_capacity_tokens=BIG_KV, num_requests=3).num_requests == 3
