"""Analytical performance model of one LLM-serving replica.

Per-iteration latency of a mixed prefill/decode batch is a roofline over the kernels of one
forward pass (GEMMs: compute plus weight streaming; attention: KV reads for decode, FLOPs for
prefill; tensor-parallel all-reduces over the interconnect; fixed engine overheads), scaled by
fitted ``Efficiency`` factors. Steady states follow from it:

- ``predict``: closed loop, a fixed number of requests in flight (what benchmarks measure);
- ``predict_load``: open loop at a Poisson arrival rate (what a production fleet sees).

All step-time arithmetic uses numpy ufuncs, so the same code runs on scalars and, in
``servewise.perf.batch``, on arrays of thousands of configurations at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy.special import gammaincc

from servewise.domain import HardwareSpec, MemoryPlan, PerfPrediction, ServingConfig
from servewise.errors import DoesNotFitError, InputError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.efficiency import Efficiency, efficiency_on
from servewise.perf.memory import plan_memory
from servewise.perf.shapes import ReplicaShape, replica_shape

MAX_LEN = 2_000_000
# KV tokens an engine's admission sets aside per running request, as a share of its output length.
# vLLM and SGLang admit on the sequence's current size and preempt when blocks run out, so running
# sequences hold ``i + o/2`` tokens on average. TensorRT-LLM's default capacity scheduler
# (GUARANTEED_NO_EVICT) and TGI's token budget reserve the prompt plus the whole output up front.
OUTPUT_RESERVED = {"trtllm": 1.0, "tgi": 1.0}


def output_reserved(engine: str) -> float:
    """Share of a request's output tokens ``engine``'s admission holds KV-cache blocks for."""
    return OUTPUT_RESERVED.get(engine, 0.5)


def kv_tokens_per_request(engine: str, input_len: Any, output_len: Any) -> Any:
    """KV-cache tokens one admitted request takes from the capacity under ``engine``'s admission."""
    return input_len + output_reserved(engine) * output_len


def step_time(
    s: ReplicaShape,
    eff: Efficiency,
    prefill_tokens: Any,
    prefill_attn_pairs: Any,
    decode_seqs: Any,
    decode_kv_tokens: Any,
    prefill_seqs: Any = 0.0,
) -> Any:
    """Seconds for one iteration. Arguments may be floats or numpy arrays (broadcast)."""
    tokens = prefill_tokens + decode_seqs
    sampled = decode_seqs + prefill_seqs
    # GEMMs: weights streamed once per step per pipeline stage; FLOPs grow with tokens.
    compute_eff = eff.compute * np.where(s.int4_weights, eff.int4_compute_penalty, 1.0)
    compute_eff = compute_eff * np.where(s.emulated_weights, eff.int4_compute_penalty, 1.0)
    flops = s.linear_flops_per_token * tokens + s.lm_head_flops_per_sampled * sampled
    t_compute = flops / (s.compute_tflops * 1e12 * compute_eff)
    # MoE: expected distinct experts touched per layer by `tokens` tokens with top-k routing
    # (dense models have expert_bytes_per_gpu == 0, so the term vanishes).
    frac_untouched = (1.0 - s.experts_per_token / np.maximum(s.num_experts, 1)) ** tokens
    expert_bytes = s.expert_bytes_per_gpu * s.pp * s.num_experts * (1.0 - frac_untouched)
    t_weights = (s.dense_weight_bytes_per_gpu * s.pp + expert_bytes) / (s.memory_bw * eff.memory)
    # Compute and weight streaming are added, not overlapped (max): near the ridge point a GEMM
    # reaches neither peak, and the additive form cross-validates better on public measurements
    # (`servewise perf crossval --split train`: 20.7% vs 23.0% out-of-fold throughput MAPE with max()).
    t_gemm = t_compute + t_weights
    # Attention: decode reads the KV cache; prefill is FLOP-bound (flash attention).
    t_attn_decode = decode_kv_tokens * s.kv_bytes_per_token * s.pp / (s.memory_bw * eff.attention_memory)
    t_attn_prefill = prefill_attn_pairs * s.attn_flops_per_pair / (s.tflops_16 * 1e12 * eff.attention_compute)
    # Tensor parallel: two all-reduces of the hidden states per layer (ring algorithm); none at TP=1.
    msg = tokens * s.hidden * 2.0
    ring = 2.0 * (s.tp - 1) / s.tp * msg / (s.interconnect_bw * eff.comm)
    t_comm = 2.0 * s.num_layers * (eff.comm_latency_us * 1e-6 * (s.tp > 1) + ring)
    t_overhead = eff.step_overhead_ms * 1e-3 + eff.seq_overhead_us * 1e-6 * sampled
    t_overhead = t_overhead + eff.layer_overhead_us * 1e-6 * s.num_layers
    return t_gemm + t_attn_decode + t_attn_prefill + t_comm + t_overhead


