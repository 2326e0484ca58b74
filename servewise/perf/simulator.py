"""Discrete-event simulator of one replica serving requests with continuous batching (vLLM V1 style).

``simulate`` runs a workload through the scheduler model in :mod:`servewise.perf.sim_engine` with a
pluggable ``IterationCost`` and returns a ``SimulationResult``; ``simulate_config`` builds the cost,
KV capacity and price of a ``ServingConfig`` from the catalog and the analytical model. The capacity
search lives in :mod:`servewise.perf.sim_capacity` (``max_sustainable_rate``, re-exported here).
See docs/simulator.md for the model and its assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servewise.domain import SLO, ServingConfig, SimulationResult, Workload
from servewise.errors import DoesNotFitError, InputError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.efficiency import Efficiency
from servewise.perf.interfaces import IterationCost
from servewise.perf.sim_engine import EngineLimits, EngineTrace, run_engine
from servewise.perf.sim_metrics import summarize
from servewise.perf.sim_requests import BLOCK_SIZE, build_requests, read_trace

DEFAULT_NUM_REQUESTS = 1000


@dataclass(frozen=True)
class ReplicaSetup:
    """What the simulator needs to know about a replica besides its scheduler knobs."""

    cost: IterationCost
    kv_capacity_tokens: int
    price_per_hour: float


def simulate_trace(
    config: ServingConfig,
    workload: Workload,
    *,
    cost: IterationCost,
    kv_capacity_tokens: int,
    num_requests: int | None = None,
    seed: int = 0,
) -> EngineTrace:
    """Run the event loop and return the raw per-request trace (see ``simulate`` for the arguments)."""
    if kv_capacity_tokens < BLOCK_SIZE:
        raise InputError(
            f"must hold at least one {BLOCK_SIZE}-token block, got {kv_capacity_tokens}",
            field="kv_capacity_tokens",
        )
    n = num_requests if num_requests is not None else (workload.num_requests or DEFAULT_NUM_REQUESTS)
    kv_blocks = kv_capacity_tokens // BLOCK_SIZE
    max_len = kv_blocks * BLOCK_SIZE
    if config.max_model_len is not None:
        max_len = min(max_len, config.max_model_len)
    rng = np.random.default_rng(seed)
    requests = build_requests(
        workload, n, rng, prefix_caching=config.enable_prefix_caching, max_model_len=max_len
    )
    limits = EngineLimits(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        chunked_prefill=config.enable_chunked_prefill,
        kv_blocks=kv_blocks,
    )
    return run_engine(limits, requests, cost)


def simulate(
    config: ServingConfig,
    workload: Workload,
    *,
    cost: IterationCost,
    kv_capacity_tokens: int,
    num_requests: int | None = None,
    seed: int = 0,
    slo: SLO | None = None,
    price_per_hour: float = 0.0,
    warmup_fraction: float = 0.0,
) -> SimulationResult:
    """Simulate ``num_requests`` requests of ``workload`` on one replica of ``config``.

    ``cost`` gives each engine step's duration; ``kv_capacity_tokens`` is the replica's paged KV cache
    (``MemoryPlan.kv_capacity_tokens``); ``num_requests`` defaults to ``workload.num_requests`` or
    1000. The same ``seed`` gives the same result. Latency statistics skip the first
    ``warmup_fraction`` of requests; ``price_per_hour`` (the replica's, all GPUs) gives the $ per 1M
    output tokens; ``slo`` adds goodput and SLO attainment.
    """
    trace = simulate_trace(
        config,
        workload,
        cost=cost,
        kv_capacity_tokens=kv_capacity_tokens,
        num_requests=num_requests,
        seed=seed,
    )
    return summarize(trace, slo=slo, price_per_hour=price_per_hour, warmup_fraction=warmup_fraction)


def replica_setup(
    config: ServingConfig,
    workload: Workload | None = None,
    *,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
) -> ReplicaSetup:
    """Cost model, KV capacity and $/hour of one replica of ``config`` from the catalog.

    Raises ``DoesNotFitError`` when the configuration cannot hold one typical request of ``workload``
    (mean prompt + output length, or the median of a trace).
    """
    from servewise.perf.analytical import IterationCostModel
    from servewise.perf.memory import plan_memory

    cat = catalog or get_catalog()
    model, hw = cat.model(config.model), cat.gpu(config.gpu)
    seq_len = None
    if workload is not None and workload.trace is not None:
        _, inputs, outputs = read_trace(workload.trace)
        seq_len = int(np.median(inputs + outputs))
    elif workload is not None:
        seq_len = max(int(round(workload.input_len.mean + workload.output_len.mean)), 1)
    plan = plan_memory(model, hw, config, seq_len=seq_len)
    if not plan.fits:
        raise DoesNotFitError(f"{config.model} on {config.gpus_per_replica}x {hw.id}: {plan.reason}")
    cost = ArrayStepCost(IterationCostModel.for_config(config, efficiency=efficiency, catalog=cat))
    return ReplicaSetup(
        cost=cost,
        kv_capacity_tokens=plan.kv_capacity_tokens,
        price_per_hour=hw.price_per_gpu_hour * config.gpus_per_replica,
    )


@dataclass(frozen=True)
class ArrayStepCost:
    """The analytical step cost, also answering for an array of ``decode_kv_tokens`` at once.

    ``IterationCostModel.step_time_s`` returns a Python float; its underlying ``step_time`` is
    numpy-broadcasting, so this adapter lets the engine cost a run of decode steps in one call.
    """

    model: Any  # servewise.perf.analytical.IterationCostModel

    def step_time_s(
        self, prefill_tokens: int, prefill_attn_pairs: float, decode_seqs: int, decode_kv_tokens: int
    ) -> float:
        from servewise.perf.analytical import step_time

        t = step_time(
            self.model.shape,
            self.model.efficiency,
            prefill_tokens,
            prefill_attn_pairs,
            decode_seqs,
            decode_kv_tokens,
            1.0 if prefill_tokens else 0.0,
        )
        return t if isinstance(t, np.ndarray) else float(t)  # type: ignore[return-value]


def simulate_config(
    config: ServingConfig,
    workload: Workload,
    *,
    num_requests: int | None = None,
    seed: int = 0,
    slo: SLO | None = None,
    efficiency: Efficiency | None = None,
    catalog: Catalog | None = None,
    warmup_fraction: float = 0.0,
) -> SimulationResult:
    """``simulate`` with the cost, KV capacity and price of ``config`` taken from the catalog."""
    setup = replica_setup(config, workload, efficiency=efficiency, catalog=catalog)
    return simulate(
        config,
        workload,
        cost=setup.cost,
        kv_capacity_tokens=setup.kv_capacity_tokens,
        num_requests=num_requests,
        seed=seed,
        slo=slo,
        price_per_hour=setup.price_per_hour,
        warmup_fraction=warmup_fraction,
    )


def __getattr__(name: str) -> Any:
    # ``max_sustainable_rate`` is part of this module's public face but lives in sim_capacity,
    # which itself builds on this module.
    if name == "max_sustainable_rate":
        from servewise.perf.sim_capacity import max_sustainable_rate

        return max_sustainable_rate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
