"""Behaviour of the analytical model: memory, parallelism checks, roofline trends, steady states."""

from __future__ import annotations

import numpy as np
import pytest

from servewise.domain import Quantization, ServingConfig, Workload
from servewise.errors import DoesNotFitError, InputError
from servewise.perf.analytical import IterationCostModel, admission_queue, predict, predict_load
from servewise.perf.batch import predict_batch
from servewise.perf.catalog import get_catalog
from servewise.perf.efficiency import Efficiency
from servewise.perf.memory import plan_memory
from servewise.perf.simulator import simulate_config

EFF = Efficiency()  # fixed factors so these tests do not move when the calibration is refitted


def cfg(**kw: object) -> ServingConfig:
    base: dict[str, object] = {"model": "llama-3.1-8b", "gpu": "h100-sxm"}
    base.update(kw)
    return ServingConfig.model_validate(base)


def test_70b_does_not_fit_one_l4_and_says_why() -> None:
    cat = get_catalog()
    plan = plan_memory(cat.model("llama-3.1-70b"), cat.gpu("l4"), cfg(model="llama-3.1-70b", gpu="l4"), 2048)
    assert not plan.fits
    assert "weights need" in (plan.reason or "") and "tensor_parallel" in (plan.reason or "")
    with pytest.raises(DoesNotFitError, match="weights need"):
        predict(
            cfg(model="llama-3.1-70b", gpu="l4"), input_len=512, output_len=128, concurrency=1, efficiency=EFF
        )


def test_fp8_kv_cache_doubles_capacity_and_int4_shrinks_weights() -> None:
    cat = get_catalog()
    m, hw = cat.model("llama-3.1-70b"), cat.gpu("h100-sxm")
    bf16 = plan_memory(m, hw, cfg(model=m.id, tensor_parallel=4), 4096)
    fp8kv = plan_memory(
        m, hw, cfg(model=m.id, tensor_parallel=4, quantization=Quantization(kv_cache="fp8")), 4096
    )
    awq = plan_memory(
        m, hw, cfg(model=m.id, tensor_parallel=4, quantization=Quantization(weights="int4")), 4096
    )
    assert fp8kv.kv_bytes_per_token == pytest.approx(bf16.kv_bytes_per_token / 2)
    assert fp8kv.kv_capacity_tokens == pytest.approx(2 * bf16.kv_capacity_tokens, rel=0.01)
    assert awq.weights_gb < 0.3 * bf16.weights_gb
    # Llama-3.1-70B: 80 layers x 8 KV heads x 128 dims x 2 (K,V) x 2 bytes = 320 KiB per token, / TP 4
    assert bf16.kv_bytes_per_token == 80 * 2 * 128 * 2 * 2


@pytest.mark.parametrize(
    ("model", "tp", "field"),
    [("qwen2.5-7b", 8, "tensor_parallel"), ("llama-3.1-8b", 16, "tensor_parallel")],
)
def test_impossible_parallelism_names_the_field(model: str, tp: int, field: str) -> None:
    with pytest.raises(InputError) as err:
        predict(
            cfg(model=model, tensor_parallel=tp), input_len=100, output_len=10, concurrency=1, efficiency=EFF
        )
    assert err.value.field == field


