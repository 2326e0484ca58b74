"""Prediction tools: one configuration's performance, and a what-if (current + changes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from servewise.domain import SLO, ServingConfig
from servewise.perf.analytical import LoadPrediction, predict_load
from servewise.perf.catalog import get_catalog
from servewise.tools.analyzing import find_deployment
from servewise.tools.calibrating import Calibration
from servewise.tools.context import current_context
from servewise.tools.registry import registry
from servewise.tools.sizing import Load, forecast, meets


class PredictInput(BaseModel):
    config: ServingConfig
    input_len: int = Field(gt=0, le=2_000_000)
    output_len: int = Field(gt=0, le=2_000_000)
    arrival_rate_per_s: float = Field(
        gt=0, description="requests/s to the whole deployment (split over replicas)"
    )


class PredictOutput(BaseModel):
    per_replica: LoadPrediction
    replicas: int
    cost_per_hour: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float


def _predict(
    config: ServingConfig, input_len: float, output_len: float, rate: float, cal: Calibration
) -> PredictOutput:
    per = predict_load(
        config,
        input_len=round(input_len),
        output_len=round(output_len),
        arrival_rate_per_s=rate / max(config.replicas, 1),
        efficiency=cal.efficiency(config),
    )
    load = Load(input_len, output_len, output_len, rate, rate)
    fc = forecast(cal, config, load)
    price = get_catalog().gpu(config.gpu).price_per_gpu_hour
    return PredictOutput(
        per_replica=per,
        replicas=config.replicas,
        cost_per_hour=config.total_gpus * price,
        ttft_p99_ms=fc.ttft_p99_ms,
        tpot_p99_ms=fc.tpot_p99_ms,
        e2e_p99_ms=fc.e2e_p99_ms,
    )


@registry.tool()
def predict_performance(args: PredictInput) -> PredictOutput:
    """Predict latency, throughput, KV use and $/h of a configuration at a load (analytical model)."""
    return _predict(args.config, args.input_len, args.output_len, args.arrival_rate_per_s, Calibration())


class WhatIfInput(BaseModel):
    name: str = Field(description="deployment name")
    namespace: str = "default"
    changes: dict[str, Any] = Field(description="ServingConfig fields to change, e.g. {'max_num_seqs': 256}")
    arrival_rate_per_s: float | None = Field(
        default=None, gt=0, description="load to predict at (default: declared)"
    )


class WhatIfOutput(BaseModel):
    current: ServingConfig
    proposed: ServingConfig
    before: PredictOutput | None
    after: PredictOutput | None
    slo: SLO | None
    meets_slo_before: bool | None
    meets_slo_after: bool | None
    errors: list[str] = Field(default_factory=list)


@registry.tool()
def what_if(args: WhatIfInput) -> WhatIfOutput:
    """Predict a deployment before and after changing some knobs, at its declared (or a given) load."""
    from servewise.errors import ServewiseError

    dep = find_deployment(current_context().cluster, args.name, args.namespace)
    proposed = dep.config.with_changes(**args.changes)
    wl = dep.workload
    rate = args.arrival_rate_per_s or (wl.arrival_rate_per_s if wl else None)
    if wl is None or rate is None:
        raise ValueError(f"deployment {dep.ref.key} has no declared load; pass arrival_rate_per_s")
    out: dict[str, PredictOutput | None] = {}
    errors = []
    for key, cfg in (("before", dep.config), ("after", proposed)):
        try:
            out[key] = _predict(cfg, wl.input_len.mean, wl.output_len.mean, rate, Calibration())
        except ServewiseError as exc:
            out[key] = None
            errors.append(f"{key}: {exc}")

    def ok(p: PredictOutput | None) -> bool | None:
        if p is None or dep.slo is None:
            return None
        vals = {"ttft_p99_ms": p.ttft_p99_ms, "tpot_p99_ms": p.tpot_p99_ms, "e2e_p99_ms": p.e2e_p99_ms}
        return not p.per_replica.saturated and meets(dep.slo, vals)

    return WhatIfOutput(
        current=dep.config,
        proposed=proposed,
        before=out["before"],
        after=out["after"],
        slo=dep.slo,
        meets_slo_before=ok(out["before"]),
        meets_slo_after=ok(out["after"]),
        errors=errors,
    )
