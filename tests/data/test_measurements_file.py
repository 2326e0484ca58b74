"""Checks on the published measurements file that the performance model is fitted and validated on.

Each row must be readable by any CSV reader, use catalog ids and valid dtypes, carry a positive value
and say where the number comes from; no row may appear twice.
"""

from __future__ import annotations

import csv
import importlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from servewise.perf.measurements import METRICS as MEASURED_METRICS
from servewise.perf.measurements import REQUIRED_COLUMNS

MEASUREMENTS = Path(__file__).resolve().parents[2] / "data" / "published" / "measurements.csv"
SOURCES_DOC = MEASUREMENTS.with_name("SOURCES.md")

REQUIRED = list(REQUIRED_COLUMNS)  # the reader's own list (CONVENTIONS.md)
EXTRA = ["engine", "engine_version", "note"]
METRICS = set(MEASURED_METRICS)
DTYPES = {"bf16", "fp16", "fp8", "int8", "int4", "fp4"}
ENGINES = {"vllm", "sglang", "trtllm", "tgi", "lmdeploy"}
# Fallback ids (CONVENTIONS.md) used only when the catalog module is not importable.
FALLBACK_MODELS = {
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "qwen2.5-7b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "mistral-7b",
    "mixtral-8x7b",
    "gemma-2-9b",
    "gemma-2-27b",
    "deepseek-v2-lite",
}
FALLBACK_GPUS = {
    "a10g",
    "l4",
    "l40s",
    "a100-40gb",
    "a100-80gb",
    "h100-pcie",
    "h100-sxm",
    "h200",
    "mi300x",
    "b200",
}


def _ids(entries: Any) -> set[str]:
    if callable(entries):
        entries = entries()
    if isinstance(entries, dict):
        return {str(k) for k in entries}
    return {str(getattr(e, "id", e)) for e in entries}


def catalog_ids() -> tuple[set[str], set[str]]:
    """Model and GPU ids from servewise's catalog when it is importable, else the documented lists."""
    try:
        module = importlib.import_module("servewise.perf.catalog")
        catalog = module.get_catalog()
        return _ids(catalog.models), _ids(catalog.gpus)
    except (ImportError, AttributeError, TypeError):
        return FALLBACK_MODELS, FALLBACK_GPUS


def test_catalog_ids_come_from_the_catalog_when_present() -> None:
    models, gpus = catalog_ids()
    # Whichever way they were found, the documented ids must all be known.
    assert models >= FALLBACK_MODELS
    assert gpus >= FALLBACK_GPUS


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with MEASUREMENTS.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames is not None
        missing = [c for c in REQUIRED + EXTRA if c not in reader.fieldnames]
        assert not missing, f"{MEASUREMENTS}: missing columns {missing}"
        data = list(reader)
    assert data, f"{MEASUREMENTS} has no data rows"
    return data


def test_every_row_has_the_header_width(rows: list[dict[str, str]]) -> None:
    # DictReader puts surplus cells under the key None and fills short rows with None.
    bad = [i for i, r in enumerate(rows, start=2) if None in r or any(v is None for v in r.values())]
    assert not bad, f"rows with a wrong number of cells at lines {bad[:10]}"


def test_ids_are_catalog_ids(rows: list[dict[str, str]]) -> None:
    models, gpus = catalog_ids()
    bad_models = sorted({r["model"] for r in rows} - models)
    bad_gpus = sorted({r["gpu"] for r in rows} - gpus)
    assert not bad_models, f"unknown model ids: {bad_models}"
    assert not bad_gpus, f"unknown gpu ids: {bad_gpus}"


def test_dtypes_metrics_and_engines_are_valid(rows: list[dict[str, str]]) -> None:
    for line, r in enumerate(rows, start=2):
        assert r["weight_dtype"] in DTYPES, f"line {line}: weight_dtype {r['weight_dtype']!r}"
        assert r["kv_dtype"] in DTYPES, f"line {line}: kv_dtype {r['kv_dtype']!r}"
        assert r["metric"] in METRICS, f"line {line}: metric {r['metric']!r}"
        assert r["engine"] in ENGINES, f"line {line}: engine {r['engine']!r}"


def test_numbers_are_positive_and_consistent(rows: list[dict[str, str]]) -> None:
    for line, r in enumerate(rows, start=2):
        value = float(r["value"])
        assert value > 0, f"line {line}: value {value}"
        ints = {
            c: int(r[c]) for c in ("num_gpus", "tensor_parallel", "input_len", "output_len", "concurrency")
        }
        assert all(v > 0 for v in ints.values()), f"line {line}: non-positive field in {ints}"
        assert ints["num_gpus"] % ints["tensor_parallel"] == 0, f"line {line}: TP does not divide num_gpus"


def test_every_row_names_a_documented_source(rows: list[dict[str, str]]) -> None:
    doc = SOURCES_DOC.read_text()
    for line, r in enumerate(rows, start=2):
        source = r["source"].strip()
        assert source, f"line {line}: empty source"
        assert source.startswith("http") or "@" in source, f"line {line}: source is not a URL or repo@path"
        locator = source.split(" ")[0]
        assert locator in doc, f"line {line}: source {locator} is not described in {SOURCES_DOC.name}"


def test_no_duplicate_rows(rows: list[dict[str, str]]) -> None:
    counts = Counter(tuple(r[c] for c in REQUIRED + ["engine", "engine_version"]) for r in rows)
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"duplicate rows: {dupes[:3]}"


def test_every_row_explains_its_mapping(rows: list[dict[str, str]]) -> None:
    # The note carries what the source does not fit into columns (statistic, offline mode, assumptions).
    empty = [line for line, r in enumerate(rows, start=2) if not r["note"].strip()]
    assert not empty, f"rows without a note at lines {empty[:10]}"


def test_coverage_targets(rows: list[dict[str, str]]) -> None:
    per_metric = Counter(r["metric"] for r in rows)
    assert len(rows) >= 120
    assert per_metric["throughput_tok_s"] >= 60, per_metric
    assert per_metric["ttft_ms"] >= 25, per_metric
    assert per_metric["tpot_ms"] >= 25, per_metric
    assert len({r["source"] for r in rows}) >= 8
    assert {"bf16", "fp8"} <= {r["weight_dtype"] for r in rows}
    assert len({r["gpu"] for r in rows}) >= 4
    assert len({r["engine"] for r in rows}) >= 2
