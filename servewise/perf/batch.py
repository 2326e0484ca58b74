"""Vectorized analytical predictions over many configurations at once (sweeps, optimizer pruning).

The expensive per-configuration work (catalog lookups, shapes, memory plans) depends only on
(model, GPU, parallelism, quantization, memory knobs), which a sweep repeats many times; it is
computed once per distinct key and gathered into arrays. The closed-loop arithmetic then runs as
numpy over every configuration together, using the same ``_cycle`` code as ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from servewise.domain import ServingConfig
from servewise.errors import ServewiseError
from servewise.perf.analytical import _cycle, output_reserved
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.efficiency import Efficiency, efficiency_on
from servewise.perf.memory import plan_memory
from servewise.perf.shapes import ReplicaShape, replica_shape


@dataclass(frozen=True)
class BatchPrediction:
    """One array element per configuration; rows that do not fit have ``fits == False`` and NaNs."""

    throughput_tok_s: np.ndarray
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    request_rate_per_s: np.ndarray
    cost_per_hour: np.ndarray
    kv_capacity_tokens: np.ndarray
    fits: np.ndarray
    reasons: list[str | None]

    def __len__(self) -> int:
        return int(self.fits.shape[0])


def _stack(shapes: Sequence[ReplicaShape], index: np.ndarray) -> ReplicaShape:
    """A ReplicaShape whose fields are arrays gathered by ``index`` (struct of arrays)."""
    columns: dict[str, Any] = {}
    for f in fields(ReplicaShape):
        column = np.array([getattr(s, f.name) for s in shapes])
        columns[f.name] = column[index]
    return ReplicaShape(**columns)


def predict_batch(
    configs: Sequence[ServingConfig],
    *,
    input_len: Any,
    output_len: Any,
    concurrency: Any,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
) -> BatchPrediction:
    """Closed-loop predictions for every config (lengths/concurrency: scalars or arrays)."""
    cat = catalog or get_catalog()
    n = len(configs)
    i = np.broadcast_to(np.asarray(input_len, dtype=float), (n,))
    o = np.broadcast_to(np.asarray(output_len, dtype=float), (n,))
    c = np.broadcast_to(np.asarray(concurrency, dtype=float), (n,))
    keys: dict[tuple[Any, ...], int] = {}
    shapes: list[ReplicaShape | None] = []
    key_info: list[tuple[float, float, str | None]] = []  # (kv tokens, $/h, reason)
    index = np.empty(n, dtype=np.int64)
    eff_engine = efficiency
    for row, cfg in enumerate(configs):
        key = (
            cfg.model,
            cfg.gpu,
            cfg.tensor_parallel,
            cfg.pipeline_parallel,
            cfg.quantization,
            cfg.max_num_batched_tokens,
            cfg.max_num_seqs,
            cfg.gpu_memory_utilization,
        )
        slot = keys.get(key)
        if slot is None:
            slot = keys[key] = len(shapes)
            try:
                model, hw = cat.model(cfg.model), cat.gpu(cfg.gpu)
                shape = replica_shape(model, hw, cfg)
                mem = plan_memory(model, hw, cfg, seq_len=1)
                reason = (
                    None
                    if mem.kv_capacity_tokens > 0 and mem.reason is None
                    else (mem.reason or "no KV cache")
                )
                key_info.append(
                    (float(mem.kv_capacity_tokens), hw.price_per_gpu_hour * cfg.gpus_per_replica, reason)
                )
                if eff_engine is None:
                    eff_engine = efficiency_on(cfg.engine.value, hw)
            except (ServewiseError, ValueError) as exc:
                shape = None  # placeholder row, masked out below
                key_info.append((0.0, 0.0, str(exc)))
            shapes.append(shape)
        index[row] = slot
    valid_shape = next((s for s in shapes if s is not None), None)
    if valid_shape is None:
        reasons = [key_info[k][2] for k in index]
        nan = np.full(n, np.nan)
        return BatchPrediction(nan, nan, nan, nan, nan, np.zeros(n), np.zeros(n, dtype=bool), reasons)
    s = _stack([sh if sh is not None else valid_shape for sh in shapes], index)
    kv = np.array([k[0] for k in key_info])[index]
    price = np.array([k[1] for k in key_info])[index]
    reasons = [key_info[k][2] for k in index]
    budget = np.array([cfg.max_num_batched_tokens for cfg in configs], dtype=float)
    max_seqs = np.array([cfg.max_num_seqs for cfg in configs], dtype=float)
    chunked = np.array([cfg.enable_chunked_prefill for cfg in configs])
    reserved = np.array([output_reserved(cfg.engine.value) for cfg in configs])
    return _closed_loop_arrays(
        s, eff_engine or Efficiency(), budget, chunked, max_seqs, kv, price, i, o, c, reasons, reserved
    )


def _closed_loop_arrays(
    s: ReplicaShape,
    eff: Efficiency,
    budget: np.ndarray,
    chunked: np.ndarray,
    max_seqs: np.ndarray,
    kv: np.ndarray,
    price: np.ndarray,
    i: np.ndarray,
    o: np.ndarray,
    c: np.ndarray,
    reasons: list[str | None],
    reserved: np.ndarray,
) -> BatchPrediction:
    kv_seqs = np.floor(kv / (i + reserved * o))
    fits = (kv >= i + o) & np.array([r is None for r in reasons])
    reasons = [
        r if r is not None or f else f"KV cache holds {int(k)} tokens, fewer than one sequence"
        for r, f, k in zip(reasons, fits, kv, strict=True)
    ]
    running = np.maximum(np.minimum(np.minimum(c, max_seqs), kv_seqs), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cy = _cycle(s, eff, budget, chunked, running, i, o)
        ttft = np.maximum(c / cy.rate - (o - 1) * cy.t_step, cy.t_first)
        throughput = cy.rate * o
    nan = np.where(fits, 1.0, np.nan)
    return BatchPrediction(
        throughput_tok_s=throughput * nan,
        ttft_ms=ttft * 1e3 * nan,
        tpot_ms=cy.t_step * 1e3 * nan,
        request_rate_per_s=cy.rate * nan,
        cost_per_hour=price,
        kv_capacity_tokens=kv,
        fits=fits,
        reasons=reasons,
    )
