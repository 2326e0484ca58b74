"""Cross-validated error of the calibrated performance model (for model development).

The fixed holdout split of ``servewise perf validate`` is the score we report; changing the model
while watching it would slowly tune the model to it. Model changes are judged here instead, on
the TRAINING rows only: configuration groups are split into K folds, each fold is predicted by a
calibration fitted on the other folds, and the MAPE over all out-of-fold rows is printed.
``--by source`` leaves one public source out at a time instead (harder: a new lab, a new setup).

Run: `.venv/bin/python bench/perf_crossval.py [--folds 4] [--by group|source] [--rows train|all]`
"""

from __future__ import annotations

import argparse
import hashlib
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table

from servewise.perf.calibration import calibrate
from servewise.perf.efficiency import Efficiency, lookup
from servewise.perf.measurements import MeasurementRow, read_measurements
from servewise.perf.validation import validate


def folds(rows: list[MeasurementRow], k: int, by: str) -> list[list[MeasurementRow]]:
    """Rows split into folds that never share a configuration group (or a source)."""
    if by == "source":
        buckets: dict[str, list[MeasurementRow]] = defaultdict(list)
        for r in rows:
            buckets[r.source.split(" ")[0].split("@")[0]].append(r)
        return list(buckets.values())
    out: list[list[MeasurementRow]] = [[] for _ in range(k)]
    for r in rows:
        out[hashlib.sha256(f"cv|{r.group}".encode()).digest()[0] % k].append(r)
    return [f for f in out if f]


def out_of_fold(rows: list[MeasurementRow], k: int, by: str) -> dict[str, Any]:
    parts = folds(rows, k, by)
    abs_errors: dict[str, list[float]] = defaultdict(list)
    for i, held in enumerate(parts):
        fit_rows = [r for j, part in enumerate(parts) if j != i for r in part]
        engines = {
            name: Efficiency(**vals) for name, vals in calibrate(fit_rows, split="all")["engines"].items()
        }
        report = validate(held, efficiency_for=lambda e, v, t=engines: lookup(t, e, v))
        for row in report.rows:
            if row.rel_error is not None and row.metric:
                abs_errors[row.metric].append(abs(row.rel_error))
    return {m: (100 * sum(v) / len(v), len(v)) for m, v in sorted(abs_errors.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", default="data/published/measurements.csv")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--by", choices=("group", "source"), default="group")
    parser.add_argument("--rows", choices=("train", "all"), default="train")
    args = parser.parse_args()
    rows = [r for r in read_measurements(args.csv) if r.error is None]
    if args.rows == "train":
        rows = [r for r in rows if r.split == "train"]
    result = out_of_fold(rows, args.folds, args.by)
    table = Table(title=f"out-of-fold MAPE ({args.rows} rows, by {args.by})")
    table.add_column("metric")
    table.add_column("rows", justify="right")
    table.add_column("MAPE", justify="right")
    for metric, (mape, n) in result.items():
        table.add_row(metric, str(n), f"{mape:.1f}%")
    Console().print(table)


if __name__ == "__main__":
    main()
