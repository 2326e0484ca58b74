"""Dynamic model selection over a diurnal day: one large model vs shifting load vs a cascade.

The day is cut into ``slots``; the fleet's arrival rate follows a cosine between a trough and the
peak. Each policy routes every request to the large model's pool or the small (smaller or
quantized) model's pool:

- ``single``: everything to the large model;
- ``shift``: in peak slots, the largest share the quality floor allows goes to the small model
  (mean quality ``(1 - f) Q_large + f Q_small >= floor``), none off-peak;
- ``cascade``: per request, prompts of at most ``cascade_threshold`` tokens go to the small model.

Each pool autoscales per slot to ``ceil(rate / (capacity * target_utilization))`` replicas (capacity
from the analytical model for the pool's own lengths); one replica per pool is then simulated at
its share of the load with the pool's actual requests, which gives SLO attainment. Cost is
replica-hours times $/GPU-hour; quality is the published score of the model that served each request.
Every point of a study draws from the same random numbers (the study seed): the same request
lengths, the same routing draws, the same arrival gaps (standard exponentials scaled to each
replica's rate) and the same simulator seed, so two points differ only by what they change (a
policy, a threshold, a model): identical configurations give identical rows, and the comparison
between policies is paired. (With per-point seeds, four identical `single` rows read an SLO
attainment from 0.946 to 0.991, wider than the differences between policies.)
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from servewise.domain import ServingConfig, Workload
from servewise.errors import InputError
from servewise.perf.catalog import Catalog, quality_score
from servewise.studies.study_file import PolicySpec, Study


def diurnal_rates(spec: PolicySpec) -> np.ndarray:
    """Fleet arrival rate (req/s) at the middle of each slot."""
    hours = (np.arange(spec.slots) + 0.5) * 24.0 / spec.slots
    wave = 0.5 * (1.0 + np.cos(2.0 * np.pi * (hours - spec.peak_hour) / 24.0))
    return spec.peak_rate_per_s * (spec.trough_fraction + (1.0 - spec.trough_fraction) * wave)


def shift_fraction(q_large: float, q_small: float, floor: float) -> float:
    """Largest share of requests the small model may take with mean quality >= floor."""
    if q_small >= floor:
        return 1.0
    if q_large <= floor or q_large <= q_small:
        return 0.0
    return min(1.0, (q_large - floor) / (q_large - q_small))


def _quality(cat: Catalog, cfg: ServingConfig, field: str) -> float:
    score, _ = quality_score(cat.model(cfg.model), cfg.quantization)
    if score is None:
        raise InputError(
            f"{cfg.model} ({cfg.quantization.label}) has no published quality score", field=field
        )
    return float(score)


def evaluate_policy(study: Study, point: dict[str, Any], seed: int, cat: Catalog) -> dict[str, Any]:
    from servewise.perf.analytical import predict_load
    from servewise.perf.simulator import simulate_config
    from servewise.studies.evaluating import point_workload, serving_config

    spec = study.spec.policy
    assert spec is not None  # checked when the study was loaded
    wl = point_workload(study, point)
    del seed  # common random numbers instead: every point draws from the study seed (module docstring)
    rng = np.random.default_rng([study.spec.seed, 1])  # routing draws
    common = np.random.default_rng(study.spec.seed)  # every policy sees the same requests
    n = spec.requests_per_slot
    rates = diurnal_rates(spec)
    peak = rates > (1.0 - spec.peak_share) * spec.peak_rate_per_s
    lengths = [(wl.input_len.sample(common, n), wl.output_len.sample(common, n)) for _ in rates]
    longest = max(int((i + o).max()) for i, o in lengths)
    max_len = int(math.ceil(longest / 1024.0) * 1024)
    large = serving_config(point, cat).with_changes(max_model_len=max_len)
    small = serving_config(point, cat, model_key="small_model").with_changes(max_model_len=max_len)
    q = {"large": _quality(cat, large, "axes.model"), "small": _quality(cat, small, "axes.small_model")}
    policy = str(point["policy"])
    frac = shift_fraction(q["large"], q["small"], float(point.get("quality_floor", 0.0)))
    threshold = int(point.get("cascade_threshold", 0))
    target = float(point.get("target_utilization", 0.8))
    slot_hours = 24.0 / spec.slots
    cost = replica_hours = served = good = quality_sum = small_sum = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for s, rate in enumerate(rates):
            inputs, outputs = lengths[s]
            if policy == "single":
                to_small = np.zeros(n, dtype=bool)
            elif policy == "shift":
                to_small = rng.random(n) < (frac if peak[s] else 0.0)
            else:
                to_small = inputs <= threshold
            requests = rate * slot_hours * 3600.0
            for name, cfg, mask in (("large", large, ~to_small), ("small", small, to_small)):
                share = float(mask.mean())
                if share == 0.0:
                    continue
                i, o = inputs[mask], outputs[mask]
                pool_rate = rate * share
                cap = predict_load(
                    cfg,
                    input_len=max(int(i.mean()), 1),
                    output_len=max(int(o.mean()), 1),
                    arrival_rate_per_s=min(pool_rate, 1e-3),
                    catalog=cat,
                ).capacity_rate_per_s
                replicas = max(1, math.ceil(pool_rate / (cap * target)))
                per_replica = pool_rate / replicas
                unit = np.random.default_rng([study.spec.seed, 2, s, int(name == "small")])
                gaps = unit.standard_exponential(size=i.shape[0]) / per_replica
                trace = Path(tmp) / f"slot{s}-{name}.csv"
                rows = "\n".join(f"{t:.6f},{a},{b}" for t, a, b in zip(np.cumsum(gaps), i, o, strict=True))
                trace.write_text("arrival_s,input_len,output_len\n" + rows + "\n")
                res = simulate_config(
                    cfg,
                    Workload(trace=str(trace)),
                    num_requests=int(i.shape[0]),
                    seed=study.spec.seed,
                    slo=study.spec.slo,
                    catalog=cat,
                )
                gpu_hours = replicas * cfg.gpus_per_replica * slot_hours
                cost += gpu_hours * cat.gpu(cfg.gpu).price_per_gpu_hour
                replica_hours += replicas * slot_hours
                served += requests * share
                good += requests * share * float(res.slo_attainment or 0.0)
                quality_sum += requests * share * q[name]
                if name == "small":
                    small_sum += requests * share
    return {
        "cost_per_day": cost,
        "slo_attainment": good / served,
        "mean_quality": quality_sum / served,
        "share_small": small_sum / served,
        "replica_hours": replica_hours,
    }
