"""Per-GPU sizes of one replica: parameters, bytes, FLOPs per token, KV bytes per token.

Everything the analytical model and the memory plan need from (model, gpu, parallelism,
quantization) is computed here once, as a frozen dataclass of floats, so that the hot path only
does arithmetic (and the same formulas run vectorized over numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

from servewise.domain import HardwareSpec, ModelSpec, Quantization, ServingConfig
from servewise.domain.quantization import Dtype
from servewise.errors import DoesNotFitError, InputError

GIB = float(1 << 30)
# Group-wise scales/zeros of int4 weight-only formats (group size 128, fp16 scale + zero).
INT4_SCALE_OVERHEAD = 1.0 + 2.5 / 64.0  # 64 bytes of int4 per group, ~2.5 bytes of scale/zero


def attention_params_per_layer(m: ModelSpec) -> float:
    h = m.hidden_size
    if m.uses_mla:
        q = h * m.num_heads * (m.head_dim + m.rope_head_dim)
        kv_a = h * (m.kv_lora_rank + m.rope_head_dim)
        kv_b = m.kv_lora_rank * m.num_heads * 2 * m.head_dim
        o = m.num_heads * m.head_dim * h
        return float(q + kv_a + kv_b + o)
    return float(h * m.head_dim * (2 * m.num_heads + 2 * m.num_kv_heads))


def ffn_params(m: ModelSpec) -> tuple[float, float, float]:
    """(total FFN params, FFN params active per token, params of one routed expert) over all layers."""
    h = m.hidden_size
    dense_layer = 3.0 * h * m.intermediate_size
    if not m.is_moe:
        return dense_layer * m.num_layers, dense_layer * m.num_layers, 0.0
    expert = 3.0 * h * (m.moe_intermediate_size or m.intermediate_size)
    moe_layers = m.num_layers - m.first_dense_layers
    router = h * m.num_experts
    total = m.first_dense_layers * dense_layer + moe_layers * (
        (m.num_experts + m.num_shared_experts) * expert + router
    )
    active = m.first_dense_layers * dense_layer + moe_layers * (
        (m.experts_per_token + m.num_shared_experts) * expert + router
    )
    return total, active, expert


def estimate_params(m: ModelSpec) -> float:
    """Total parameter count from the architecture (embeddings included)."""
    ffn_total, _, _ = ffn_params(m)
    embed = m.vocab_size * m.hidden_size * (1 if m.tie_embeddings else 2)
    return attention_params_per_layer(m) * m.num_layers + ffn_total + embed


def check_parallelism(m: ModelSpec, hw: HardwareSpec, tp: int, pp: int) -> None:
    """Reject parallelism the engines cannot run, naming the field."""
    if m.num_heads % tp:
        raise InputError(
            f"tensor_parallel={tp} does not divide {m.id}'s {m.num_heads} attention heads",
            field="tensor_parallel",
        )
    if not m.uses_mla and (m.num_kv_heads % tp if tp <= m.num_kv_heads else tp % m.num_kv_heads):
        raise InputError(
            f"tensor_parallel={tp} and {m.id}'s {m.num_kv_heads} KV heads: one must divide the other",
            field="tensor_parallel",
        )
    if tp > hw.max_gpus_per_node:
        raise InputError(
            f"tensor_parallel={tp} exceeds the {hw.max_gpus_per_node} GPUs of one {hw.id} node",
            field="tensor_parallel",
        )
    if pp > m.num_layers:
        raise InputError(
            f"pipeline_parallel={pp} exceeds {m.id}'s {m.num_layers} layers", field="pipeline_parallel"
        )


@dataclass(frozen=True)
class ReplicaShape:
    """Per-GPU quantities of one replica (TP x PP GPUs). Units: bytes, FLOPs, seconds-free."""

    tp: int
    pp: int
    num_layers: int
    hidden: int
    vocab: int
    # weights
    weight_bytes_per_gpu: float  # everything resident on one GPU
    dense_weight_bytes_per_gpu: float  # read every step regardless of batch (non-expert linear + lm_head)
    expert_bytes_per_gpu: float  # one routed expert, all MoE layers, one GPU's shard
    moe_layers: int
    num_experts: int
    experts_per_token: int
    # compute per token, per GPU
    linear_flops_per_token: float  # 2 * active linear params (excluding lm_head) / (tp * pp) * pp
    lm_head_flops_per_sampled: float
    attn_flops_per_pair: float  # per query-key pair, all layers, per GPU
    # KV cache
    kv_bytes_per_token: float  # per GPU (its layers and its KV heads)
    # dtypes / peaks
    compute_tflops: float
    tflops_16: float
    memory_bw: float  # bytes/s
    interconnect_bw: float  # bytes/s
    int4_weights: bool
    emulated_weights: bool  # weight format without native compute support (e.g. fp8 on A100)


def replica_shape(m: ModelSpec, hw: HardwareSpec, config: ServingConfig) -> ReplicaShape:
    tp, pp = config.tensor_parallel, config.pipeline_parallel
    check_parallelism(m, hw, tp, pp)
    q: Quantization = config.quantization
    wb = q.weights.bytes * (INT4_SCALE_OVERHEAD if q.weights in (Dtype.INT4, Dtype.FP4) else 1.0)
    h = m.hidden_size
    attn_total = attention_params_per_layer(m) * m.num_layers
    ffn_total, ffn_active, expert = ffn_params(m)
    moe_layers = (m.num_layers - m.first_dense_layers) if m.is_moe else 0
    routed_total = expert * m.num_experts * moe_layers
    embed = m.vocab_size * h * 2.0  # input embeddings stay 16-bit
    lm_head = m.vocab_size * h * 2.0  # lm_head stays 16-bit in vLLM quantized checkpoints
    linear_total = attn_total + ffn_total
    shards = tp * pp
    weight_bytes = (linear_total * wb + (embed if not m.tie_embeddings else 0.0) + lm_head) / shards
    dense_bytes = ((linear_total - routed_total) * wb + lm_head) / shards
    expert_bytes = expert * moe_layers * wb / shards
    if m.uses_mla:
        kv_elems = (m.kv_lora_rank + m.rope_head_dim) * m.num_layers / pp  # latent cache, replicated over TP
        attn_pair = 2.0 * m.num_heads / tp * (2 * m.kv_lora_rank + m.rope_head_dim) * m.num_layers
    else:
        kv_heads_gpu = max(1, m.num_kv_heads // tp)
        kv_elems = 2.0 * kv_heads_gpu * m.head_dim * m.num_layers / pp
        attn_pair = 4.0 * m.num_heads / tp * m.head_dim * m.num_layers
    compute_dtype = q.compute_dtype
    emulated = not hw.supports(q.weights) and q.weights not in (Dtype.INT4, Dtype.BF16, Dtype.FP16)
    if emulated:
        compute_dtype = Dtype.BF16
    if not hw.supports(q.kv_cache) and q.kv_cache not in (Dtype.BF16, Dtype.FP16, Dtype.FP8):
        raise InputError(f"{hw.id} cannot hold a {q.kv_cache.value} KV cache", field="kv_dtype")
    return ReplicaShape(
        tp=tp,
        pp=pp,
        num_layers=m.num_layers,
        hidden=h,
        vocab=m.vocab_size,
        weight_bytes_per_gpu=weight_bytes,
        dense_weight_bytes_per_gpu=dense_bytes,
        expert_bytes_per_gpu=expert_bytes,
        moe_layers=moe_layers,
        num_experts=m.num_experts,
        experts_per_token=m.experts_per_token,
        linear_flops_per_token=2.0 * (attn_total + ffn_active) / tp,
        lm_head_flops_per_sampled=2.0 * m.vocab_size * h / tp,
        attn_flops_per_pair=attn_pair,
        kv_bytes_per_token=kv_elems * q.kv_cache.bytes,
        compute_tflops=hw.peak_tflops(compute_dtype),
        tflops_16=hw.peak_tflops(Dtype.BF16),
        memory_bw=hw.memory_bandwidth_gbs * 1e9,
        interconnect_bw=hw.interconnect_gbs * 1e9,
        int4_weights=q.weights in (Dtype.INT4,),
        emulated_weights=emulated,
    )


def require_fit(ok: bool, reason: str) -> None:
    if not ok:
        raise DoesNotFitError(reason)