@pytest.mark.parametrize(("field", "value"), [("input_len", -5), ("output_len", 0), ("concurrency", 0)])
def test_absurd_lengths_are_rejected(field: str, value: int) -> None:
    args = {"input_len": 100, "output_len": 10, "concurrency": 1, field: value}
    with pytest.raises(InputError) as err:
        predict(cfg(), efficiency=EFF, **args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_throughput_rises_and_tpot_grows_with_concurrency() -> None:
    preds = [
        predict(cfg(), input_len=1000, output_len=500, concurrency=c, efficiency=EFF) for c in (1, 8, 64, 256)
    ]
    tput = [p.throughput_tok_s for p in preds]
    tpot = [p.tpot_ms for p in preds]
    assert tput == sorted(tput) and tput[-1] > 10 * tput[0]
    assert tpot == sorted(tpot)
    assert preds[0].bound == "memory"


def test_single_stream_decode_is_weight_streaming_bound() -> None:
    # batch-1 decode reads every weight once: TPOT ~ bytes / (bandwidth * efficiency) + overhead
    p = predict(cfg(), input_len=128, output_len=512, concurrency=1, efficiency=EFF)
    hw = get_catalog().gpu("h100-sxm")
    weight_s = p.memory.weights_gb * 2**30 / (hw.memory_bandwidth_gbs * 1e9 * EFF.memory)
    assert weight_s * 1e3 < p.tpot_ms < weight_s * 1e3 + 3.0


def test_hypothetical_2x_bandwidth_chip_speeds_up_decode() -> None:
    cat = get_catalog()
    fast = cat.gpu("h100-sxm").scaled("h100-2xbw", memory_bandwidth_gbs=2.0)
    cat2 = cat.with_hardware([fast])
    base = predict(cfg(), input_len=512, output_len=256, concurrency=1, efficiency=EFF, catalog=cat2)
    quick = predict(
        cfg(gpu="h100-2xbw"), input_len=512, output_len=256, concurrency=1, efficiency=EFF, catalog=cat2
    )
    assert 1.4 < base.tpot_ms / quick.tpot_ms < 2.0


def test_tensor_parallel_lowers_70b_tpot_and_fp8_raises_throughput() -> None:
    tp2 = predict(
        cfg(model="llama-3.1-70b", tensor_parallel=2),
        input_len=512,
        output_len=256,
        concurrency=1,
        efficiency=EFF,
    )
    tp8 = predict(
        cfg(model="llama-3.1-70b", tensor_parallel=8),
        input_len=512,
        output_len=256,
        concurrency=1,
        efficiency=EFF,
    )
    assert tp8.tpot_ms < 0.6 * tp2.tpot_ms
    bf16 = predict(cfg(), input_len=512, output_len=256, concurrency=64, efficiency=EFF)
    fp8 = predict(
        cfg(quantization=Quantization(weights="fp8", kv_cache="fp8")),
        input_len=512,
        output_len=256,
        concurrency=64,
        efficiency=EFF,
    )
    assert fp8.throughput_tok_s > 1.2 * bf16.throughput_tok_s


def test_moe_decode_reads_only_active_experts() -> None:
    cost = IterationCostModel.for_config(cfg(model="mixtral-8x7b", tensor_parallel=2), efficiency=EFF)
    one = cost.step_time_s(0, 0.0, 1, 512)
    many = cost.step_time_s(0, 0.0, 64, 64 * 512)
    # one token touches 2 of 8 experts; 64 tokens touch nearly all of them
    assert many > 2.0 * one


def test_littles_law_holds_in_the_closed_loop() -> None:
    p = predict(cfg(max_num_seqs=32), input_len=2000, output_len=200, concurrency=128, efficiency=EFF)
    assert p.concurrency == 32
    assert p.request_throughput_per_s * p.e2e_ms / 1e3 == pytest.approx(128, rel=1e-6)
    assert p.notes and "max_num_seqs" in p.notes[0]


def test_batch_matches_scalar_predictions() -> None:
    configs = [
        cfg(),
        cfg(model="llama-3.1-70b", tensor_parallel=4),
        cfg(model="mixtral-8x7b", tensor_parallel=2),
        cfg(model="llama-3.1-70b", gpu="l4"),
    ]
    batch = predict_batch(
        configs, input_len=1000, output_len=300, concurrency=np.array([1, 16, 64, 4]), efficiency=EFF
    )
    for k, c in enumerate(configs[:3]):
        p = predict(c, input_len=1000, output_len=300, concurrency=[1, 16, 64][k], efficiency=EFF)
        assert batch.throughput_tok_s[k] == pytest.approx(p.throughput_tok_s)
        assert batch.ttft_ms[k] == pytest.approx(p.ttft_ms)
        assert batch.tpot_ms[k] == pytest.approx(p.tpot_ms)
    assert not batch.fits[3] and "weights need" in (batch.reasons[3] or "")
    assert np.isnan(batch.throughput_tok_s[3])


def test_open_loop_load_saturates_at_capacity() -> None:
    low = predict_load(cfg(), input_len=1000, output_len=200, arrival_rate_per_s=1.0, efficiency=EFF)
    mid = predict_load(
        cfg(),
        input_len=1000,
        output_len=200,
        arrival_rate_per_s=low.capacity_rate_per_s * 0.8,
        efficiency=EFF,
    )
    over = predict_load(
        cfg(),
        input_len=1000,
        output_len=200,
        arrival_rate_per_s=low.capacity_rate_per_s * 1.5,
        efficiency=EFF,
    )
    assert not low.saturated and not mid.saturated and over.saturated
    assert low.ttft_ms < mid.ttft_ms < over.ttft_ms
    assert low.kv_usage < mid.kv_usage
    assert low.throughput_tok_s == pytest.approx(200.0)
    assert over.throughput_tok_s == pytest.approx(low.capacity_rate_per_s * 200.0)


def test_admission_queue_is_erlang_c_over_the_batch_slots() -> None:
    # one slot is the M/M/1 queue: rho^2 / (1 - rho) waiting
    assert admission_queue(0.5, 1) == pytest.approx(0.5)
    assert admission_queue(0.8, 1) == pytest.approx(0.8**2 / 0.2)
    # a continuous-batching engine with free slots admits at once; the queue grows near the cap
    assert admission_queue(150, 512) < 1e-9
    assert admission_queue(40, 64) < admission_queue(55, 64) < admission_queue(62, 64)


def test_ttft_grows_with_load_and_stays_finite_at_the_capacity_edge() -> None:
    """Just below capacity Erlang C's queue grows without bound; the model's backlog must not jump
    above the one it stands in at saturation (0.999 of capacity read a 41-year TTFT, above it 380 s,
    and a deployment observed there was calibrated to a TTFT p99 of 0.013 ms elsewhere)."""
    config = cfg(gpu="l4", max_num_seqs=128)
    cap = predict_load(config, input_len=1200, output_len=300, arrival_rate_per_s=0.1, efficiency=EFF)
    rates = [cap.capacity_rate_per_s * f for f in (0.5, 0.9, 0.99, 0.999, 0.999999, 1.0, 1.5)]
    ttfts = [
        predict_load(config, input_len=1200, output_len=300, arrival_rate_per_s=r, efficiency=EFF).ttft_ms
        for r in rates
    ]
    assert ttfts[0] < ttfts[1] < ttfts[2], ttfts
    # from 0.99 of capacity on, the queue is the saturated backlog: within a few % of saturation's TTFT
    assert all(abs(t / ttfts[-1] - 1) < 0.05 for t in ttfts[2:]), ttfts


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.8])
def test_open_loop_ttft_agrees_with_the_simulator_below_saturation(fraction: float) -> None:
    """Mean TTFT of one replica at a fraction of its capacity, against the discrete-event simulator
    at the same efficiency. The M/M/1 admission queue the model had before read 209 ms at 60 %
    where the simulator reads 92 ms."""
    config = ServingConfig(
        model="llama-3.1-8b", gpu="l40s", quantization=Quantization(weights="fp8", kv_cache="fp8")
    )
    cap = predict_load(config, input_len=1000, output_len=300, arrival_rate_per_s=0.01).capacity_rate_per_s
    rate = fraction * cap
    model = predict_load(config, input_len=1000, output_len=300, arrival_rate_per_s=rate)
    sim = simulate_config(
        config, Workload.fixed(1000, 300, rate=rate), num_requests=1200, seed=3, warmup_fraction=0.2
    )
    assert model.ttft_ms == pytest.approx(sim.ttft_ms.mean, rel=0.3)
    assert model.tpot_ms == pytest.approx(sim.tpot_ms.mean, rel=0.1)


