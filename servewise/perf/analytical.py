"""Analytical performance model of one LLM-serving replica.

Per-iteration latency of a mixed prefill/decode batch is a roofline over the kernels of one
forward pass (GEMMs: compute vs weight streaming; attention: KV reads for decode, FLOPs for
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

from servewise.domain import PerfPrediction, ServingConfig
from servewise.errors import DoesNotFitError, InputError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.efficiency import Efficiency, default_efficiency
from servewise.perf.memory import plan_memory
from servewise.perf.shapes import ReplicaShape, replica_shape

MAX_LEN = 2_000_000


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
    compute_eff = eff.compute * (eff.int4_compute_penalty if s.int4_weights else 1.0)
    if s.emulated_weights:
        compute_eff = compute_eff * eff.int4_compute_penalty
    flops = s.linear_flops_per_token * tokens + s.lm_head_flops_per_sampled * sampled
    t_compute = flops / (s.compute_tflops * 1e12 * compute_eff)
    weight_bytes = s.dense_weight_bytes_per_gpu * s.pp
    if s.moe_layers:
        # Expected distinct experts touched per layer by `tokens` tokens with top-k routing.
        frac_untouched = (1.0 - s.experts_per_token / s.num_experts) ** tokens
        weight_bytes = weight_bytes + s.expert_bytes_per_gpu * s.pp * s.num_experts * (1.0 - frac_untouched)
    t_weights = weight_bytes / (s.memory_bw * eff.memory)
    t_gemm = np.maximum(t_compute, t_weights)
    # Attention: decode reads the KV cache; prefill is FLOP-bound (flash attention).
    t_attn_decode = decode_kv_tokens * s.kv_bytes_per_token * s.pp / (s.memory_bw * eff.attention_memory)
    t_attn_prefill = prefill_attn_pairs * s.attn_flops_per_pair / (s.tflops_16 * 1e12 * eff.attention_compute)
    # Tensor parallel: two all-reduces of the hidden states per layer (ring algorithm).
    if s.tp > 1:
        msg = tokens * s.hidden * 2.0
        per_allreduce = eff.comm_latency_us * 1e-6 + 2.0 * (s.tp - 1) / s.tp * msg / (
            s.interconnect_bw * eff.comm
        )
        t_comm = 2.0 * s.num_layers * per_allreduce
    else:
        t_comm = 0.0
    t_overhead = eff.step_overhead_ms * 1e-3 + eff.seq_overhead_us * 1e-6 * sampled
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
        shape = replica_shape(cat.model(config.model), cat.gpu(config.gpu), config)
        return cls(shape, efficiency or default_efficiency(config.engine.value, config.gpu))

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
class _Steady:
    """Steady state of the engine with `b` sequences decoding (internal)."""

    b: float  # decoding sequences per step
    prefill_per_step: float  # prompt tokens per step
    t_step: float  # seconds per step (= TPOT)
    t_first: float  # seconds from admission to first token (prefill chunks + the first step)
    chunk: float


def _steady(s: ReplicaShape, eff: Efficiency, cfg: ServingConfig, b: float, i: int, o: int) -> _Steady:
    budget = float(cfg.max_num_batched_tokens)
    # Each request brings i prompt tokens per o decode tokens: p = b*i/o prompt tokens per step.
    prefill = min(b * i / o, max(budget - b, 0.0))
    avg_ctx = i + o / 2.0
    # A prompt is processed in chunks of what the budget leaves after the decodes.
    chunk = max(min(float(i), budget - b), 1.0) if cfg.enable_chunked_prefill else float(i)
    pairs = prefill * (i / 2.0)
    t = float(step_time(s, eff, prefill, pairs, b, b * avg_ctx, prefill / max(i, 1)))
    n_chunks = math.ceil(i / chunk)
    t_chunk = float(step_time(s, eff, chunk, chunk * (i / 2.0), b, b * avg_ctx, 1.0))
    return _Steady(b=b, prefill_per_step=prefill, t_step=t, t_first=n_chunks * t_chunk, chunk=chunk)


def _resolve(config: ServingConfig, catalog: Catalog | None, efficiency: Efficiency | None):  # type: ignore[no-untyped-def]
    cat = catalog or get_catalog()
    model, hw = cat.model(config.model), cat.gpu(config.gpu)
    eff = efficiency or default_efficiency(config.engine.value, hw.id)
    return cat, model, hw, eff


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
    _check_lengths(input_len, output_len)
    if concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}", field="concurrency")
    _, model, hw, eff = _resolve(config, catalog, efficiency)
    i, o = input_len, output_len
    mem = plan_memory(model, hw, config, seq_len=i + o)
    if not mem.fits:
        raise DoesNotFitError(f"{config.model} on {config.tensor_parallel}x {hw.id}: {mem.reason}")
    s = replica_shape(model, hw, config)
    kv_seqs = max(1, int(mem.kv_capacity_tokens // (i + o / 2.0)))
    running = float(min(concurrency, config.max_num_seqs, kv_seqs))
    budget = float(config.max_num_batched_tokens)
    # When chunked prefill saturates the token budget, admission (not batch size) limits decode.
    b = min(running * o / (o + 1.0), budget * o / (i + o))
    st = _steady(s, eff, config, max(b, 1e-9), i, o)
    tpot = st.t_step
    req_rate = b / (o * tpot)
    # TTFT: half a step to align with the loop + the prompt's chunks + waiting for the prefill slot
    # (M/D/1 over the budget left after decodes) + queueing behind max_num_seqs / KV capacity.
    rho = min(st.prefill_per_step / max(budget - b, 1.0), 0.95)
    prefill_wait = rho / (2.0 * (1.0 - rho)) * st.t_first
    queue_wait = max(concurrency - running, 0.0) / req_rate
    ttft = 0.5 * tpot + st.t_first + prefill_wait + queue_wait
    e2e = ttft + (o - 1) * tpot
    throughput = b / tpot
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
    _check_lengths(input_len, output_len)
    if arrival_rate_per_s < 0:
        raise InputError("arrival_rate_per_s must be >= 0", field="arrival_rate_per_s")
    _, model, hw, eff = _resolve(config, catalog, efficiency)
    i, o = input_len, output_len
    mem = plan_memory(model, hw, config, seq_len=i + o)
    if not mem.fits:
        raise DoesNotFitError(f"{config.model} on {config.tensor_parallel}x {hw.id}: {mem.reason}")
    s = replica_shape(model, hw, config)
    avg_ctx = i + o / 2.0
    kv_seqs = max(1.0, mem.kv_capacity_tokens / avg_ctx)
    budget = float(config.max_num_batched_tokens)
    b_max = min(float(config.max_num_seqs), kv_seqs, budget * o / (i + o))
    cap = b_max / (o * _steady(s, eff, config, b_max, i, o).t_step)
    lam = arrival_rate_per_s
    saturated = lam >= cap
    if saturated:
        b = b_max
    else:  # solve b = lam * o * T(b) by bisection (T grows with b)
        lo, hi = 0.0, b_max
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if lam * o * _steady(s, eff, config, max(mid, 1e-9), i, o).t_step > mid:
                lo = mid
            else:
                hi = mid
        b = hi
    st = _steady(s, eff, config, max(b, 1e-9), i, o)
    rho = min(lam / cap, 0.99)
    # M/M/1-style waiting for admission near capacity; grows without bound when saturated.
    waiting = rho * rho / (1.0 - rho) if not saturated else max(b_max, 1.0) * 10.0
    served = min(lam, cap)
    queue_wait = waiting / served if served > 0 else 0.0
    rho_p = min(st.prefill_per_step / max(budget - b, 1.0), 0.95)
    ttft = 0.5 * st.t_step + st.t_first * (1.0 + rho_p / (2.0 * (1.0 - rho_p))) + queue_wait
    e2e = ttft + (o - 1) * st.t_step
    kv_usage = min(1.0, (b * avg_ctx) / max(mem.kv_capacity_tokens, 1))
    # DCGM GPU_UTIL: fraction of time a kernel runs ~ probability the engine has work (M/G/inf).
    util = 1.0 - math.exp(-served * e2e / 1e0) if served > 0 else 0.0
    preempt = served * max(0.0, kv_usage - 0.97) * 10.0 if kv_seqs < config.max_num_seqs else 0.0
    return LoadPrediction(
        arrival_rate_per_s=lam,
        capacity_rate_per_s=cap,
        saturated=saturated,
        running=b * (1.0 + 1.0 / o),
        waiting=waiting,
        ttft_ms=ttft * 1e3,
        tpot_ms=st.t_step * 1e3,
        e2e_ms=e2e * 1e3,
        throughput_tok_s=served * o,
        prompt_tokens_per_s=served * i,
        kv_usage=kv_usage,
        gpu_utilization=min(util, 1.0),
        preemptions_per_s=preempt,
    )
