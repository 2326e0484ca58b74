"""Evaluate study points: the analytical model (vectorized), the simulator, or a serving policy.

``evaluate_chunk`` is the unit of work every backend runs (serial, process pool, Ray): it takes a
study and a list of ``(index, point)`` and returns one result row per point. A point that fails
(does not fit, breaks divisibility...) becomes a row with its ``error``; it never raises. Every
point's randomness comes from ``point_seed(study seed, index)``, so a row is the same whichever
backend or worker computed it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from pydantic import ValidationError

from servewise.domain import Engine, LengthDistribution, Quantization, ServingConfig, Workload
from servewise.domain.quantization import INT4_METHODS, Dtype
from servewise.errors import InputError, ServewiseError
from servewise.perf.catalog import Catalog, quality_score
from servewise.studies.sampling import point_seed
from servewise.studies.study_file import CONFIG_AXES, METRICS, Study

Row = dict[str, Any]
_CATALOGS: dict[str, Catalog] = {}


def study_catalog(study: Study) -> Catalog:
    """The study's catalog (chips included), built once per process."""
    key = study.fingerprint
    if key not in _CATALOGS:
        _CATALOGS[key] = study.catalog()
    return _CATALOGS[key]


_CONFIGS: dict[tuple[Any, ...], ServingConfig | InputError] = {}
_CONFIG_KEYS = (
    "gpu",
    "weights",
    "kv_cache",
    *(k for k in CONFIG_AXES if k not in ("model", "gpu", "weights", "kv_cache")),
)


def serving_config(point: dict[str, Any], cat: Catalog, model_key: str = "model") -> ServingConfig:
    """The ``ServingConfig`` a point describes (catalog ids resolved, quantization from the axes).

    Sweeps repeat the same configuration under many loads, so results are memoized per process.
    """
    key = (cat.version, point[model_key], *(point.get(k) for k in _CONFIG_KEYS))
    if key not in _CONFIGS:
        if len(_CONFIGS) > 100_000:
            _CONFIGS.clear()
        try:
            _CONFIGS[key] = _serving_config(point, cat, model_key)
        except InputError as exc:
            _CONFIGS[key] = exc
    found = _CONFIGS[key]
    if isinstance(found, InputError):
        raise found
    return found


def _serving_config(point: dict[str, Any], cat: Catalog, model_key: str) -> ServingConfig:
    model_name, _, weights_override = str(point[model_key]).partition(":")
    spec, named = cat.resolve_model(model_name)
    weights_text = weights_override or point.get("weights")
    base = named or Quantization()
    weights = Dtype.parse(str(weights_text)) if weights_text else base.weights
    method = str(weights_text).lower() if weights_text and str(weights_text).lower() in INT4_METHODS else None
    if not weights_text:
        method = base.method
    kv = Dtype.parse(str(point["kv_cache"])) if "kv_cache" in point else base.kv_cache
    knobs = {
        k: point[k] for k in CONFIG_AXES if k in point and k not in ("model", "gpu", "weights", "kv_cache")
    }
    if "engine" in knobs:
        knobs["engine"] = Engine(str(knobs["engine"]).lower())
    try:
        return ServingConfig(
            model=spec.id,
            gpu=cat.gpu(str(point["gpu"])).id,
            quantization=Quantization(weights=weights, kv_cache=kv, method=method),
            **knobs,
        )
    except ValidationError as exc:  # tensor_parallel not a power of two, ...
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(err["msg"].removeprefix("Value error, "), field=where or None) from None


def point_workload(study: Study, point: dict[str, Any]) -> Workload:
    """The point's workload with any length/rate axes applied."""
    workloads = study.spec.workloads
    if "workload" in point:
        wl = workloads[str(point["workload"])]
    elif workloads:
        wl = next(iter(workloads.values()))
    else:
        wl = Workload.fixed(1024, 256, concurrency=64)
    update: dict[str, Any] = {}
    for key in ("input_len", "output_len"):
        if key in point:
            dist: LengthDistribution = getattr(wl, key)
            n = int(point[key])
            update[key] = dist.model_copy(
                update={"mean": float(n), "max": max(dist.max, n), "min": min(dist.min, n)}
            )
    if "arrival_rate_per_s" in point:
        update.update(arrival_rate_per_s=float(point["arrival_rate_per_s"]), concurrency=None)
    return wl.model_copy(update=update) if update else wl


def empty_row(study: Study, index: int, point: dict[str, Any]) -> Row:
    row: Row = {"index": index, "seed": point_seed(study.spec.seed, index), **point}
    row.update({m: None for m in METRICS[study.spec.evaluator]})
    row["error"] = None
    return row