def test_trtllm_admission_reserves_whole_outputs_and_its_kv_pool_comes_from_free_memory() -> None:
    """TensorRT-LLM's GUARANTEED_NO_EVICT reserves prompt + full output per request; vLLM admits on
    current size (i + o/2 on average). Its KV pool is a fraction of the memory left after weights."""
    cat = get_catalog()
    m, hw = cat.model("llama-3.1-70b"), cat.gpu("h100-sxm")
    i, o = 128, 4096
    configs = {e: cfg(model=m.id, tensor_parallel=2, engine=e, max_num_seqs=4096) for e in ("vllm", "trtllm")}
    plans = {e: plan_memory(m, hw, c, i + o) for e, c in configs.items()}
    free_gb = hw.memory_gb - plans["trtllm"].weights_gb - plans["trtllm"].activation_gb
    assert plans["trtllm"].kv_cache_gb == pytest.approx(0.9 * free_gb, rel=1e-6)
    assert plans["vllm"].kv_cache_gb == pytest.approx(free_gb - 0.1 * hw.memory_gb, rel=1e-6)
    # KV-bound load: TensorRT-LLM runs capacity / (i + o) sequences, vLLM capacity / (i + o/2).
    for engine, per_request in (("vllm", i + o / 2), ("trtllm", i + o)):
        running = predict(
            configs[engine], input_len=i, output_len=o, concurrency=4000, efficiency=EFF
        ).concurrency
        assert running == plans[engine].kv_capacity_tokens // per_request


