"""The twin's measurable state: per-pod gauges and counters, and a per-deployment history ring.

Counters are kept the way an engine keeps them (cumulative per pod, reset when a pod is replaced)
and, for the twin's own telemetry, per deployment (never reset). Histograms use vLLM's bucket
bounds; each step's observations are drawn (multinomial) from the latency distribution the
performance model gives for that moment, so quantiles read back through ``histogram_quantile``
carry the same bucket error a real fleet has.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from servewise.cluster.sim_latency import LatencySamples, sample_bin_probs
from servewise.domain import LengthDistribution
from servewise.domain.histograms import (
    VLLM_E2E_BUCKETS_S,
    VLLM_ITL_BUCKETS_S,
    VLLM_TTFT_BUCKETS_S,
    vllm_length_buckets,
)

# Bucket upper bounds (seconds) as vLLM's Prometheus logger defines them.
TTFT_BUCKETS = VLLM_TTFT_BUCKETS_S
ITL_BUCKETS = VLLM_ITL_BUCKETS_S
E2E_BUCKETS = VLLM_E2E_BUCKETS_S
HISTOGRAMS: dict[str, tuple[float, ...]] = {"ttft": TTFT_BUCKETS, "itl": ITL_BUCKETS, "e2e": E2E_BUCKETS}
# Per-request token lengths (vLLM's request_prompt_tokens / request_generation_tokens). vLLM's bounds
# stop at the server's max_model_len: the twin keeps them to 100 000 and folds the bins above a pod's
# context into +Inf when it exports or reads them (``fold_length_bins``).
LENGTH_BUCKETS: tuple[float, ...] = tuple(float(b) for b in vllm_length_buckets(131072))
LENGTH_HISTOGRAMS: dict[str, tuple[float, ...]] = {"prompt_len": LENGTH_BUCKETS, "output_len": LENGTH_BUCKETS}
LENGTH_COUNTERS = {"prompt_len": "prompt_tokens", "output_len": "generation_tokens"}  # their sums
COUNTERS = ("requests", "prompt_tokens", "generation_tokens", "preemptions", "prefix_queries", "prefix_hits")
GAUGES = ("running", "waiting", "kv_usage", "gpu_utilization", "gpu_memory_used_bytes", "ready_pods")


class Layout:
    """Column positions of counters and histogram bins (bins are per bucket, +Inf last) in a vector."""

    def __init__(self) -> None:
        pos = len(COUNTERS)
        self.counter = {name: i for i, name in enumerate(COUNTERS)}
        self.bins: dict[str, slice] = {}
        self.sums: dict[str, int] = {}
        for name, bounds in {**HISTOGRAMS, **LENGTH_HISTOGRAMS}.items():
            self.bins[name] = slice(pos, pos + len(bounds) + 1)
            pos += len(bounds) + 1
        for name in HISTOGRAMS:
            self.sums[name] = pos
            pos += 1
        self.size = pos


LAYOUT = Layout()


def lognormal_bin_probs(bounds: tuple[float, ...], mean_s: float, sigma: float) -> np.ndarray:
    """Probability of each bucket bin (last = above the top bound) for a log-normal of mean ``mean_s``."""
    mean_s = max(mean_s, 1e-6)
    mu = math.log(mean_s) - sigma * sigma / 2
    cdf = ndtr((np.log(np.asarray(bounds)) - mu) / sigma)
    probs = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum()


@dataclass(frozen=True)
class LatencyDraw:
    """Bucket probabilities and means of one deployment's latency distributions at one step."""

    probs: dict[str, np.ndarray]
    means: dict[str, float]

    @classmethod
    def make(
        cls, *, ttft_s: float, tpot_s: float, e2e_s: float, load: float, output_cv: float
    ) -> LatencyDraw:
        sigmas = {"ttft": 0.45 + 0.5 * min(load, 1.0), "itl": 0.3, "e2e": 0.3 + 0.5 * output_cv}
        means = {"ttft": ttft_s, "itl": tpot_s, "e2e": e2e_s}
        probs = {
            name: lognormal_bin_probs(bounds, means[name], sigmas[name])
            for name, bounds in HISTOGRAMS.items()
            if means[name] > 0
        }
        return cls(probs, means)

    @classmethod
    def from_samples(cls, samples: LatencySamples, *, scale: float, extra_s: float) -> LatencyDraw:
        """The distributions of simulated requests (``sim_latency``), latencies times ``scale``
        (per-step noise) plus ``extra_s`` of network on TTFT and E2E."""
        ttft, e2e = samples.ttft_s * scale + extra_s, samples.e2e_s * scale + extra_s
        probs = {
            "ttft": sample_bin_probs(TTFT_BUCKETS, ttft, 1.0),
            "itl": sample_bin_probs(ITL_BUCKETS, samples.tpot_s, scale, samples.tpot_weight),
            "e2e": sample_bin_probs(E2E_BUCKETS, e2e, 1.0),
        }
        w = samples.tpot_weight
        itl_mean = float(np.dot(samples.tpot_s, w) / w.sum()) * scale if w.sum() > 0 else 0.0
        means = {"ttft": float(ttft.mean()), "itl": itl_mean, "e2e": float(e2e.mean())}
        return cls({k: v for k, v in probs.items() if v.sum() > 0}, means)