@dataclass(frozen=True)
class IterationCostModel:
    """``servewise.perf.interfaces.IterationCost`` backed by the analytical model."""

    shape: ReplicaShape
    efficiency: Efficiency

    @classmethod
    def for_config(
        cls, config: ServingConfig, efficiency: Efficiency | None = None, catalog: Catalog | None = None
    ) -> IterationCostModel:
        cat = catalog or get_catalog()
        hw = cat.gpu(config.gpu)
        shape = replica_shape(cat.model(config.model), hw, config)
        return cls(shape, efficiency or efficiency_on(config.engine.value, hw))

    def step_time_s(
        self, prefill_tokens: int, prefill_attn_pairs: float, decode_seqs: int, decode_kv_tokens: int
    ) -> float:
        prefill_seqs = 1.0 if prefill_tokens else 0.0
        return float(
            step_time(
                self.shape,
                self.efficiency,
                prefill_tokens,
                prefill_attn_pairs,
                decode_seqs,
                decode_kv_tokens,
                prefill_seqs,
            )
        )


def _check_lengths(input_len: int, output_len: int) -> None:
    if not 1 <= input_len <= MAX_LEN:
        raise InputError(f"input_len must be in 1..{MAX_LEN}, got {input_len}", field="input_len")
    if not 1 <= output_len <= MAX_LEN:
        raise InputError(f"output_len must be in 1..{MAX_LEN}, got {output_len}", field="output_len")


@dataclass(frozen=True)
class _Cycle:
    """Steady state of the engine with ``running`` sequences admitted (internal).

    Per request the engine does ``i`` prompt tokens (in ``k`` chunks) and ``o - 1`` decode steps,
    so in steady state prompt tokens per step ``p`` and decoding sequences ``b`` keep the ratio
    ``p / b = i / (o - 1)`` within the token budget. The average step time spreads the extra cost
    of chunk-carrying steps over all steps, so ``(o - 1) * t_step`` plus the first chunk equals the
    request's real time on the GPU.
    """

    b: Any  # decoding sequences per step
    prefill_per_step: Any  # prompt tokens per step
    t_step: Any  # average seconds per step (= TPOT)
    t_first: Any  # seconds from admission to first token for a lone prompt
    rate: Any  # requests completed per second


