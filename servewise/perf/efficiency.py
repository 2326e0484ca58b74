"""Efficiency factors: how far real engines are from the hardware's peaks.

The analytical model is a roofline; these factors turn peaks into achieved rates. They are fitted
per engine on public measurements (``servewise perf calibrate``) and stored in
``servewise/perf/data/calibration.json``; the defaults below are the starting point of that fit
(typical published kernel efficiencies), used when no calibration exists for an engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from servewise.domain import HardwareSpec

CALIBRATION_FILE = Path(__file__).parent / "data" / "calibration.json"


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak reached and fixed costs of one engine step.

    - ``compute``: GEMM throughput as a fraction of dense peak TFLOP/s (large batches).
    - ``memory``: weight-streaming bandwidth as a fraction of peak memory bandwidth.
    - ``attention_memory``: decode-attention KV-read bandwidth fraction (paged attention).
    - ``attention_compute``: prefill-attention (flash) fraction of 16-bit peak.
    - ``comm``: tensor-parallel all-reduce bandwidth fraction of the interconnect.
    - ``comm_latency_us``: fixed latency of one all-reduce.
    - ``step_overhead_ms``: per-iteration fixed cost (scheduling, sampling, launch gaps).
    - ``seq_overhead_us``: per-sequence cost per iteration (input prep, sampling, detokenize).
    - ``int4_compute_penalty``: GEMM efficiency multiplier for weight-only int4 kernels (dequant).
    - ``layer_overhead_us``: fixed cost per layer per step (kernel launches, norms, rotary, gaps).
    """

    compute: float = 0.62
    memory: float = 0.80
    attention_memory: float = 0.55
    attention_compute: float = 0.45
    comm: float = 0.65
    comm_latency_us: float = 12.0
    step_overhead_ms: float = 1.2
    seq_overhead_us: float = 12.0
    layer_overhead_us: float = 10.0
    int4_compute_penalty: float = 0.7

    def scaled(self, **factors: float) -> Efficiency:
        """A copy with some factors multiplied: ``eff.scaled(memory=0.9)``."""
        return replace(self, **{k: getattr(self, k) * v for k, v in factors.items()})

    def perturbed(self, rng: np.random.Generator, scale: float = 0.15) -> Efficiency:
        """A randomly perturbed copy (log-normal, ``scale`` ~ relative std), fractions kept < 1."""
        return self.scaled(**{f.name: float(np.exp(rng.normal(0.0, scale))) for f in fields(self)}).clipped()

    def clipped(self) -> Efficiency:
        """A copy whose fractions of peak stay at or below ``FRACTION_MAX``."""
        return replace(self, **{k: min(getattr(self, k), FRACTION_MAX) for k in _FRACTIONS})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


FRACTION_MAX = 0.98
_FRACTIONS = {"compute", "memory", "attention_memory", "attention_compute", "comm", "int4_compute_penalty"}


@lru_cache(maxsize=1)
def _calibration() -> dict[str, dict[str, float]]:
    if not CALIBRATION_FILE.exists():
        return {}
    data = json.loads(CALIBRATION_FILE.read_text())
    return {str(k): dict(v) for k, v in data.get("engines", {}).items()}


def lookup(table: dict[str, Efficiency], engine: str, vendor: str = "nvidia") -> Efficiency:
    """Most specific fitted entry: ``engine@vendor``, ``engine``, the base engine, then ``default``."""
    base = engine.removesuffix("-legacy")
    for key in (f"{engine}@{vendor}", engine, f"{base}@{vendor}", base, "default"):
        if key in table:
            return table[key]
    return Efficiency()


def default_efficiency(engine: str = "vllm", gpu_vendor: str = "nvidia") -> Efficiency:
    """The calibrated efficiency for ``engine`` on a GPU of ``gpu_vendor``, else the defaults."""
    return lookup(_fitted(), str(engine), gpu_vendor)


def efficiency_on(engine: str, hw: HardwareSpec) -> Efficiency:
    """The calibrated efficiency for ``engine`` on the GPU ``hw`` (its vendor picks the fit)."""
    return default_efficiency(engine, hw.vendor.lower())


@lru_cache(maxsize=1)
def _fitted() -> dict[str, Efficiency]:
    names = Efficiency.__dataclass_fields__
    return {k: Efficiency(**{n: v for n, v in e.items() if n in names}) for k, e in _calibration().items()}


def reload_calibration() -> None:
    _calibration.cache_clear()
    _fitted.cache_clear()
