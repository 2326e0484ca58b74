"""A manifest diff for a proposal when the cluster cannot render one (no dry run available).

The Kubernetes backend renders exact patches against the live object (``apply(dry_run=True)``).
This fallback writes RFC 6902 operations against a canonical vLLM Deployment: one op per changed
engine flag on the first container's args (by flag name), replicas, and the GPU node selector.
"""

from __future__ import annotations

from servewise.domain import Dtype, ServingConfig

GPU_LABEL = "nvidia.com/gpu.product"
_ARG_FLAGS = {
    "tensor_parallel": "--tensor-parallel-size",
    "max_num_seqs": "--max-num-seqs",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
}
ARGS = "/spec/template/spec/containers/0/args"


def _quant_args(config: ServingConfig) -> dict[str, str | None]:
    q = config.quantization
    weights = None if q.weights in (Dtype.BF16, Dtype.FP16) else (q.method or q.weights.value)
    kv = "fp8" if q.kv_cache == Dtype.FP8 else None
    return {"--quantization": weights, "--kv-cache-dtype": kv}


def _escape(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


def render_patch(current: ServingConfig, proposed: ServingConfig) -> list[dict[str, object]]:
    ops: list[dict[str, object]] = []
    for knob, flag in _ARG_FLAGS.items():
        old, new = getattr(current, knob), getattr(proposed, knob)
        if old != new:
            ops.append(
                {
                    "op": "replace" if old is not None else "add",
                    "path": f"{ARGS}/{flag}",
                    "value": None if new is None else str(new),
                }
            )
    old_q, new_q = _quant_args(current), _quant_args(proposed)
    for flag, new in new_q.items():
        if old_q[flag] != new:
            op = "remove" if new is None else ("add" if old_q[flag] is None else "replace")
            entry: dict[str, object] = {"op": op, "path": f"{ARGS}/{flag}"}
            if new is not None:
                entry["value"] = new
            ops.append(entry)
    if current.model != proposed.model:
        ops.append({"op": "replace", "path": f"{ARGS}/--model", "value": proposed.model})
    if current.gpu != proposed.gpu:
        ops.append(
            {
                "op": "replace",
                "path": f"/spec/template/spec/nodeSelector/{_escape(GPU_LABEL)}",
                "value": proposed.gpu,
            }
        )
    if current.gpus_per_replica != proposed.gpus_per_replica:
        ops.append(
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
                "value": str(proposed.gpus_per_replica),
            }
        )
    if current.replicas != proposed.replicas:
        ops.append({"op": "replace", "path": "/spec/replicas", "value": proposed.replicas})
    return ops
