"""Predict every row of a measurement file and report per-row error and MAPE per metric."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from servewise.errors import ServewiseError
from servewise.perf.analytical import closed_loop
from servewise.perf.catalog import Catalog, get_catalog
from servewise.perf.efficiency import Efficiency, default_efficiency
from servewise.perf.measurements import MeasurementRow
from servewise.perf.memory import plan_memory
from servewise.perf.shapes import ReplicaShape, replica_shape

EfficiencyFor = Callable[[str, str], Efficiency]  # (engine, gpu vendor) -> efficiency


@dataclass(frozen=True)
class PreparedRow:
    """A row with everything that does not depend on efficiency computed once."""

    row: MeasurementRow
    shape: ReplicaShape | None
    kv_capacity_tokens: int
    error: str | None
    vendor: str = "nvidia"


def prepare(rows: Sequence[MeasurementRow], catalog: Catalog | None = None) -> list[PreparedRow]:
    cat = catalog or get_catalog()
    out = []
    for r in rows:
        if r.error or r.config is None:
            out.append(PreparedRow(r, None, 0, r.error or "row could not be parsed"))
            continue
        try:
            model, hw = cat.model(r.config.model), cat.gpu(r.config.gpu)
            mem = plan_memory(model, hw, r.config, seq_len=r.input_len + r.output_len)
            if not mem.fits:
                out.append(PreparedRow(r, None, 0, f"does not fit: {mem.reason}"))
                continue
            shape = replica_shape(model, hw, r.config)
            out.append(PreparedRow(r, shape, mem.kv_capacity_tokens, None, hw.vendor.lower()))
        except (ServewiseError, ValueError) as exc:
            out.append(PreparedRow(r, None, 0, str(exc)))
    return out


def predict_prepared(p: PreparedRow, eff: Efficiency) -> float:
    r = p.row
    assert p.shape is not None and r.config is not None
    cl = closed_loop(p.shape, eff, r.config, p.kv_capacity_tokens, r.input_len, r.output_len, r.concurrency)
    if r.metric == "throughput_tok_s":
        return cl.throughput_tok_s * r.replicas
    if r.metric == "ttft_ms":
        return cl.ttft_s * 1e3
    return cl.tpot_s * 1e3


class RowResult(BaseModel):
    index: int
    metric: str | None
    measured: float | None
    predicted: float | None
    rel_error: float | None
    error: str | None
    split: str
    engine: str
    source: str


class ValidationReport(BaseModel):
    rows: list[RowResult]
    mape: dict[str, float]
    mape_by_split: dict[str, dict[str, float]]
    mape_by_engine: dict[str, dict[str, float]]
    counts: dict[str, int]


def _mape(results: Sequence[RowResult]) -> dict[str, float]:
    by_metric: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.rel_error is not None and r.metric:
            by_metric[r.metric].append(abs(r.rel_error))
    return {m: round(float(np.mean(v)) * 100.0, 2) for m, v in sorted(by_metric.items())}


def validate(
    rows: Sequence[MeasurementRow],
    *,
    efficiency_for: EfficiencyFor | None = None,
    catalog: Catalog | None = None,
) -> ValidationReport:
    eff_for = efficiency_for or default_efficiency
    results = []
    for p in prepare(rows, catalog):
        r = p.row
        predicted = rel = None
        error = p.error
        if error is None:
            try:
                predicted = predict_prepared(p, eff_for(r.calibration_key, p.vendor))
                rel = (predicted - r.measured) / r.measured if r.measured else None
            except (ServewiseError, ValueError, ZeroDivisionError) as exc:
                error = str(exc)
        results.append(
            RowResult(
                index=r.index,
                metric=r.metric,
                measured=r.measured,
                predicted=None if predicted is None else round(predicted, 4),
                rel_error=None if rel is None else round(rel, 4),
                error=error,
                split=r.split,
                engine=r.engine,
                source=r.source,
            )
        )
    splits = {s: _mape([r for r in results if r.split == s]) for s in ("train", "holdout")}
    engines = sorted({r.engine for r in results})
    return ValidationReport(
        rows=results,
        mape=_mape(results),
        mape_by_split=splits,
        mape_by_engine={e: _mape([r for r in results if r.engine == e]) for e in engines},
        counts={
            "rows": len(results),
            "predicted": sum(r.predicted is not None for r in results),
            "errors": sum(r.error is not None for r in results),
        },
    )
