"""The twin's physics: what one replica does at one moment, from the performance model.

The twin's *true* efficiencies differ from the catalog defaults by seeded amounts (hidden ground
truth); everything it serves and measures is computed with them, so a model that trusts the
uncalibrated defaults is measurably wrong on the twin. Predictions are cached per configuration and
arrival-rate bucket (2% wide) because the daily pattern moves slowly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from servewise.domain import ServingConfig
from servewise.perf.catalog import get_catalog
from servewise.perf.efficiency import Efficiency, efficiency_on

if TYPE_CHECKING:
    from servewise.cluster.sim_latency import LatencySamples
    from servewise.cluster.sim_scenario import LoadSpec

# Board power (W) of the GPUs the catalog knows; power draw = idle + (tdp - idle) * busy.
TDP_W = {
    "a10g": 300, "l4": 72, "l40s": 350, "a100-40gb": 400, "a100-80gb": 400, "h100-pcie": 350,
    "h100-sxm": 700, "h200": 700, "mi300x": 750, "b200": 1000,
}  # fmt: skip
IDLE_FRACTION = 0.12
_RATE_BUCKET = 0.02  # relative width of the arrival-rate cache buckets


@dataclass(frozen=True)
class ReplicaState:
    """Steady state of one replica at one arrival rate (true efficiency, before noise)."""

    arrival_rate_per_s: float
    served_rate_per_s: float
    running: float
    waiting: float
    kv_usage: float
    gpu_utilization: float
    preemptions_per_s: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    saturated: bool
    capacity_rate_per_s: float
    memory_used_gb: float
    dram_active: float


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class TruthModel:
    """Hidden per-(engine, GPU) efficiencies of one twin, derived from its seed."""

    def __init__(self, seed: int, scale: float) -> None:
        self.seed = seed
        self.scale = scale
        self._cache: dict[tuple[str, str], Efficiency] = {}

    def efficiency(self, engine: str, gpu: str) -> Efficiency:
        key = (str(engine), gpu)
        if key not in self._cache:
            rng = np.random.default_rng(stable_seed("truth", self.seed, *key))
            self._cache[key] = efficiency_on(str(engine), get_catalog().gpu(gpu)).perturbed(rng, self.scale)
        return self._cache[key]

    def latencies(
        self, config: ServingConfig, key: str, load: LoadSpec, rate_per_s: float
    ) -> LatencySamples | None:
        """Steady-state latency samples of one replica of deployment ``key`` (see ``sim_latency``)."""
        from servewise.cluster.sim_latency import replica_latencies

        eff = self.efficiency(config.engine.value, config.gpu)
        seed = stable_seed("latency", self.seed, key) % 2**31
        return replica_latencies(config, load.as_workload(), rate_per_s, eff, seed)

    def replica_state(
        self, config: ServingConfig, input_len: float, output_len: float, rate_per_s: float
    ) -> ReplicaState:
        """State of one replica of ``config`` at ``rate_per_s`` (bucketed for the cache)."""
        bucket = round(math.log(max(rate_per_s, 1e-6)) / _RATE_BUCKET) if rate_per_s > 0 else None
        eff = self.efficiency(config.engine.value, config.gpu)
        return _replica_state(config, int(round(input_len)), int(round(output_len)), bucket, eff)


@lru_cache(maxsize=65536)
def _replica_state(
    config: ServingConfig, input_len: int, output_len: int, bucket: int | None, eff: Efficiency
) -> ReplicaState:
    from servewise.perf.analytical import predict_load
    from servewise.perf.memory import plan_memory

    catalog = get_catalog()
    model, _ = catalog.resolve_model(config.model)
    hw = catalog.gpu(config.gpu)
    plan = plan_memory(model, hw, config, input_len + output_len)
    # vLLM reserves gpu_memory_utilization of the GPU up front (weights + activations + KV pool).
    memory_used_gb = min(hw.memory_gb, hw.memory_gb * config.gpu_memory_utilization)
    rate = math.exp(bucket * _RATE_BUCKET) if bucket is not None else 0.0
    if rate <= 0:
        return ReplicaState(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False, 0.0, memory_used_gb, 0.0)
    lp = predict_load(
        config, input_len=input_len, output_len=output_len, arrival_rate_per_s=rate, efficiency=eff
    )
    served = min(rate, lp.capacity_rate_per_s) if lp.capacity_rate_per_s > 0 else rate
    util = float(np.clip(lp.gpu_utilization, 0.0, 1.0))
    return ReplicaState(
        arrival_rate_per_s=rate,
        served_rate_per_s=served,
        running=lp.running,
        waiting=lp.waiting,
        kv_usage=float(np.clip(lp.kv_usage, 0.0, 1.0)),
        gpu_utilization=util,
        preemptions_per_s=max(0.0, lp.preemptions_per_s),
        ttft_ms=lp.ttft_ms,
        tpot_ms=lp.tpot_ms,
        e2e_ms=lp.e2e_ms,
        saturated=lp.saturated,
        capacity_rate_per_s=lp.capacity_rate_per_s,
        memory_used_gb=memory_used_gb if plan.fits else hw.memory_gb,
        dram_active=float(np.clip(util * 0.85, 0.0, 1.0)),
    )


def power_w(gpu: str, busy: np.ndarray) -> np.ndarray:
    """Board power (W) of GPUs at the given busy fractions."""
    tdp = TDP_W.get(gpu, 400)
    return tdp * (IDLE_FRACTION + (1 - IDLE_FRACTION) * np.clip(busy, 0.0, 1.0))
