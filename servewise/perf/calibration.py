"""Fit the efficiency factors to measurements, per engine, and check them on held-out rows.

The fit minimizes robust (soft-L1) log errors ``log(predicted / measured)`` over the training
split with scipy's ``least_squares``, over log-multipliers of the efficiency factors, plus a
weak prior pulling each factor toward its starting value so sparse engines stay physical.
Engines with few rows are fitted with a stronger prior toward the all-engine fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from servewise.perf.catalog import Catalog
from servewise.perf.efficiency import CALIBRATION_FILE, Efficiency, lookup
from servewise.perf.measurements import MeasurementRow
from servewise.perf.validation import PreparedRow, predict_prepared, prepare, validate

FITTED = (
    "compute",
    "memory",
    "attention_memory",
    "attention_compute",
    "comm",
    "step_overhead_ms",
    "seq_overhead_us",
    "layer_overhead_us",
    "int4_compute_penalty",
)
# Physically plausible ranges (absolute); the fit never leaves them, so a source's quirks show up
# as that source's error instead of an absurd factor that breaks every other prediction.
RANGES = {
    "compute": (0.3, 0.95),
    "memory": (0.5, 0.95),
    "attention_memory": (0.3, 0.95),
    "attention_compute": (0.2, 0.95),
    "comm": (0.2, 0.95),
    "step_overhead_ms": (0.1, 20.0),
    "seq_overhead_us": (1.0, 200.0),
    "layer_overhead_us": (1.0, 100.0),
    "int4_compute_penalty": (0.3, 1.0),
}
MIN_ROWS_OWN_FIT = 25
MIN_ROWS_VENDOR_FIT = 6


def _with(base: Efficiency, x: np.ndarray) -> Efficiency:
    """``base`` with the ``FITTED`` factors multiplied by ``exp(x)``, fractions kept physical."""
    return base.scaled(**{name: float(np.exp(lx)) for name, lx in zip(FITTED, x, strict=True)}).clipped()


# Hardware-kernel factors are shared physics and move little between engines; engine overheads
# are what differ most, so per-engine fits hold the former closer to the all-engine values.
KERNEL_FACTORS = {"compute", "memory", "attention_memory", "attention_compute", "comm"}


def fit(
    prepared: Sequence[PreparedRow],
    base: Efficiency,
    *,
    prior_weight: float = 0.15,
    kernel_prior: float | None = None,
) -> tuple[Efficiency, dict[str, Any]]:
    """Least-squares fit of ``FITTED`` factors around ``base`` on ``prepared`` rows.

    Rows are weighted so every (source, metric) group counts the same in total.
    """
    usable = [p for p in prepared if p.error is None and p.row.measured]
    if not usable:
        return base, {"rows": 0}
    measured = np.array([p.row.measured for p in usable], dtype=float)
    # Each (source, metric) group carries the same total weight: one large table does not drown
    # the other sources, and a few TTFT rows count as much as hundreds of throughput rows.
    group_sizes: dict[tuple[str, str | None], int] = {}
    for p in usable:
        key = (p.row.source, p.row.metric)
        group_sizes[key] = group_sizes.get(key, 0) + 1
    weights = np.array([1.0 / np.sqrt(group_sizes[(p.row.source, p.row.metric)]) for p in usable])
    weights /= float(np.sqrt(np.mean(weights**2)))  # keep the data term's scale against the priors
    priors = np.array(
        [(kernel_prior if kernel_prior is not None and n in KERNEL_FACTORS else prior_weight) for n in FITTED]
    )
    if kernel_prior is not None:  # GEMM efficiency is the most hardware-bound factor: hold it closest
        priors[FITTED.index("compute")] = max(3.0, kernel_prior)

    def residuals(x: np.ndarray) -> np.ndarray:
        eff = _with(base, x)
        pred = np.array([predict_prepared(p, eff) for p in usable])
        return np.concatenate([weights * np.log(np.maximum(pred, 1e-9) / measured), priors * x])

    # Two starts: around the base, and with high per-sequence overhead (older engines spend
    # ~0.1 ms of CPU per sequence per step), so the fit does not fall into a low-compute minimum.
    lo = np.array([np.log(RANGES[n][0] / getattr(base, n)) for n in FITTED])
    hi = np.array([np.log(RANGES[n][1] / getattr(base, n)) for n in FITTED])
    lo, hi = np.minimum(lo, -1e-6), np.maximum(hi, 1e-6)
    starts = [np.zeros(len(FITTED)), np.where(np.array(FITTED) == "seq_overhead_us", 2.0, 0.0)]
    results = [
        least_squares(
            residuals, np.clip(x0, lo, hi), loss="soft_l1", f_scale=0.15, bounds=(lo, hi), max_nfev=60
        )
        for x0 in starts
    ]
    best = min(results, key=lambda r: r.cost)
    return _with(base, best.x), {"rows": len(usable), "cost": float(best.cost), "nfev": int(best.nfev)}


def calibrate(
    rows: Sequence[MeasurementRow],
    *,
    catalog: Catalog | None = None,
    split: str = "train",
    engine_prior: float = 0.15,
) -> dict[str, Any]:
    """Fit per engine on ``split`` rows ("train" or "all"); report MAPE on train and holdout."""
    prepared = prepare(rows, catalog)
    train = [p for p in prepared if split == "all" or p.row.split == "train"]
    global_eff, global_info = fit(train, Efficiency())
    engines: dict[str, Efficiency] = {"default": global_eff}
    info: dict[str, Any] = {"default": global_info}
    for engine in sorted({p.row.calibration_key for p in train}):
        own = [p for p in train if p.row.calibration_key == engine]
        # The engine's own factors come from its NVIDIA rows when there are enough of them: other
        # vendors' software stacks get their own fit below instead of pulling this one.
        nvidia = [p for p in own if p.vendor == "nvidia"]
        base_rows = nvidia if len(nvidia) >= MIN_ROWS_OWN_FIT else own
        weight = engine_prior if len(base_rows) >= MIN_ROWS_OWN_FIT else max(1.0, engine_prior)
        engines[engine], info[engine] = fit(
            base_rows, global_eff, prior_weight=weight, kernel_prior=4 * weight
        )
        # A vendor's software stack (ROCm vs CUDA) shifts kernel efficiency: fit it around the engine.
        for vendor in sorted({p.vendor for p in own if p.vendor != "nvidia"}):
            mine = [p for p in own if p.vendor == vendor]
            if len(mine) >= MIN_ROWS_VENDOR_FIT:
                key = f"{engine}@{vendor}"
                engines[key], info[key] = fit(mine, engines[engine], prior_weight=1.0, kernel_prior=0.3)

    def efficiency_for(engine: str, vendor: str) -> Efficiency:
        return lookup(engines, engine, vendor)

    report = validate(rows, efficiency_for=efficiency_for, catalog=catalog)
    return {
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "fitted_on_split": split,
        "engines": {k: v.to_dict() for k, v in engines.items()},
        "fit": info,
        "mape_by_split": report.mape_by_split,
        "mape_by_engine": report.mape_by_engine,
        "counts": report.counts,
    }


def write_calibration(result: dict[str, Any], path: Path = CALIBRATION_FILE) -> Path:
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path