def _cycle(
    s: ReplicaShape, eff: Efficiency, budget: Any, chunked: Any, running: Any, i: Any, o: Any
) -> _Cycle:
    """Works on floats or numpy arrays (one element per configuration)."""
    d = o - 1.0
    b = running
    chunk = i
    k = 1.0
    for _ in range(3):  # chunk size depends on b, b on the number of chunks: a short fixed point
        chunk = np.where(chunked, np.minimum(i, np.maximum(budget - b, 16.0)), i)
        k = np.ceil(i / chunk)
        b = running * d / (d + k)
    p = np.where(d > 0, b * i / np.maximum(d, 1e-9), np.minimum(running * i, budget))
    over = b + p > budget  # prompt admission limited by the token budget
    b = np.where(over, budget * d / (i + d), b)
    p = np.where(over, budget - b, p)
    ctx = b * (i + d / 2.0)
    t_dec = step_time(s, eff, 0.0, 0.0, b, ctx, 0.0)
    t_chunk = step_time(s, eff, chunk, chunk * i / 2.0, b, ctx, 1.0)
    t_full = step_time(s, eff, p, p * i / 2.0, b, ctx, p / i)
    t = np.where(p <= chunk, t_dec + (p / chunk) * (t_chunk - t_dec), t_full)
    # A new prompt waits on average half a step for the engine to finish the step in flight, but
    # only if other sequences keep the engine busy (a lone request starts at once).
    align = 0.5 * t * np.maximum(running - 1.0, 0.0) / np.maximum(running, 1.0)
    # the prompt's last chunk carries only what is left of it (a prompt one token over the chunk
    # is one full chunk and one token, not two full chunks)
    rest = i - (k - 1.0) * chunk
    t_last = t_dec + (rest / chunk) * (t_chunk - t_dec)
    t_first = align + (k - 1.0) * t_chunk + t_last
    return _Cycle(b=b, prefill_per_step=p, t_step=t, t_first=t_first, rate=p / (i * t))


@dataclass(frozen=True)
class _Replica:
    """Everything about one replica that does not depend on the load (internal)."""

    hw: HardwareSpec
    eff: Efficiency
    mem: MemoryPlan
    shape: ReplicaShape


def _replica(
    config: ServingConfig,
    catalog: Catalog | None,
    efficiency: Efficiency | None,
    input_len: int,
    output_len: int,
) -> _Replica:
    """Resolve ids, check lengths and memory; raise with the reason when the config cannot run."""
    _check_lengths(input_len, output_len)
    cat = catalog or get_catalog()
    model, hw = cat.model(config.model), cat.gpu(config.gpu)
    eff = efficiency or efficiency_on(config.engine.value, hw)
    mem = plan_memory(model, hw, config, seq_len=input_len + output_len)
    if not mem.fits:
        raise DoesNotFitError(f"{config.model} on {config.tensor_parallel}x {hw.id}: {mem.reason}")
    return _Replica(hw, eff, mem, replica_shape(model, hw, config))


@dataclass(frozen=True)
class ClosedLoop:
    """Closed-loop steady state (internal core of ``predict``, reused by calibration)."""

    running: float
    kv_seqs: int  # sequences the KV capacity admits at once under the engine's admission
    decode_batch: float
    tpot_s: float
    ttft_s: float
    throughput_tok_s: float
    request_rate_per_s: float


