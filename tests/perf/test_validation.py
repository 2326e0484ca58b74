"""Measurement files: bad rows reported per row, validation output shape, calibration recovers truth."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from servewise.errors import InputError
from servewise.perf.calibration import calibrate
from servewise.perf.efficiency import Efficiency
from servewise.perf.measurements import REQUIRED_COLUMNS, read_measurements
from servewise.perf.validation import predict_prepared, prepare, validate

HEADER = [*REQUIRED_COLUMNS, "engine", "note"]


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HEADER)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in HEADER})
    return path


def row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "source": "test",
        "model": "llama-3.1-8b",
        "gpu": "h100-sxm",
        "num_gpus": 1,
        "tensor_parallel": 1,
        "weight_dtype": "bf16",
        "kv_dtype": "bf16",
        "input_len": 1024,
        "output_len": 256,
        "concurrency": 16,
        "metric": "throughput_tok_s",
        "value": 1500,
        "engine": "vllm",
    }
    base.update(kw)
    return base


def test_bad_rows_name_their_field_and_the_rest_is_processed(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv",
        [
            row(),
            row(model="gpt-17"),
            row(input_len="-3"),
            row(metric="latency"),
            row(value="fast"),
            row(tensor_parallel=3, num_gpus=3),
            row(metric="ttft_ms", value=80),
        ],
    )
    rows = read_measurements(path)
    assert [r.error is None for r in rows] == [True, False, False, False, False, False, True]
    assert "gpt-17" in (rows[1].error or "")
    assert "input_len" in (rows[2].error or "")
    assert "metric" in (rows[3].error or "")
    assert "value" in (rows[4].error or "")
    report = validate(rows, efficiency_for=lambda e, v: Efficiency())
    assert [r.index for r in report.rows] == list(range(7))
    assert report.rows[0].predicted is not None and report.rows[6].predicted is not None
    assert report.rows[5].predicted is None and "power of two" in (report.rows[5].error or "")
    assert set(report.mape) == {"throughput_tok_s", "ttft_ms"}


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("source,model,gpu\nx,llama-3.1-8b,h100-sxm\n")
    with pytest.raises(InputError, match=r"broken\.csv.*missing columns"):
        read_measurements(path)


def test_multi_replica_rows_scale_throughput(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [row(num_gpus=1, concurrency=16), row(num_gpus=4, concurrency=64)])
    one, four = validate(read_measurements(path), efficiency_for=lambda e, v: Efficiency()).rows
    assert four.predicted == pytest.approx(4 * (one.predicted or 0), rel=1e-6)


def test_calibration_recovers_a_known_truth(tmp_path: Path) -> None:
    """Rows generated from a hidden Efficiency: the fit must beat the default and get close to zero error."""
    truth = Efficiency(
        compute=0.45, memory=0.7, attention_memory=0.5, step_overhead_ms=3.0, seq_overhead_us=40.0
    )
    rows = []
    for model, gpu, tp in [
        ("llama-3.1-8b", "h100-sxm", 1),
        ("llama-3.1-70b", "h100-sxm", 4),
        ("llama-3.1-8b", "a100-80gb", 1),
        ("qwen2.5-32b", "l40s", 2),
    ]:
        for i, o in [(128, 128), (1024, 256), (2048, 1024)]:
            for c in (1, 8, 64, 256):
                for metric in ("throughput_tok_s", "ttft_ms", "tpot_ms"):
                    rows.append(
                        row(
                            model=model,
                            gpu=gpu,
                            tensor_parallel=tp,
                            num_gpus=tp,
                            input_len=i,
                            output_len=o,
                            concurrency=c,
                            metric=metric,
                            value=1.0,
                            source=f"s{c}",
                        )
                    )
    parsed = read_measurements(write_csv(tmp_path / "synthetic.csv", rows))
    # replace the placeholder values with the truth's predictions
    prepared = prepare(parsed)
    values = [predict_prepared(p, truth) for p in prepared]
    for r, v in zip(rows, values, strict=True):
        r["value"] = v
    parsed = read_measurements(write_csv(tmp_path / "synthetic.csv", rows))
    before = validate(parsed, efficiency_for=lambda e, v: Efficiency()).mape
    result = calibrate(parsed, split="all")
    after = result["mape_by_engine"]["vllm"]
    assert max(before.values()) > 15.0
    assert max(after.values()) < 5.0, after


@pytest.mark.slow
def test_cli_validate_json_has_one_row_per_data_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [row(), row(model="nope"), row(metric="tpot_ms", value=9.0)])
    out = subprocess.run(
        [sys.executable, "-m", "servewise.cli", "perf", "validate", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert [r["index"] for r in doc["rows"]] == [0, 1, 2]
    assert set(doc["rows"][0]) >= {"index", "metric", "measured", "predicted", "rel_error", "error"}
    assert doc["rows"][1]["predicted"] is None and "nope" in doc["rows"][1]["error"]
    assert set(doc["mape"]) == {"throughput_tok_s", "tpot_ms"}


def test_cli_validate_plot_that_cannot_be_written_is_an_input_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from servewise.cli import app

    path = write_csv(tmp_path / "m.csv", [row()])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    plot = blocker / "plot.png"
    with pytest.raises(InputError, match="cannot write .*plot.png: ") as err:
        CliRunner().invoke(app, ["perf", "validate", str(path), "--plot", str(plot)], catch_exceptions=False)
    assert err.value.field == "--plot" and str(plot) in str(err.value)


@pytest.mark.slow
def test_cli_predict_json_and_clear_errors() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "servewise.cli",
            "perf",
            "predict",
            "--model",
            "meta-llama/Llama-3.3-70B-Instruct",
            "--gpu",
            "p5.48xlarge",
            "--tp",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(ok.stdout)
    assert {"throughput_tok_s", "ttft_ms", "tpot_ms"} <= set(doc)
    assert doc["config"]["model"] == "llama-3.1-70b" and doc["config"]["gpu"] == "h100-sxm"
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "servewise.cli",
            "perf",
            "predict",
            "--model",
            "llama-3.1-8b",
            "--gpu",
            "h100-sxm",
            "--output-len",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "output_len" in bad.stderr and "Traceback" not in bad.stderr


def test_another_vendors_rows_do_not_pull_an_engines_nvidia_factors(tmp_path: Path) -> None:
    """NVIDIA rows from one truth, MI300X rows from a much slower stack: the engine's own factors
    must still fit the NVIDIA rows; the MI300X rows get their own ``vllm@amd`` fit."""
    fast = Efficiency(compute=0.6, memory=0.8, step_overhead_ms=1.0)
    slow = Efficiency(compute=0.3, memory=0.5, step_overhead_ms=8.0)
    rows = [
        row(model=m, gpu=g, input_len=i, output_len=o, concurrency=c, source=g)
        for g in ("h100-sxm", "a100-80gb", "mi300x")
        for m in ("llama-3.1-8b", "qwen2.5-7b")
        for i, o in ((128, 512), (1024, 256), (2048, 1024))
        for c in (1, 16, 64, 256)
    ]
    path = write_csv(tmp_path / "vendors.csv", rows)
    for r, p in zip(rows, prepare(read_measurements(path)), strict=True):
        r["value"] = predict_prepared(p, slow if r["gpu"] == "mi300x" else fast)
    parsed = read_measurements(write_csv(path, rows))
    result = calibrate(parsed, split="all")
    assert "vllm@amd" in result["engines"]
    own = Efficiency(**result["engines"]["vllm"])
    nvidia = [r for r in parsed if r.raw["gpu"] != "mi300x"]
    report = validate(nvidia, efficiency_for=lambda e, v: own)
    assert report.mape["throughput_tok_s"] < 5.0, report.mape
