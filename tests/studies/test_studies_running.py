"""Running studies: stored per point, resumable, failures recorded, identical on every backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from studies_helpers import make_study

from servewise.errors import BackendUnavailableError, InputError
from servewise.studies import running
from servewise.studies.backends import Backend
from servewise.studies.running import run_study
from servewise.studies.storing import ResultStore


def _strip(rows: list[dict]) -> list[dict]:
    return [dict(r) for r in rows]


def test_every_point_is_stored_with_its_metrics(tmp_path: Path) -> None:
    study = make_study()
    summary = run_study(study, tmp_path / "out", serial=True, progress=False)
    assert summary.points == summary.evaluated == 24 and summary.skipped == 0
    rows = summary.rows
    assert [r["index"] for r in rows] == list(range(24))
    ok = [r for r in rows if not r["error"]]
    assert ok and all(r["throughput_tok_s"] > 0 and r["tpot_ms"] > 0 for r in ok)
    # a bigger admission limit never lowers throughput on the same GPU and weights
    by_cfg = {(r["gpu"], r["weights"], r["max_num_seqs"]): r["throughput_tok_s"] for r in ok}
    for (gpu, w, seqs), thr in by_cfg.items():
        if (gpu, w, seqs * 4) in by_cfg:
            assert by_cfg[(gpu, w, seqs * 4)] >= thr
    assert (tmp_path / "out" / "results.parquet").exists() and (tmp_path / "out" / "results.csv").exists()


def test_failing_points_are_recorded_and_never_stop_the_study(tmp_path: Path) -> None:
    study = make_study(
        axes={"model": ["llama-3.1-8b", "llama-3.1-70b"], "tensor_parallel": [1, 3]},
        fixed={"gpu": "h100-sxm"},
        constraints=[],
    )
    rows = run_study(study, tmp_path / "out", serial=True, progress=False).rows
    assert len(rows) == 4
    errors = {(r["model"], r["tensor_parallel"]): r["error"] for r in rows}
    assert "tensor_parallel must be a power of two, got 3" in errors[("llama-3.1-8b", 3)]
    assert "power of two" in errors[("llama-3.1-70b", 3)]
    assert "weights need" in errors[("llama-3.1-70b", 1)]  # 141 GB of bf16 weights on one 80 GB H100
    assert errors[("llama-3.1-8b", 1)] is None
    assert [r["throughput_tok_s"] is not None for r in rows] == [r["error"] is None for r in rows]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "could not run" in report


class _Interrupting(Backend):
    """Serial evaluation that dies after ``n`` chunks, like a Ctrl-C or a lost cluster."""

    def __init__(self, n: int) -> None:
        self.n = n

    def run(self, study, chunks) -> Iterator[list[dict]]:  # type: ignore[no-untyped-def, override]
        for k, rows in enumerate(super().run(study, chunks)):
            if k == self.n:
                raise KeyboardInterrupt
            yield rows


def test_an_interrupted_study_resumes_and_skips_finished_points(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    study = make_study()
    reference = run_study(study, tmp_path / "ref", serial=True, progress=False, chunk_size=5).rows
    monkeypatch.setattr(running, "make_backend", lambda *a, **k: _Interrupting(2))
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", serial=True, progress=False, chunk_size=5)
    assert len(ResultStore(tmp_path / "out", study.fingerprint, "x").finished()) == 10
    monkeypatch.undo()
    resumed = run_study(study, tmp_path / "out", serial=True, progress=False, chunk_size=5)
    assert resumed.skipped == 10 and resumed.evaluated == 14
    assert _strip(resumed.rows) == _strip(reference)


def test_a_folder_holding_another_study_is_refused(tmp_path: Path) -> None:
    run_study(make_study(), tmp_path / "out", serial=True, progress=False, report=False)
    with pytest.raises(InputError, match="different study") as err:
        run_study(make_study(seed=8), tmp_path / "out", serial=True, progress=False)
    assert err.value.field == "--out"


def test_unreachable_ray_fails_fast_and_the_study_resumes_elsewhere(tmp_path: Path) -> None:
    study = make_study()
    run_study(study, tmp_path / "out", serial=True, progress=False, report=False, chunk_size=4)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match="127.0.0.1:9 does not answer.*resume"):
        run_study(study, tmp_path / "out", ray_address="127.0.0.1:9", progress=False)
    assert time.perf_counter() - started < 10
    again = run_study(study, tmp_path / "out", serial=True, progress=False)
    assert again.skipped == 24 and again.evaluated == 0


def test_optuna_search_is_reproducible_and_beats_the_median(tmp_path: Path) -> None:
    grid = run_study(make_study(), tmp_path / "grid", serial=True, progress=False, report=False).rows
    feasible = sorted(r["cost_per_1m_output_tokens"] for r in grid if not r["error"] and r["tpot_ms"] <= 40)
    study = make_study(sampling={"method": "optuna", "n": 12, "batch": 4})
    a = run_study(study, tmp_path / "a", serial=True, progress=False, report=False).rows
    b = run_study(study, tmp_path / "b", serial=True, progress=False, report=False, chunk_size=1).rows
    assert _strip(a) == _strip(b) and len(a) == 12
    found = [r["cost_per_1m_output_tokens"] for r in a if not r["error"] and r["tpot_ms"] <= 40]
    assert found and min(found) <= feasible[len(feasible) // 2]


@pytest.mark.slow
def test_process_pool_gives_the_same_rows_as_serial(tmp_path: Path) -> None:
    study = make_study(
        evaluator="simulate",
        num_requests=60,
        axes={"gpu": ["l4", "h100-sxm"], "max_num_seqs": [8, 64]},
        constraints=[],
        objective=None,
        workloads={
            "chat": {
                "input_len": {"kind": "lognormal", "mean": 500, "std": 300},
                "output_len": {"mean": 100},
                "arrival_rate_per_s": 2,
            }
        },
    )
    serial = run_study(study, tmp_path / "s", serial=True, progress=False, report=False).rows
    pool = run_study(study, tmp_path / "p", workers=2, progress=False, report=False, chunk_size=1).rows
    assert _strip(serial) == _strip(pool)
    assert len({r["ttft_p99_ms"] for r in serial}) == 4  # seeded per point, not one shared draw


@pytest.mark.slow
def test_local_ray_gives_the_same_rows_as_serial(tmp_path: Path) -> None:
    import ray

    study = make_study()
    serial = run_study(study, tmp_path / "s", serial=True, progress=False, report=False).rows
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_study(
            study, tmp_path / "r", ray_address="local", progress=False, report=False, chunk_size=3
        )
    finally:
        ray.shutdown()
    assert on_ray.backend == "ray"
    assert _strip(serial) == _strip(on_ray.rows)
