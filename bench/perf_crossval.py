"""Cross-validated error of the calibrated performance model (for model development).

The fixed holdout split of ``servewise perf validate`` is the score we report; changing the model
while watching it would slowly tune the model to it. Model changes are judged here instead, on
the TRAINING rows only: configuration groups are split into K folds, each fold is predicted by a
calibration fitted on the other folds, and the MAPE over all out-of-fold rows is printed.
``--by source`` leaves one public source out at a time instead (harder: a new lab, a new setup).
`servewise perf crossval` runs the same on all rows of a file.

Run: `.venv/bin/python bench/perf_crossval.py [CSV] [--folds 4] [--by group|source] [--rows train|all]`
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from servewise.perf.crossval import cross_validate
from servewise.perf.measurements import read_measurements


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("csv", nargs="?", default="data/published/measurements.csv")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--by", choices=("group", "source"), default="group")
    parser.add_argument("--rows", choices=("train", "all"), default="train")
    args = parser.parse_args()
    rows = [r for r in read_measurements(args.csv) if r.error is None]
    if args.rows == "train":
        rows = [r for r in rows if r.split == "train"]
    result = cross_validate(rows, folds=args.folds, by=args.by)
    table = Table(title=f"out-of-fold MAPE ({args.rows} rows, by {args.by}, {result.folds} folds)")
    table.add_column("metric")
    table.add_column("rows", justify="right")
    table.add_column("MAPE", justify="right")
    for metric, mape in result.mape.items():
        table.add_row(metric, str(result.rows[metric]), f"{mape:.1f}%")
    Console().print(table)


if __name__ == "__main__":
    main()
