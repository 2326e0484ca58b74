"""What the performance model and the simulator return."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MemoryPlan(BaseModel):
    """Per-GPU memory budget of one replica."""

    weights_gb: float
    activation_gb: float
    kv_cache_gb: float
    kv_bytes_per_token: float = Field(description="KV bytes per token per GPU")
    kv_capacity_tokens: int
    max_concurrent_seqs: int = Field(description="sequences of the given total length that fit at once")
    fits: bool
    reason: str | None = None


class PerfPrediction(BaseModel):
    """Steady-state prediction for one replica at a given concurrency (analytical model)."""

    throughput_tok_s: float = Field(description="output tokens/s of the replica (all its GPUs)")
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    request_throughput_per_s: float
    concurrency: float = Field(description="requests in flight actually served at once")
    batch_decode_step_ms: float
    bound: str = Field(description="'compute' or 'memory' for the decode step")
    memory: MemoryPlan
    cost_per_hour: float
    cost_per_1m_output_tokens: float
    notes: list[str] = Field(default_factory=list)


class LatencyStats(BaseModel):
    mean: float
    p50: float
    p90: float
    p99: float


class SimulationResult(BaseModel):
    """Outcome of a discrete-event simulation run of one replica."""

    num_requests: int
    completed: int
    duration_s: float
    throughput_tok_s: float
    request_throughput_per_s: float
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    e2e_ms: LatencyStats
    goodput_per_s: float | None = Field(default=None, description="completed requests/s meeting the SLO")
    slo_attainment: float | None = None
    kv_usage_mean: float
    kv_usage_peak: float
    preemptions: int
    gpu_busy_fraction: float
    cost_per_1m_output_tokens: float
