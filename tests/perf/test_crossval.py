"""Cross-validation: every row is predicted by a fit that never saw its group or its source."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_validation import row, write_csv

from servewise.errors import InputError
from servewise.perf.calibration import calibrate
from servewise.perf.crossval import cross_validate, split_folds
from servewise.perf.efficiency import Efficiency
from servewise.perf.measurements import read_measurements
from servewise.perf.validation import predict_prepared, prepare


def synthetic(tmp_path: Path, odd_source_factor: float) -> Path:
    """Rows from a hidden truth in three sources; source ``odd`` reports ``odd_source_factor`` x."""
    truth = Efficiency(compute=0.5, memory=0.7, step_overhead_ms=2.0)
    rows = [
        row(source=src, model=model, input_len=i, output_len=o, concurrency=c, value=1.0)
        for src in ("a", "b", "odd")
        for model in ("llama-3.1-8b", "qwen2.5-7b")
        for i, o in ((128, 512), (2048, 256))
        for c in (1, 32)
    ]
    path = write_csv(tmp_path / "m.csv", rows)
    for r, p in zip(rows, prepare(read_measurements(path)), strict=True):
        r["value"] = predict_prepared(p, truth) * (odd_source_factor if r["source"] == "odd" else 1.0)
    return write_csv(path, rows)


def test_folds_never_split_a_configuration_group_or_a_source(tmp_path: Path) -> None:
    rows = read_measurements(synthetic(tmp_path, 1.0))
    groups = [{r.group for r in fold} for fold in split_folds(rows, 3, "group")]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # no group in two folds
    assert sorted({r.source for r in f}.pop() for f in split_folds(rows, 3, "source")) == ["a", "b", "odd"]


def test_leaving_a_source_out_exposes_what_an_in_sample_fit_hides(tmp_path: Path) -> None:
    rows = read_measurements(synthetic(tmp_path, 3.0))
    in_sample = calibrate(rows, split="all")["mape_by_split"]["train"]["throughput_tok_s"]
    cv = cross_validate(rows, by="source")
    assert cv.rows["throughput_tok_s"] == len(rows) and cv.folds == 3
    # Held out, the odd source is predicted from the two honest ones: ~67% off on a third of the rows.
    assert cv.mape["throughput_tok_s"] > in_sample + 5.0
    assert cv.mape["throughput_tok_s"] > 15.0


def test_one_fold_is_a_clear_error(tmp_path: Path) -> None:
    rows = [r for r in read_measurements(synthetic(tmp_path, 1.0)) if r.source == "a"]
    with pytest.raises(InputError, match="at least 2 folds"):
        cross_validate(rows, by="source")