def test_each_layer_adds_a_fixed_cost_to_every_step() -> None:
    """Kernel launches and small per-layer ops cost time whatever the batch: 80 layers pay more than 32."""
    for model, layers in (("llama-3.1-8b", 32), ("llama-3.1-70b", 80)):
        config = cfg(model=model, tensor_parallel=4)
        base = IterationCostModel.for_config(config, Efficiency(layer_overhead_us=0.0)).step_time_s(
            0, 0, 1, 512
        )
        slow = IterationCostModel.for_config(config, Efficiency(layer_overhead_us=50.0)).step_time_s(
            0, 0, 1, 512
        )
        assert slow - base == pytest.approx(50e-6 * layers, rel=1e-9)


def test_a_gpus_vendor_picks_its_calibration() -> None:
    """``efficiency_on`` resolves the GPU's vendor: an MI300X gets the ``vllm@amd`` fit, not a lookup
    keyed by the GPU id (which silently fell back to the NVIDIA-fitted ``vllm``)."""
    from servewise.perf.efficiency import default_efficiency, efficiency_on

    cat = get_catalog()
    assert efficiency_on("vllm", cat.gpu("mi300x")) == default_efficiency("vllm", "amd")
    assert efficiency_on("vllm", cat.gpu("h100-sxm")) == default_efficiency("vllm", "nvidia")
    assert efficiency_on("vllm", cat.gpu("mi300x")) != efficiency_on("vllm", cat.gpu("h100-sxm"))


def test_a_prompt_one_token_over_the_budget_costs_one_more_step_not_a_second_chunk() -> None:
    """A lone 8192-token prompt under an 8192-token budget (one decoding slot taken) is a chunk of
    8191 and one of 1 token: about one decode step more than 8191 tokens, not twice the prefill."""
    ttft = {
        n: predict(cfg(), input_len=n, output_len=64, concurrency=1, efficiency=EFF).ttft_ms
        for n in (8191, 8192, 16382, 16383)
    }
    tpot = predict(cfg(), input_len=8191, output_len=64, concurrency=1, efficiency=EFF).tpot_ms
    assert 0 < ttft[8192] - ttft[8191] <= 1.5 * tpot
    assert 0 < ttft[16383] - ttft[16382] <= 1.5 * tpot
