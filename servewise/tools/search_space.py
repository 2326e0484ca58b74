"""The configuration space the optimizer searches, and the policy that bounds it.

A *shape* is one replica's configuration (model variant, quantization, GPU, TP, batching knobs) in
one node pool; the replica count is sized per shape from the load. Shapes that cannot fit in
memory, that the GPU cannot run (fp8 weights on a GPU without fp8), that fall below the quality
floor, or that the pool cannot hold are never generated.

An edge pool's network latency is its own site's users': it is offered only to a deployment whose
users are there (``domain.fleet.serves_site``), i.e. whose ``servewise.io/site`` label names the pool's zone (or
the pool), or that runs in an edge pool of that zone now. Cloud pools are offered to every deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel, Field

from servewise.domain import Dtype, InferenceDeployment, NodePool, Quantization, ServingConfig
from servewise.domain.fleet import SITE_LABEL, edge_site, serves_site
from servewise.errors import InputError, ServewiseError
from servewise.perf.catalog import Catalog, quality_score
from servewise.perf.memory import plan_memory

WEIGHT_VARIANTS: dict[str, Quantization] = {
    "bf16": Quantization(),
    "fp8": Quantization(weights=Dtype.FP8),
    "int8": Quantization(weights=Dtype.INT8),
    "w4a16": Quantization(weights=Dtype.INT4, method="w4a16"),
    "awq": Quantization(weights=Dtype.INT4, method="awq"),
}


class SearchPolicy(BaseModel):
    """What the optimizer may change and how sure it must be."""

    quality_floor_drop: float = Field(
        default=1.0, ge=0, description="max score points below the current variant"
    )
    allow_unscored_variants: bool = Field(
        default=False, description="quantized variants with no published score"
    )
    headroom: float = Field(default=0.2, ge=0, le=5, description="fraction added to the observed peak rate")
    slo_margin: float = Field(
        default=0.92, gt=0, le=2, description="predicted p99 must be <= margin x objective"
    )
    weights: list[str] = Field(default_factory=lambda: ["bf16", "fp8", "int8", "w4a16"])
    kv_cache: list[Dtype] = Field(default_factory=lambda: [Dtype.BF16, Dtype.FP8])
    tensor_parallel: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    max_num_seqs: list[int] = Field(default_factory=lambda: [64, 128, 256, 512])
    max_num_batched_tokens: list[int] = Field(default_factory=lambda: [2048, 8192, 16384])
    gpus: list[str] | None = Field(default=None, description="restrict to these GPU ids (None = every pool)")
    max_replicas: int = Field(default=64, ge=1)
    benchmark_budget: int = Field(default=8, ge=0, le=64)
    benchmark_requests: int = Field(
        default=1000, ge=1, le=100_000, description="requests per benchmark run (vLLM's benchmark default)"
    )
    confirm_requests: int = Field(
        default=10_000,
        ge=1,
        le=100_000,
        description="requests of the run that confirms a narrow pass (a p99 over 10 000 strays ~3 % run"
        " to run, over 2000 ~7 %: bench/confirm_length.py)",
    )
    max_benchmark_minutes: float | None = Field(
        default=None,
        gt=0,
        description="a confirming run sends at most this many minutes of the replica's share of the load"
        " (at 0.2 req/s, 10 000 requests take 14 h): it is shortened to fit, never below"
        " benchmark_requests, and judged by its spread at that length; None: confirm_requests",
    )
    confirm_above: float = Field(
        default=0.85, gt=0, le=1, description="a pass whose worst p99 / objective exceeds this is confirmed"
    )
    confirm_margin: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="a confirming run must measure within this x each objective (its p99 reads a few % low)",
    )
    confidence_z: float = Field(
        default=1.65,
        ge=0,
        le=5,
        description="a pass counts when each measured p99 x (1 + z x its simulated run-to-run spread)"
        " is within the objective; otherwise a longer run confirms it (0: trust single runs)",
    )
    tolerance: float = Field(default=0.15, gt=0, description="predicted vs measured p99 agreement")
    refine_top: int = Field(default=6, ge=1, description="shapes whose batching knobs are swept")


def confirm_length(policy: SearchPolicy, rate_per_s: float) -> int:
    """Requests of a confirming run at ``rate_per_s`` (one replica's share of the load)."""
    if policy.max_benchmark_minutes is None or rate_per_s <= 0:
        return policy.confirm_requests
    fits = int(rate_per_s * policy.max_benchmark_minutes * 60)
    return min(policy.confirm_requests, max(policy.benchmark_requests, fits))


@dataclass(frozen=True)
class Shape:
    config: ServingConfig  # replicas=1
    pool: NodePool
    price_per_gpu_hour: float
    available_gpus: int
    quality: float | None


def price_of(pool: NodePool, catalog: Catalog) -> float:
    return (
        pool.price_per_gpu_hour
        if pool.price_per_gpu_hour is not None
        else catalog.gpu(pool.gpu).price_per_gpu_hour
    )


def current_cost_per_hour(dep: InferenceDeployment, pool: NodePool | None, catalog: Catalog) -> float:
    """$/h of ``dep`` as it runs: its pool's price (``price_of``), or the catalog's for its GPU when
    it runs outside the pools known."""
    price = price_of(pool, catalog) if pool else catalog.gpu(dep.config.gpu).price_per_gpu_hour
    return dep.config.total_gpus * price


def user_site(dep: InferenceDeployment, pools: list[NodePool]) -> str | None:
    """Where the deployment's users are: its ``servewise.io/site`` label, else the site (zone, or
    name without one) of the edge pool it runs in; None when neither says."""
    if dep.labels.get(SITE_LABEL):
        return dep.labels[SITE_LABEL]
    home = next((p for p in pools if p.name == dep.pool), None)
    return edge_site(home) if home is not None else None


def available_gpus(pool: NodePool, dep: InferenceDeployment) -> int:
    """Free GPUs of the pool plus what this deployment already holds there."""
    mine = dep.config.total_gpus if dep.pool == pool.name else 0
    return pool.free_gpus + mine


def variants(
    dep: InferenceDeployment, policy: SearchPolicy, catalog: Catalog
) -> list[tuple[Quantization, float | None]]:
    """Weight variants within the quality floor (KV formats are combined later)."""
    model = catalog.model(dep.config.model)
    current, _ = quality_score(model, dep.config.quantization)
    out = []
    for label in policy.weights:
        if label not in WEIGHT_VARIANTS:
            raise InputError(
                f"unknown weights variant {label!r}; known: {sorted(WEIGHT_VARIANTS)}", field="policy.weights"
            )
        q = WEIGHT_VARIANTS[label]
        score, used = quality_score(model, q)
        published = used is not None and (
            q.weights in (Dtype.BF16, Dtype.FP16) or used not in ("bf16", "fp16")
        )
        if not published and not policy.allow_unscored_variants and q != Quantization():
            continue
        if current is not None and score is not None and score < current - policy.quality_floor_drop:
            continue
        out.append((q, score))
    return out


def max_context_needed(dep: InferenceDeployment, model_max: int) -> int:
    """Longest prompt + output the workload can send, rounded up to 1024 (at most the model's)."""
    wl = dep.workload
    if wl is None:
        return model_max
    need = (
        wl.input_len.max + wl.output_len.max
        if wl.input_len.kind != "fixed"
        else wl.input_len.mean + wl.output_len.max
    )
    return int(min(model_max, -(-int(need) // 1024) * 1024))


def shapes(
    dep: InferenceDeployment,
    pools: list[NodePool],
    policy: SearchPolicy,
    catalog: Catalog,
    seq_len: int,
    *,
    batching: list[tuple[int, int]] | None = None,
) -> Iterator[Shape]:
    """Every valid shape; ``batching`` = (max_num_seqs, max_num_batched_tokens) pairs to try
    (default: the deployment's current pair)."""
    cur = dep.config
    model = catalog.model(cur.model)
    context_cap = max_context_needed(dep, model.max_context)
    pairs = batching or [(cur.max_num_seqs, cur.max_num_batched_tokens)]
    site = user_site(dep, pools)
    for pool in pools:
        if policy.gpus is not None and pool.gpu not in policy.gpus:
            continue
        if not serves_site(pool, site):
            continue
        hw = catalog.gpu(pool.gpu)
        avail = available_gpus(pool, dep)
        price = price_of(pool, catalog)
        for q, score in variants(dep, policy, catalog):
            if q.weights in (Dtype.FP8, Dtype.INT8) and not hw.supports(q.weights):
                continue
            for kv in policy.kv_cache:
                quant = q.model_copy(update={"kv_cache": kv})
                for tp in policy.tensor_parallel:
                    if tp > min(hw.max_gpus_per_node, pool.gpus_per_node, avail):
                        continue
                    for seqs, tokens in pairs:
                        try:
                            cfg = cur.with_changes(
                                gpu=pool.gpu,
                                quantization=quant,
                                tensor_parallel=tp,
                                pipeline_parallel=1,
                                max_num_seqs=seqs,
                                max_num_batched_tokens=max(tokens, seqs),
                                replicas=1,
                            )
                            plan = plan_memory(model, hw, cfg, seq_len)
                            if plan.fits and not plan_memory(model, hw, cfg).fits:
                                # The engine refuses to start unless one max_model_len sequence fits:
                                # cap the context at what the workload needs (a knob change too).
                                cfg = cfg.with_changes(max_model_len=context_cap)
                                plan = plan_memory(model, hw, cfg)
                        except (ValueError, ServewiseError):
                            continue
                        if plan.fits:
                            yield Shape(cfg, pool, price, avail, score)
