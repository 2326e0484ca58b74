"""Cross-validated error of the calibrated model: every row predicted by a fit that never saw it.

The fixed holdout split (``MeasurementRow.split``) is the reported score; it is small for some
metrics (TPOT rows come from few setups) and must not steer model development. Cross-validation
fills both gaps: rows are split into ``folds`` sets of whole configuration groups (or whole public
sources with ``by="source"``), each set is predicted by a calibration fitted on the others, and the
MAPE is taken over all out-of-fold predictions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from typing import Literal

from pydantic import BaseModel

from servewise.errors import InputError
from servewise.perf.calibration import calibrate
from servewise.perf.catalog import Catalog
from servewise.perf.efficiency import Efficiency, lookup
from servewise.perf.measurements import MeasurementRow
from servewise.perf.validation import validate

Grouping = Literal["group", "source"]


class CrossValidation(BaseModel):
    """Out-of-fold MAPE per metric (percent) and how many rows each rests on."""

    by: Grouping
    folds: int
    mape: dict[str, float]
    rows: dict[str, int]
    mape_by_engine: dict[str, dict[str, float]]


def source_family(row: MeasurementRow) -> str:
    """The publisher of a row: ``owner/repo`` or the URL's host path before any revision."""
    return row.source.split(" ")[0].split("@")[0]


def split_folds(rows: Sequence[MeasurementRow], folds: int, by: Grouping) -> list[list[MeasurementRow]]:
    """Rows split into folds that never share a configuration group (or a source)."""
    if by == "source":
        buckets: dict[str, list[MeasurementRow]] = defaultdict(list)
        for r in rows:
            buckets[source_family(r)].append(r)
        return list(buckets.values())
    out: list[list[MeasurementRow]] = [[] for _ in range(folds)]
    for r in rows:
        out[hashlib.sha256(f"cv|{r.group}".encode()).digest()[0] % folds].append(r)
    return [f for f in out if f]


def cross_validate(
    rows: Sequence[MeasurementRow],
    *,
    folds: int = 4,
    by: Grouping = "group",
    catalog: Catalog | None = None,
) -> CrossValidation:
    """Predict each fold with a calibration fitted on the other folds."""
    usable = [r for r in rows if r.error is None]
    parts = split_folds(usable, folds, by)
    if len(parts) < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {len(parts)}", field="folds")
    errors: dict[str, list[float]] = defaultdict(list)
    by_engine: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, held in enumerate(parts):
        fitted = [r for j, part in enumerate(parts) if j != i for r in part]
        result = calibrate(fitted, catalog=catalog, split="all")
        table = {name: Efficiency(**values) for name, values in result["engines"].items()}
        report = validate(held, efficiency_for=partial(lookup, table), catalog=catalog)
        for row in report.rows:
            if row.rel_error is not None and row.metric:
                errors[row.metric].append(abs(row.rel_error))
                by_engine[row.engine][row.metric].append(abs(row.rel_error))
    return CrossValidation(
        by=by,
        folds=len(parts),
        mape={m: round(100 * sum(v) / len(v), 2) for m, v in sorted(errors.items())},
        rows={m: len(v) for m, v in sorted(errors.items())},
        mape_by_engine={
            e: {m: round(100 * sum(v) / len(v), 2) for m, v in sorted(ms.items())}
            for e, ms in sorted(by_engine.items())
        },
    )