def evaluate_chunk(study: Study, items: list[tuple[int, dict[str, Any]]]) -> list[Row]:
    """One result row per ``(index, point)``, in the given order."""
    evaluator = study.spec.evaluator
    if evaluator == "analytical":
        return _analytical(study, items)
    rows = []
    for index, point in items:
        row = empty_row(study, index, point)
        try:
            if evaluator == "simulate":
                row.update(_simulate(study, point, row["seed"]))
            else:
                from servewise.studies.policies import evaluate_policy

                row.update(evaluate_policy(study, point, row["seed"], study_catalog(study)))
        except (ServewiseError, ValueError, ArithmeticError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def _analytical(study: Study, items: list[tuple[int, dict[str, Any]]]) -> list[Row]:
    from servewise.perf.batch import predict_batch
    from servewise.perf.efficiency import default_efficiency

    cat = study_catalog(study)
    rows = [empty_row(study, index, point) for index, point in items]
    groups: dict[tuple[str, str], list[tuple[int, ServingConfig, int, int, int, float | None]]] = {}
    for k, (_, point) in enumerate(items):
        try:
            cfg = serving_config(point, cat)
            wl = point_workload(study, point)
        except (ServewiseError, ValueError) as exc:
            rows[k]["error"] = f"{type(exc).__name__}: {exc}"
            continue
        i, o = max(int(round(wl.input_len.mean)), 1), max(int(round(wl.output_len.mean)), 1)
        c = int(point.get("concurrency") or wl.concurrency or cfg.max_num_seqs)
        rate = wl.arrival_rate_per_s
        vendor = _vendor(cat, cfg.gpu)
        groups.setdefault((cfg.engine.value, vendor), []).append((k, cfg, i, o, c, rate))
    for (engine, vendor), members in groups.items():
        pred = predict_batch(
            [m[1] for m in members],
            input_len=np.array([m[2] for m in members]),
            output_len=np.array([m[3] for m in members]),
            concurrency=np.array([m[4] for m in members]),
            efficiency=default_efficiency(engine, vendor),
            catalog=cat,
        )
        for j, (k, cfg, _i, o, _c, rate) in enumerate(members):
            row = rows[k]
            if not pred.fits[j]:
                row["error"] = f"DoesNotFit: {pred.reasons[j]}"
                continue
            thr, req = float(pred.throughput_tok_s[j]), float(pred.request_rate_per_s[j])
            ttft, tpot, cost_h = float(pred.ttft_ms[j]), float(pred.tpot_ms[j]), float(pred.cost_per_hour[j])
            replicas = max(1, math.ceil(rate / req)) if rate else 1
            row.update(
                throughput_tok_s=thr,
                ttft_ms=ttft,
                tpot_ms=tpot,
                e2e_ms=ttft + (o - 1) * tpot,
                request_rate_per_s=req,
                cost_per_hour=cost_h,
                cost_per_1m_output_tokens=cost_h / (thr * 3600.0) * 1e6,
                kv_capacity_tokens=float(pred.kv_capacity_tokens[j]),
                replicas=replicas,
                fleet_cost_per_hour=replicas * cost_h,
                quality=_quality(cat, cfg.model, cfg.quantization),
            )
    return rows


@functools.lru_cache(maxsize=4096)
def _vendor(cat: Catalog, gpu: str) -> str:
    return cat.gpu(gpu).vendor.lower()


@functools.lru_cache(maxsize=4096)
def _quality(cat: Catalog, model: str, quant: Quantization) -> float | None:
    return quality_score(cat.model(model), quant)[0]


def _simulate(study: Study, point: dict[str, Any], seed: int) -> dict[str, Any]:
    from servewise.perf.simulator import simulate_config

    cat = study_catalog(study)
    cfg = serving_config(point, cat)
    wl = point_workload(study, point)
    res = simulate_config(
        cfg,
        wl,
        num_requests=study.spec.num_requests,
        seed=seed,
        slo=study.spec.slo,
        catalog=cat,
        warmup_fraction=0.1,
    )
    return {
        "throughput_tok_s": res.throughput_tok_s,
        "request_rate_per_s": res.request_throughput_per_s,
        "ttft_p50_ms": res.ttft_ms.p50,
        "ttft_p99_ms": res.ttft_ms.p99,
        "tpot_p50_ms": res.tpot_ms.p50,
        "tpot_p99_ms": res.tpot_ms.p99,
        "e2e_p99_ms": res.e2e_ms.p99,
        "slo_attainment": res.slo_attainment,
        "goodput_per_s": res.goodput_per_s,
        "kv_usage_peak": res.kv_usage_peak,
        "preemptions": float(res.preemptions),
        "cost_per_1m_output_tokens": res.cost_per_1m_output_tokens,
        "quality": _quality(cat, cfg.model, cfg.quantization),
    }