def closed_loop(
    s: ReplicaShape, eff: Efficiency, config: ServingConfig, kv_capacity_tokens: int, i: int, o: int, c: int
) -> ClosedLoop:
    """Steady state with ``c`` requests in flight, from precomputed shape and KV capacity.

    Little's law closes the loop: ``c`` requests in flight at ``rate`` requests/s spend
    ``c / rate`` seconds each, so queueing behind ``max_num_seqs`` or the KV capacity shows up in
    TTFT without a separate queue model.
    """
    kv_seqs = max(1, int(kv_capacity_tokens // kv_tokens_per_request(config.engine.value, i, o)))
    running = float(min(c, config.max_num_seqs, kv_seqs))
    cy = _cycle(s, eff, config.max_num_batched_tokens, config.enable_chunked_prefill, running, i, o)
    rate, t_step = float(cy.rate), float(cy.t_step)
    ttft = max(c / rate - (o - 1) * t_step, float(cy.t_first))
    return ClosedLoop(running, kv_seqs, float(cy.b), t_step, ttft, rate * o, rate)


def predict(
    config: ServingConfig,
    *,
    input_len: int,
    output_len: int,
    concurrency: int,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
) -> PerfPrediction:
    """Closed-loop steady state of ONE replica with ``concurrency`` requests in flight."""
    if concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}", field="concurrency")
    rep = _replica(config, catalog, efficiency, input_len, output_len)
    hw, eff, mem, s = rep.hw, rep.eff, rep.mem, rep.shape
    i, o = input_len, output_len
    cl = closed_loop(s, eff, config, mem.kv_capacity_tokens, i, o, concurrency)
    running, b, tpot, ttft = cl.running, cl.decode_batch, cl.tpot_s, cl.ttft_s
    kv_seqs = cl.kv_seqs
    req_rate = cl.request_rate_per_s
    e2e = ttft + (o - 1) * tpot
    throughput = cl.throughput_tok_s
    # Memory- vs compute-bound decode step.
    t_c = s.linear_flops_per_token * b / (s.compute_tflops * 1e12 * eff.compute)
    t_m = s.dense_weight_bytes_per_gpu * s.pp / (s.memory_bw * eff.memory)
    cost_h = hw.price_per_gpu_hour * config.gpus_per_replica
    notes = []
    if running < concurrency:
        limit = "max_num_seqs" if config.max_num_seqs <= kv_seqs else "KV-cache capacity"
        notes.append(f"{concurrency - running:.0f} requests wait: {limit} admits {running:.0f}")
    return PerfPrediction(
        throughput_tok_s=throughput,
        ttft_ms=ttft * 1e3,
        tpot_ms=tpot * 1e3,
        e2e_ms=e2e * 1e3,
        request_throughput_per_s=req_rate,
        concurrency=running,
        batch_decode_step_ms=tpot * 1e3,
        bound="compute" if t_c > t_m else "memory",
        memory=mem,
        cost_per_hour=cost_h,
        cost_per_1m_output_tokens=cost_h / (throughput * 3600.0) * 1e6,
        notes=notes,
    )


class LoadPrediction(BaseModel):
    """Open-loop steady state of one replica at a Poisson arrival rate."""

    arrival_rate_per_s: float
    capacity_rate_per_s: float
    saturated: bool
    running: float
    waiting: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    throughput_tok_s: float
    prompt_tokens_per_s: float
    kv_usage: float
    gpu_utilization: float
    preemptions_per_s: float


SATURATED_QUEUE = 10.0  # batches of requests queued when the load is at or above capacity


def admission_queue(busy: float, slots: float) -> float:
    """Mean number of requests waiting for a batch slot (Erlang C, M/M/c): ``slots`` concurrent
    sequences (max_num_seqs or the KV capacity, whichever is less), ``busy`` of them taken on
    average (the offered load in Erlangs). A continuous-batching engine admits a request at once
    while a slot is free, so the queue stays empty until the running set nears its cap.

    The single-server M/M/1 queue the model used before (rho^2 / (1 - rho) waiting at utilization
    rho) put 0.9 requests in the queue at 60 % of capacity: for llama-3.1-8b fp8 on an L40S
    (1000/300 tokens, 512 sequences) that predicted a 209 ms mean TTFT where the simulator
    measures 92 ms, and calibration bent the compute and memory factors to explain the gap."""
    c = max(int(math.floor(slots)), 1)
    a = min(max(busy, 0.0), c * (1.0 - 1e-9))
    if a <= 0.0:
        return 0.0
    # Erlang B = Poisson(a) pmf(c) / cdf(c), then Erlang C; in logs, stable for hundreds of slots.
    log_pmf = c * math.log(a) - a - math.lgamma(c + 1)
    cdf = float(gammaincc(c + 1, a))
    erlang_b = min(math.exp(log_pmf) / cdf, 1.0) if cdf > 0 else 1.0
    p_wait = erlang_b / (1.0 - (a / c) * (1.0 - erlang_b))
    return p_wait * a / (c - a)


def predict_load(
    config: ServingConfig,
    *,
    input_len: int,
    output_len: int,
    arrival_rate_per_s: float,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
) -> LoadPrediction:
    """Open-loop steady state of ONE replica at ``arrival_rate_per_s`` (requests/s to this replica)."""
    if arrival_rate_per_s < 0:
        raise InputError("arrival_rate_per_s must be >= 0", field="arrival_rate_per_s")
    rep = _replica(config, catalog, efficiency, input_len, output_len)
    eff, mem, s = rep.eff, rep.mem, rep.shape
    i, o = input_len, output_len
    avg_ctx = i + o / 2.0
    kv_seqs = max(1.0, mem.kv_capacity_tokens / kv_tokens_per_request(config.engine.value, i, o))
    r_max = min(float(config.max_num_seqs), kv_seqs)
    cap = _cycle(s, eff, config.max_num_batched_tokens, config.enable_chunked_prefill, r_max, i, o).rate
    lam = arrival_rate_per_s
    saturated = lam >= cap
    if saturated:
        r = r_max
    else:  # the number of running sequences at which the completion rate equals the arrival rate
        # Vectorized passes over a grid (the rate grows with the running count) instead of a scalar
        # bisection, then linear interpolation inside the last bracket.
        lo, hi, rate_lo, rate_hi = 0.0, r_max, 0.0, cap
        for _ in range(3):
            grid = np.linspace(lo, hi, 33)[1:]
            rates = _cycle(
                s,
                eff,
                config.max_num_batched_tokens,
                config.enable_chunked_prefill,
                np.maximum(grid, 1e-6),
                i,
                o,
            ).rate
            k = min(int(np.searchsorted(rates, lam)), len(grid) - 1)  # first grid point reaching lam
            if k > 0:
                lo, rate_lo = float(grid[k - 1]), float(rates[k - 1])
            hi, rate_hi = float(grid[k]), float(rates[k])
        r = lo + (hi - lo) * (lam - rate_lo) / max(rate_hi - rate_lo, 1e-12)
    cy = _cycle(s, eff, config.max_num_batched_tokens, config.enable_chunked_prefill, max(r, 1e-6), i, o)
    b = cy.b
    # Waiting for admission: a request waits only while all r_max batch slots are taken. Steady state
    # has no queue length at or above capacity; the model stands in a backlog of SATURATED_QUEUE batches,
    # and caps the queue just below capacity there too (Erlang C grows without bound as the load nears
    # the cap: at 0.999 of capacity it put 1e9 requests in the queue, a 41-year TTFT, where just above
    # capacity the model said 380 s, and a deployment observed near its capacity (sim:demo's
    # support-bot) was fitted a TTFT tail factor of 6e-5, predicting a 0.013 ms TTFT p99 elsewhere).
    backlog = max(r_max, 1.0) * SATURATED_QUEUE
    waiting = min(admission_queue(r, r_max), backlog) if not saturated else backlog
    served = min(lam, cap)
    queue_wait = waiting / served if served > 0 else 0.0
    budget = float(config.max_num_batched_tokens)
    rho_p = min(cy.prefill_per_step / max(budget - b, 1.0), 0.95)
    ttft = cy.t_first * (1.0 + rho_p / (2.0 * (1.0 - rho_p))) + queue_wait
    e2e = ttft + (o - 1) * cy.t_step
    kv_usage = min(1.0, (b * avg_ctx) / max(mem.kv_capacity_tokens, 1))
    # DCGM GPU_UTIL: fraction of time a kernel runs ~ probability the engine has work (M/G/inf).
    util = 1.0 - math.exp(-served * e2e / 1e0) if served > 0 else 0.0
    preempt = served * max(0.0, kv_usage - 0.97) * 10.0 if kv_seqs < config.max_num_seqs else 0.0
    return LoadPrediction(
        arrival_rate_per_s=lam,
        capacity_rate_per_s=cap,
        saturated=saturated,
        running=r,
        waiting=waiting,
        ttft_ms=ttft * 1e3,
        tpot_ms=cy.t_step * 1e3,
        e2e_ms=e2e * 1e3,
        throughput_tok_s=served * o,
        prompt_tokens_per_s=served * i,
        kv_usage=kv_usage,
        gpu_utilization=min(util, 1.0),
        preemptions_per_s=preempt,
    )