@lru_cache(maxsize=256)
def length_bin_probs(dist: LengthDistribution) -> np.ndarray:
    """Probability of each ``LENGTH_BUCKETS`` bin (last = above the top bound) for one distribution."""
    lengths = dist.sample(np.random.default_rng(0), 20_000)
    bins = np.searchsorted(np.asarray(LENGTH_BUCKETS), lengths, side="left")
    counts = np.bincount(bins, minlength=len(LENGTH_BUCKETS) + 1).astype(float)
    return counts / counts.sum()


@dataclass(frozen=True)
class LengthDraw:
    """Where a workload's requests fall in the length histograms, and the generator that draws them
    (apart from the latency draws, which stay as they were without it)."""

    probs: dict[str, np.ndarray]
    rng: np.random.Generator

    @classmethod
    def of(
        cls, input_len: LengthDistribution, output_len: LengthDistribution, rng: np.random.Generator
    ) -> LengthDraw:
        return cls(
            {"prompt_len": length_bin_probs(input_len), "output_len": length_bin_probs(output_len)}, rng
        )


def fold_length_bins(counts: np.ndarray, max_len: int) -> tuple[tuple[float, ...], np.ndarray]:
    """The bounds and bins an engine serving ``max_len`` tokens exports: bins above it go to +Inf."""
    keep = sum(1 for b in LENGTH_BUCKETS if b <= max_len)
    folded = np.concatenate((counts[:keep], [counts[keep:].sum()]))
    return LENGTH_BUCKETS[:keep], folded


def draw_step(
    rng: np.random.Generator,
    *,
    dt_s: float,
    served_rate: float,
    input_len: float,
    output_len: float,
    preemptions_per_s: float,
    dist: LatencyDraw,
    lengths: LengthDraw | None = None,
    prefix_hit_share: float | None = None,
) -> np.ndarray:
    """Counter increments of one pod over ``dt_s`` seconds, as a ``LAYOUT`` vector.
    ``prefix_hit_share``: with prefix caching on, the share of prompt tokens found in the cache
    (vLLM counts every prompt token as a query, the cached ones as hits); None: caching off."""
    inc = np.zeros(LAYOUT.size)
    n_req = int(rng.poisson(max(served_rate, 0.0) * dt_s))
    if n_req:
        prompt = max(0.0, rng.normal(input_len, 0.05 * input_len)) * n_req
        generated = max(float(n_req), rng.normal(output_len, 0.05 * output_len) * n_req)
        inc[LAYOUT.counter["requests"]] = n_req
        inc[LAYOUT.counter["prompt_tokens"]] = round(prompt)
        if prefix_hit_share is not None:
            inc[LAYOUT.counter["prefix_queries"]] = round(prompt)
            inc[LAYOUT.counter["prefix_hits"]] = round(prompt * prefix_hit_share)
        inc[LAYOUT.counter["generation_tokens"]] = round(generated)
        counts = {"ttft": n_req, "itl": max(0, int(round(generated)) - n_req), "e2e": n_req}
        for name, probs in dist.probs.items():
            if counts[name]:
                inc[LAYOUT.bins[name]] = rng.multinomial(counts[name], probs)
                inc[LAYOUT.sums[name]] = counts[name] * dist.means[name]
        if lengths is not None:
            for name, probs in lengths.probs.items():
                inc[LAYOUT.bins[name]] = lengths.rng.multinomial(n_req, probs)
    if preemptions_per_s > 0:
        inc[LAYOUT.counter["preemptions"]] = rng.poisson(preemptions_per_s * dt_s)
    return inc


class History:
    """Per-deployment samples of recent steps: gauges and never-reset cumulative counters."""

    def __init__(self, n_deployments: int, max_steps: int) -> None:
        self.n = n_deployments
        self.times: deque[float] = deque(maxlen=max_steps)
        self.gauges: deque[np.ndarray] = deque(maxlen=max_steps)  # (n, len(GAUGES))
        self.totals: deque[np.ndarray] = deque(maxlen=max_steps)  # (n, LAYOUT.size) cumulative

    def append(self, t: float, gauges: np.ndarray, totals: np.ndarray) -> None:
        self.times.append(t)
        self.gauges.append(gauges.astype(np.float32))
        self.totals.append(totals.copy())

    def window(self, end_t: float, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Times, gauges and totals of samples in ``[end_t - seconds, end_t]`` (as Prometheus 2.x selects)."""
        times = np.fromiter(self.times, dtype=float, count=len(self.times))
        idx = np.nonzero((times >= end_t - seconds - 1e-6) & (times <= end_t + 1e-6))[0]
        if len(idx) == 0:
            return times[:0], np.zeros((0, self.n, len(GAUGES))), np.zeros((0, self.n, LAYOUT.size))
        gauges = np.stack([self.gauges[i] for i in idx])
        totals = np.stack([self.totals[i] for i in idx])
        return times[idx], gauges, totals

    @property
    def span_s(self) -> float:
        return (self.times[-1] - self.times[0]) if len(self.times) > 1 else 0.0

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.gauges) + sum(a.nbytes for a in self.totals)
