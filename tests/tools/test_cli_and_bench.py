"""`servewise analyze` and the optimizer bench, end to end on the twin (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app


@pytest.mark.slow
def test_analyze_json_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEWISE_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(
        app, ["analyze", "--cluster", "sim:demo", "--json", "--report", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    by = {(f["ref"]["name"], f["kind"]) for f in doc["findings"]}
    assert ("chat-assistant", "kv_saturation") in by  # the demo's documented problems
    assert ("code-review", "prefill_bound") in by
    for f in doc["findings"]:
        assert f["evidence"] and f["severity"] in ("info", "warning", "critical")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "kv_saturation" in report and "| deployment |" in report


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_optimizer_bench_shape_and_servewise_targets() -> None:
    from servewise.tools.optimizer_bench import TRUTH_REPEATS, TRUTH_REQUESTS, run

    # One scenario under the bench's full truth (3 x 10 000 requests; 262-272 s alone on 2 cores). Its
    # svc-2 broke the SLO twice: one 1000-request run read 0.80 of the TPOT objective where the long
    # run reads 1.04 (the under-prediction rule sends that pass to a confirming run); later another
    # TP=4 A100 pick read 0.83 and 0.89 over two runs, with a spread that 8 simulated runs put at 5 %
    # and 24 runs at 11 % (``verifying.SPREAD_SEEDS``).
    result = run(1, 11)
    assert result["truth"] == (
        f"mean p99 of {TRUTH_REPEATS} independent benchmark runs of {TRUTH_REQUESTS} requests"
    )
    methods = result["methods"]
    assert set(methods) == {"servewise", "uncalibrated", "random", "current"}
    sw = methods["servewise"]
    assert sw["slo_violations"] == 0 and sw["benchmarks_max"] <= 8
    assert methods["random"]["benchmarks_per_deployment"] <= 8
    for m in methods.values():  # misses above the optimum are at most all deployments above it
        above = round((1 - m["at_or_below_optimum"]) * m["deployments"])
        assert m["above_optimum"] == above
        assert 0 <= m["above_optimum_at_slo_edge"] <= above
    for d in result["deployments"]:
        assert 0 < d["optimum_worst_ratio"] <= 1.0  # the optimum passes the truth it was chosen by
