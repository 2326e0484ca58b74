"""The engines' latency histograms: bucket bounds as published, and what a quantile read from them
can tell.

A p50 or p99 read through Prometheus' ``histogram_quantile`` interpolates linearly inside the bucket
the quantile falls in, so it is only known to lie somewhere in that bucket. vLLM's inter-token
buckets are 25 ms wide around a 30 ms decode step: every sample in (25, 50] ms reads as a median of
37.5 ms and a p99 of 49.75 ms, 25 % and 57 % above a true 30 ms and 31.6 ms (bench seed 2002, svc-0).
Whoever fits a model to such a reading must treat it as the interval, not as the point.
"""

from __future__ import annotations

import math

# Upper bounds (seconds) of vLLM's histograms, as its Prometheus logger defines them
# (``vllm/v1/metrics/loggers.py``); +Inf is implicit.
VLLM_TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_ITL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
VLLM_E2E_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def vllm_length_buckets(max_model_len: int) -> tuple[int, ...]:
    """Bounds (tokens) of vLLM's ``request_prompt_tokens`` and ``request_generation_tokens``
    histograms: 1, 2, 5, 10, 20, 50, ... up to ``max_model_len`` (``build_1_2_5_buckets``)."""
    bounds: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_model_len:
                return tuple(bounds)
            bounds.append(mantissa * scale)
        scale *= 10


# Telemetry signal (ms) -> the bucket bounds (ms) it is read from, per engine. Engines whose bucket
# layout is not known here (TGI, SGLang) are absent: their quantiles are taken as points.
_MS = 1000.0
SIGNAL_BUCKETS_MS: dict[str, dict[str, tuple[float, ...]]] = {
    "vllm": {
        "ttft_p50_ms": tuple(_MS * b for b in VLLM_TTFT_BUCKETS_S),
        "ttft_p99_ms": tuple(_MS * b for b in VLLM_TTFT_BUCKETS_S),
        "itl_p50_ms": tuple(_MS * b for b in VLLM_ITL_BUCKETS_S),
        "itl_p99_ms": tuple(_MS * b for b in VLLM_ITL_BUCKETS_S),
        "e2e_p99_ms": tuple(_MS * b for b in VLLM_E2E_BUCKETS_S),
    }
}


def bucket_around(value: float, bounds: tuple[float, ...]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` that holds ``value``."""
    lower = max((b for b in bounds if b < value), default=0.0)
    upper = min((b for b in bounds if b >= value), default=math.inf)
    return lower, upper


def beyond_last_bucket(engine: str | None, signal: str, value: float) -> bool:
    """Whether ``value`` is the last finite bucket bound of the engine's histogram for ``signal``:
    ``histogram_quantile`` answers that bound when the quantile lies beyond it (the +Inf bucket), so
    the true value is only known to be at least that."""
    bounds = SIGNAL_BUCKETS_MS.get(engine or "", {}).get(signal)
    return bounds is not None and value >= max(bounds)


def shown_ms(engine: str | None, signal: str, value: float) -> str:
    """``value`` in ms as a person reads it: ``>= 2560000`` when it is only a lower bound."""
    return f">= {value:.0f}" if beyond_last_bucket(engine, signal, value) else f"{value:.0f}"


def quantile_bucket(engine: str, signal: str, value: float) -> tuple[float, float] | None:
    """The bucket a telemetry quantile ``signal`` of ``engine`` was interpolated in (None: unknown
    layout, take the value as a point)."""
    bounds = SIGNAL_BUCKETS_MS.get(engine, {}).get(signal)
    return bucket_around(value, bounds) if bounds else None


def bucket_holding(engine: str, signal: str, value: float, limit: float) -> tuple[float, float] | None:
    """The bucket a quantile ``value`` (above ``limit``) was interpolated in, when that bucket also
    holds ``limit``: the true quantile may lie on either side of it. None when the bucket lies wholly
    above ``limit`` or the engine's layout is unknown."""
    bucket = quantile_bucket(engine, signal, value)
    return bucket if bucket is not None and bucket[0] < limit else None
