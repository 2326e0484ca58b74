"""Reports: findings computed from the data, plots, the exact study file, versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

from studies_helpers import make_study

from servewise.perf.catalog import get_catalog
from servewise.studies.analysis import analyze, pareto_front
from servewise.studies.reporting import write_report
from servewise.studies.running import run_study

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_folder_is_self_contained(tmp_path: Path) -> None:
    study = make_study()
    run_study(study, tmp_path, serial=True, progress=False)
    for name in ("report.md", "results.parquet", "results.csv", "study.yaml", "versions.json", "pareto.png"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    assert (tmp_path / "study.yaml").read_text() == study.text
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert versions["catalog"] == get_catalog().version and versions["servewise"]
    report = (tmp_path / "report.md").read_text()
    for section in ("## Question", "## Method", "## Assumptions", "## Findings", "## Limitations"):
        assert section in report
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):
        assert (tmp_path / image).read_bytes()[:8] == PNG


def test_findings_follow_the_data(tmp_path: Path) -> None:
    study = make_study()
    rows = run_study(study, tmp_path / "a", serial=True, progress=False).rows
    feasible = [r for r in rows if not r["error"] and r["tpot_ms"] <= 40]
    best = min(feasible, key=lambda r: r["cost_per_1m_output_tokens"])
    report = (tmp_path / "a" / "report.md").read_text()
    top_line = next(line for line in report.splitlines() if line.startswith("- Top pick:"))
    assert f"gpu={best['gpu']}" in top_line and f"max_num_seqs={best['max_num_seqs']}" in top_line
    assert f"{len(feasible)} feasible" in report
    # remove the best point from the data: the report must name another pick
    rest = [r for r in rows if r["index"] != best["index"]]
    write_report(study, tmp_path / "b", rest, backend="serial")
    second = min((r for r in feasible if r is not best), key=lambda r: r["cost_per_1m_output_tokens"])
    top_b = next(
        x for x in (tmp_path / "b" / "report.md").read_text().splitlines() if x.startswith("- Top pick:")
    )
    assert top_b != top_line
    assert f"gpu={second['gpu']}" in top_b and f"weights={second['weights']}" in top_b


def test_no_feasible_point_says_so(tmp_path: Path) -> None:
    study = make_study(constraints=["tpot_ms <= 0.001"])
    run_study(study, tmp_path, serial=True, progress=False)
    assert "No point satisfies the constraints" in (tmp_path / "report.md").read_text()


def test_pareto_front_is_non_dominated_and_complete() -> None:
    rows = [
        {"tpot_ms": t, "cost_per_1m_output_tokens": c}
        for t, c in [(1, 9), (2, 5), (3, 6), (4, 1), (2, 7), (5, 1)]
    ]
    front = pareto_front(rows, "tpot_ms", "cost_per_1m_output_tokens")
    assert [(r["tpot_ms"], r["cost_per_1m_output_tokens"]) for r in front] == [(1, 9), (2, 5), (4, 1)]
    higher = pareto_front(
        [{"tpot_ms": 1, "throughput_tok_s": 10}, {"tpot_ms": 2, "throughput_tok_s": 5}],
        "tpot_ms",
        "throughput_tok_s",
    )
    assert len(higher) == 1  # more throughput at lower latency dominates


def test_sensitivity_ranks_axes_by_effect(tmp_path: Path) -> None:
    study = make_study()
    rows = run_study(study, tmp_path, serial=True, progress=False, report=False).rows
    f = analyze(study, rows)
    assert f.top is not None and f.sensitivity
    spreads = [hi / lo for _, lo, hi, _, _ in f.sensitivity]
    assert spreads == sorted(spreads, reverse=True)
    for axis, lo, _hi, at_lo, _ in f.sensitivity:
        match = [
            r
            for r in rows
            if r[axis] == at_lo and all(r[a] == f.top[a] for a in study.spec.axes if a != axis)
        ]
        assert match[0]["cost_per_1m_output_tokens"] == lo


def test_a_rate_axis_under_the_analytical_evaluator_says_what_it_moves(tmp_path: Path) -> None:
    """The analytical evaluator predicts a replica at its concurrency: sweeping the rate only sizes
    the fleet, and the report says so instead of crowning a rate by a cost that ignores it."""
    study = make_study(axes={"gpu": ["l4", "h100-sxm"], "arrival_rate_per_s": [0.1, 10.0]})
    rows = run_study(study, tmp_path, serial=True, progress=False).rows
    by_rate = {r["arrival_rate_per_s"]: r for r in rows if r["gpu"] == "h100-sxm"}
    assert by_rate[0.1]["tpot_ms"] == by_rate[10.0]["tpot_ms"]  # what the note is about
    assert by_rate[0.1]["replicas"] <= by_rate[10.0]["replicas"]
    assert "`arrival_rate_per_s` only sizes the fleet" in (tmp_path / "report.md").read_text()
    run_study(make_study(), tmp_path / "plain", serial=True, progress=False)
    assert "only sizes the fleet" not in (tmp_path / "plain" / "report.md").read_text()


def test_a_quality_scored_as_another_variant_is_said(tmp_path: Path) -> None:
    """No FP8 score was published for Llama 3.2 3B: its FP8 points carry the BF16 score, and the
    report says so (else quantization looks free)."""
    study = make_study(fixed={"model": "llama-3.2-3b"}, axes={"gpu": ["l4"], "weights": ["bf16", "fp8"]})
    run_study(study, tmp_path, serial=True, progress=False)
    report = (tmp_path / "report.md").read_text()
    assert "`quality` of llama-3.2-3b fp8 is its published bf16 score" in report
    assert "llama-3.2-3b bf16 is its" not in report


def test_a_one_point_front_is_said_as_one_point(tmp_path: Path) -> None:
    study = make_study(axes={"gpu": ["l4", "h100-sxm"]}, constraints=["tpot_ms <= 100"])
    rows = run_study(study, tmp_path, serial=True, progress=False).rows
    assert [r["gpu"] for r in rows if not r["error"] and r["tpot_ms"] <= 100] == ["h100-sxm"]
    report = (tmp_path / "report.md").read_text()
    assert ": one point, gpu=h100-sxm" in report and "1 points" not in report
