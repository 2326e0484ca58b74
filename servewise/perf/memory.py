"""Per-GPU memory plan of a replica: weights, runtime/activations, KV cache, capacity.

Follows vLLM's accounting: the engine may use ``gpu_memory_utilization`` of the GPU; weights and
the peak activation of a profiling run with ``max_num_batched_tokens`` tokens (plus CUDA graphs,
NCCL buffers and the CUDA context) come first, and what is left becomes paged KV cache.

TensorRT-LLM sizes its KV cache the other way round: ``kv_cache_free_gpu_mem_fraction`` (default
0.9) of the memory still free after weights and activations. For a ``trtllm`` config,
``gpu_memory_utilization`` carries that fraction.
"""

from __future__ import annotations

from servewise.domain import Engine, HardwareSpec, MemoryPlan, ModelSpec, ServingConfig
from servewise.perf.shapes import GIB, ReplicaShape, replica_shape

FIXED_RUNTIME_GIB = 1.0  # CUDA context + CUDA graphs + NCCL buffers, per GPU (typical vLLM logs)
BLOCK_SIZE = 16  # tokens per KV block (vLLM default)


def activation_bytes(m: ModelSpec, shape: ReplicaShape, config: ServingConfig) -> float:
    """Peak activation memory of the profiling forward pass, per GPU."""
    tokens = config.max_num_batched_tokens
    ffn_width = (m.moe_intermediate_size or m.intermediate_size) * max(1, m.experts_per_token)
    ffn_width = max(ffn_width, m.intermediate_size)
    per_token = (4 * m.hidden_size + 2 * ffn_width / shape.tp) * 2.0  # bf16 intermediates
    logits = min(tokens, config.max_num_seqs) * m.vocab_size / shape.tp * 4.0  # fp32 logits of sampled rows
    return tokens * per_token + logits + FIXED_RUNTIME_GIB * GIB


def plan_memory(
    m: ModelSpec, hw: HardwareSpec, config: ServingConfig, seq_len: int | None = None
) -> MemoryPlan:
    """The memory plan; ``fits`` is False with a reason when the configuration cannot run.

    ``seq_len`` is the total length (prompt + output) of the sequences to serve; it defaults to
    ``config.max_model_len`` or the model's max context.
    """
    shape = replica_shape(m, hw, config)
    need_len = seq_len or config.max_model_len or m.max_context
    weights = shape.weight_bytes_per_gpu
    act = activation_bytes(m, shape, config)
    if config.engine == Engine.TRTLLM:  # a fraction of what weights and activations leave free
        budget = hw.memory_gb * GIB
        kv_bytes = max(budget - weights - act, 0.0) * config.gpu_memory_utilization
    else:  # vLLM, SGLang, TGI: a fraction of the whole GPU for everything
        budget = hw.memory_gb * GIB * config.gpu_memory_utilization
        kv_bytes = max(budget - weights - act, 0.0)
    kv_tokens_raw = int(kv_bytes // shape.kv_bytes_per_token)
    kv_tokens = kv_tokens_raw // BLOCK_SIZE * BLOCK_SIZE
    reason = None
    if weights > budget:
        reason = (
            f"weights need {weights / GIB:.1f} GiB per GPU but only {budget / GIB:.1f} GiB "
            f"({config.gpu_memory_utilization:.0%} of {hw.memory_gb:g} GiB on {hw.id}) are usable at "
            f"tensor_parallel={config.tensor_parallel}; raise tensor_parallel or quantize the weights"
        )
    elif weights + act > budget:
        reason = (
            f"weights ({weights / GIB:.1f} GiB) plus runtime memory ({act / GIB:.1f} GiB, from "
            f"max_num_batched_tokens={config.max_num_batched_tokens}) exceed {budget / GIB:.1f} GiB per GPU"
        )
    elif kv_tokens < need_len:
        reason = (
            f"KV cache holds {kv_tokens} tokens per replica, fewer than one sequence of {need_len} tokens; "
            f"lower max_model_len, quantize the KV cache or raise tensor_parallel"
        )
    max_seqs = min(config.max_num_seqs, kv_tokens // max(need_len, 1)) if reason is None else 0
    return MemoryPlan(
        weights_gb=weights / GIB,
        activation_gb=act / GIB,
        kv_cache_gb=kv_bytes / GIB,
        kv_bytes_per_token=shape.kv_bytes_per_token,
        kv_capacity_tokens=kv_tokens,
        max_concurrent_seqs=max_seqs,
        fits=reason is None,
        reason=reason,
    )
