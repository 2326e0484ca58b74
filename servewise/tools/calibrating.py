"""Per-deployment calibration of the performance model from its own telemetry and benchmarks.

The twin's truth (and a real cluster) differs from the catalog defaults by unknown efficiency
factors *per engine and GPU class*. We fit multiplicative corrections on the ``Efficiency`` of each
GPU class (a MAP estimate: log-scales with a Gaussian prior of ``PRIOR_SCALE``) to the observed
median TTFT and TPOT, with ``scipy.optimize.least_squares``. Tails are a separate per-metric factor
(p99 / predicted mean) fitted on the observed p99s and shrunk toward a prior: pooled over every
observation, and per GPU class (shrunk toward the pooled one) where that class was observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.optimize import least_squares

from servewise.domain import ServingConfig
from servewise.errors import ServewiseError
from servewise.perf.analytical import LoadPrediction, predict_load
from servewise.perf.catalog import get_catalog
from servewise.perf.efficiency import Efficiency, efficiency_on

FITTED = (
    "compute",
    "memory",
    "attention_memory",
    "attention_compute",
    "comm",
    "comm_latency_us",
    "step_overhead_ms",
    "seq_overhead_us",
    "int4_compute_penalty",
)
PRIOR_SCALE = 0.15  # prior std of each log-scale (catalog defaults are typically within ~15%)
MEAS_SCALE = 0.05  # std of log(measured / predicted) from measurement noise
TAIL_PRIOR = {"ttft": 1.6, "tpot": 1.15}  # p99 / analytical mean before any observation
TAIL_PRIOR_WEIGHT = 1.0  # pseudo-observations behind the tail prior


@dataclass(frozen=True)
class Observation:
    """One measurement of one configuration at a per-replica arrival rate."""

    config: ServingConfig
    input_len: float
    output_len: float
    rate_per_replica: float
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    source: str = "benchmark"
    # (name, lower, upper): the histogram bucket a value was read from ("ttft_p50", "tpot_p99", ...);
    # the true value lies anywhere inside it (see ``servewise.domain.histograms``). A benchmark's
    # percentiles come from its raw samples and have none.
    buckets: tuple[tuple[str, float, float], ...] = ()

    def interval(self, name: str, value: float) -> tuple[float, float]:
        """What ``value`` (this observation's ``name``) pins down: its bucket, else the point."""
        for n, lower, upper in self.buckets:
            if n == name:
                return lower, upper
        return value, value


@dataclass(frozen=True)
class Calibration:
    """Fitted corrections: efficiency log-scales per (engine, GPU) and p99 tail factors."""

    log_scales: dict[str, tuple[float, ...]] = field(default_factory=dict)  # key: 'engine/gpu'
    tails: dict[str, float] = field(default_factory=lambda: dict(TAIL_PRIOR))  # pooled over classes
    class_tails: dict[str, dict[str, float]] = field(default_factory=dict)  # key: 'engine/gpu'
    observations: int = 0
    residual_pct: float | None = None  # RMS relative error of the fit on its observations

    def efficiency(self, config: ServingConfig) -> Efficiency:
        base = efficiency_on(config.engine.value, get_catalog().gpu(config.gpu))
        scales = self.log_scales.get(class_key(config))
        if scales is None:
            return base
        return base.scaled(**{name: math.exp(s) for name, s in zip(FITTED, scales, strict=True)})

    def knows(self, config: ServingConfig) -> bool:
        return class_key(config) in self.log_scales

    def tail(self, config: ServingConfig, metric: str) -> float:
        """p99 / predicted mean of ``metric`` ('ttft' or 'tpot') on ``config``'s GPU class: its own
        fit where observed, else the pooled one (an A100's TTFT tail of 2.5 once priced H100s out)."""
        return self.class_tails.get(class_key(config), self.tails)[metric]


def class_key(config: ServingConfig) -> str:
    """The GPU class a calibration is fitted per: engine and GPU."""
    return f"{config.engine.value}/{config.gpu}"


def predict_with(
    cal: Calibration, config: ServingConfig, input_len: float, output_len: float, rate_per_replica: float
) -> LoadPrediction:
    return _predict_cached(
        config,
        cal.efficiency(config),
        max(1, round(input_len)),
        max(1, round(output_len)),
        float(rate_per_replica),
    )


@lru_cache(maxsize=200_000)
def _predict_cached(config: ServingConfig, eff: Efficiency, i: int, o: int, rate: float) -> LoadPrediction:
    """Searches at several SLO margins and refits ask the same questions: answer each once."""
    return predict_load(config, input_len=i, output_len=o, arrival_rate_per_s=rate, efficiency=eff)


def fit_calibration(observations: Sequence[Observation], prior: Calibration | None = None) -> Calibration:
    """Refit every GPU class that has observations; others keep ``prior``'s scales."""
    base = prior or Calibration()
    scales = dict(base.log_scales)
    sq_errors: list[float] = []
    by_key: dict[str, list[Observation]] = {}
    for obs in observations:
        by_key.setdefault(class_key(obs.config), []).append(obs)
    for key, group in by_key.items():
        theta, errs = _fit_group(group)
        scales[key] = tuple(float(x) for x in theta)
        sq_errors += errs
    partial = Calibration(log_scales=scales, tails=dict(TAIL_PRIOR), observations=len(observations))
    tails, class_tails = _fit_tails(partial, observations)
    rms = math.sqrt(sum(sq_errors) / len(sq_errors)) * 100 if sq_errors else None
    return Calibration(
        log_scales=scales,
        tails=tails,
        class_tails=class_tails,
        observations=len(observations),
        residual_pct=rms,
    )


def _targets(obs: Observation) -> list[tuple[str, float, float]]:
    """(metric, lower, upper) of each median to fit: a point, or the histogram bucket it lies in."""
    out = []
    for metric, value in (("ttft", obs.ttft_p50_ms), ("tpot", obs.tpot_p50_ms)):
        if value and value > 0:
            out.append((metric, *obs.interval(f"{metric}_p50", value)))
    return out


def _log_outside(pred: float, lower: float, upper: float) -> float:
    """log distance from ``pred`` to the interval [lower, upper] (0 inside it)."""
    pred = max(pred, 1e-9)
    if pred > upper:
        return math.log(pred / upper)
    if pred < lower:
        return math.log(pred / max(lower, 1e-9))
    return 0.0


def _fit_group(group: list[Observation]) -> tuple[np.ndarray, list[float]]:
    n_res = sum(len(_targets(o)) for o in group)
    if n_res == 0:
        return np.zeros(len(FITTED)), []

    def data_residuals(theta: np.ndarray) -> np.ndarray:
        cal = Calibration(log_scales={class_key(group[0].config): tuple(theta)})
        res: list[float] = []
        for obs in group:
            try:
                p = predict_with(cal, obs.config, obs.input_len, obs.output_len, obs.rate_per_replica)
                pred = {"ttft": p.ttft_ms, "tpot": p.tpot_ms}
            except ServewiseError:
                pred = {"ttft": 1e9, "tpot": 1e9}
            for metric, lower, upper in _targets(obs):
                res.append(_log_outside(pred[metric], lower, upper) / MEAS_SCALE)
        return np.asarray(res)

    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.concatenate([data_residuals(theta), theta / PRIOR_SCALE])

    sol = least_squares(residuals, np.zeros(len(FITTED)), diff_step=1e-3, max_nfev=60 * len(FITTED))
    fitted = data_residuals(sol.x)
    return sol.x, [float(math.expm1(abs(r) * MEAS_SCALE) ** 2) for r in fitted]


def _fit_tails(
    cal: Calibration, observations: Sequence[Observation]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Pooled tail factors (shrunk toward ``TAIL_PRIOR``) and per-class ones (shrunk toward the
    pooled), each a geometric mean of observed p99 / predicted mean."""
    logs: dict[str, dict[str, list[float]]] = {}
    for obs in observations:
        try:
            p = predict_with(cal, obs.config, obs.input_len, obs.output_len, obs.rate_per_replica)
        except ServewiseError:
            continue
        per_metric = logs.setdefault(class_key(obs.config), {"ttft": [], "tpot": []})
        for metric, measured, mean in (
            ("ttft", obs.ttft_p99_ms, p.ttft_ms),
            ("tpot", obs.tpot_p99_ms, p.tpot_ms),
        ):
            if measured and mean > 0:
                # a p99 read from a histogram bucket: the prior's p99 where the bucket allows it
                lower, upper = obs.interval(f"{metric}_p99", measured)
                p99 = min(max(TAIL_PRIOR[metric] * mean, lower), upper)
                per_metric[metric].append(math.log(p99 / mean))

    def shrunk(prior: float, values: list[float]) -> float:
        # never below 1: a p99 under the predicted mean says the mean is wrong, not that the tail is
        # thin (a TTFT the model put at 41 years once fitted a factor of 6e-5 and a 0.013 ms p99)
        total = TAIL_PRIOR_WEIGHT * math.log(prior) + sum(values)
        return max(1.0, math.exp(total / (TAIL_PRIOR_WEIGHT + len(values))))

    pooled = {
        metric: shrunk(prior, [v for per in logs.values() for v in per[metric]])
        for metric, prior in TAIL_PRIOR.items()
    }
    per_class = {
        key: {metric: shrunk(pooled[metric], per[metric]) for metric in TAIL_PRIOR}
        for key, per in logs.items()
    }
    return pooled, per_class
