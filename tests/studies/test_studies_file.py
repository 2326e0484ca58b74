"""Bad study files fail before any work starts, naming the field at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from studies_helpers import make_study, small_study_dict

from servewise.errors import InputError, UnknownIdError
from servewise.studies.running import run_study
from servewise.studies.study_file import load_study, study_from_dict

STUDIES = Path(__file__).parents[2] / "studies"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"axes": {"gpu": ["l4"], "colour": ["red"]}}, "axes", "unknown axis 'colour'"),
        (
            {"axes": {"gpu": ["l4"], "model": ["llama-3.1-8b", "llama-9-1b"]}},
            "axes.model[1]",
            "unknown model",
        ),
        ({"axes": {"gpu": ["l4", "tpu-v9"]}}, "axes.gpu[1]", "unknown gpu"),
        ({"axes": {"gpu": []}}, "axes", "axis 'gpu' is empty"),
        ({"axes": {}}, "axes", "at least one axis"),
        ({"constraints": ["max_num_seqs > 100000"]}, "constraints[0]", "no value of max_num_seqs"),
        ({"constraints": ["latency_ms <= 3"]}, "constraints[0]", "unknown metric 'latency_ms'"),
        ({"constraints": ["tpot_ms <= 40", "tpot_ms < 0"]}, "constraints[1]", "never below 0"),
        ({"constraints": ["tpot_ms is small"]}, "constraints[0]", "not 'field <op> value'"),
        ({"objective": {"metric": "happiness"}}, "objective.metric", "unknown metric"),
        (
            {"fixed": {"model": "llama-3.1-8b", "workload": "batch"}},
            "fixed.workload",
            "unknown workload 'batch'",
        ),
        ({"sampling": {"method": "optuna", "n": 10}, "objective": None}, "objective", "optuna"),
        ({"sampling": {"method": "sobol"}}, "sampling.n", "needs n"),
        ({"axes": {"gpu": ["l4"], "weights": ["int3"]}}, "axes.weights[0]", "unknown dtype"),
        ({"axes": {"gpu": ["l4"], "max_num_seqs": [0]}}, "axes.max_num_seqs[0]", "positive integer"),
        ({"report": {"compare_by": "colour"}}, "report.compare_by", "not an axis"),
    ],
)
def test_bad_study_names_the_field(overrides: dict, field: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        make_study(**overrides)
    assert err.value.field == field
    assert words in str(err.value)
    assert "test-study.yaml" in str(err.value)


def test_unknown_model_is_an_unknown_id_with_suggestions() -> None:
    with pytest.raises(UnknownIdError, match="did you mean llama-3.1-8b"):
        make_study(fixed={"model": "llama-3.1-8"})


def test_hypothetical_chip_from_the_study_file_is_a_gpu_axis_value() -> None:
    study = make_study(
        hardware=[{"id": "l4-2xbw", "base": "l4", "scale": {"memory_bandwidth_gbs": 2.0}}],
        axes={"gpu": ["l4", "l4-2xbw"]},
    )
    chip = study.catalog().gpu("l4-2xbw")
    assert chip.hypothetical and chip.memory_bandwidth_gbs == pytest.approx(
        2 * study.catalog().gpu("l4").memory_bandwidth_gbs
    )


def test_bad_inline_chip_names_its_field() -> None:
    with pytest.raises(InputError, match="hardware\\[0\\].base"):
        make_study(hardware=[{"id": "x1", "base": "nope-gpu"}], axes={"gpu": ["x1"]})


@pytest.mark.parametrize("peak", [-1.0, 0.0])
def test_an_inline_chip_without_positive_compute_is_refused(peak: float) -> None:
    """A chip with no compute would predict negative or NaN throughput (a negative 'best' cost)."""
    with pytest.raises(InputError, match="tflops must be > 0"):
        make_study(
            hardware=[{"id": "nt", "base": "h100-sxm", "tflops": {"bf16": peak}}], axes={"gpu": ["nt"]}
        )


def test_a_study_too_large_to_hold_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    axes = {
        "max_num_seqs": list(range(1, 101)),
        "concurrency": list(range(1, 101)),
        "gpu": ["l4", "h100-sxm"],
    }
    monkeypatch.setenv("SERVEWISE_MAX_STUDY_POINTS", "10000")
    with pytest.raises(
        InputError, match="its grid has 20,000 points .after axis constraints., more than 10,000"
    ):
        make_study(axes=axes)
    make_study(axes=axes, constraints=["max_num_seqs <= 50"])  # 10,000: allowed
    with pytest.raises(InputError, match="it samples 20,000 points"):
        make_study(axes=axes, sampling={"method": "sobol", "n": 20000})
    make_study(axes=axes, sampling={"method": "optuna", "n": 20})  # asks 20 trials; never builds the grid
    monkeypatch.setenv("SERVEWISE_MAX_STUDY_POINTS", "1e6")
    make_study(axes=axes)
    monkeypatch.setenv("SERVEWISE_MAX_STUDY_POINTS", "lots")
    with pytest.raises(InputError, match="SERVEWISE_MAX_STUDY_POINTS.*not a number of points"):
        make_study(axes=axes)


def test_errors_come_before_any_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(small_study_dict(axes={"gpu": ["l4", "tpu-v9"]})))
    with pytest.raises(InputError):
        run_study(load_study(bad), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\naxes: [unclosed\n")
    with pytest.raises(InputError, match="broken.yaml.*invalid YAML"):
        load_study(bad)


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_studies_load(path: Path) -> None:
    study = load_study(path)
    assert study.spec.question.strip()


def test_trace_workloads_resolve_next_to_the_study_file(tmp_path: Path) -> None:
    import numpy as np

    trace = tmp_path / "traces" / "day.csv"
    trace.parent.mkdir()
    rows = [(0.5 * k, 200 + 100 * (k % 3), 50 + k % 2) for k in range(21)]
    trace.write_text(
        "arrival_s,input_len,output_len\n" + "\n".join(f"{a},{i},{o}" for a, i, o in rows) + "\n"
    )
    data = small_study_dict(
        workloads={"day": {"trace": "traces/day.csv"}}, fixed={"model": "llama-3.1-8b", "workload": "day"}
    )
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    analytical = load_study(tmp_path / "s.yaml").spec.workloads["day"]
    assert analytical.input_len.mean == round(np.mean([r[1] for r in rows]))
    assert analytical.arrival_rate_per_s == pytest.approx(2.0)  # 20 gaps over 10 s
    data["evaluator"], data["constraints"], data["objective"] = "simulate", [], None
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(data))
    assert load_study(tmp_path / "sim.yaml").spec.workloads["day"].trace == str(trace)
    data["workloads"] = {"day": {"trace": "traces/missing.csv"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="cannot read trace") as err:
        load_study(tmp_path / "bad.yaml")
    assert err.value.field == "workloads.day.trace"


def test_a_fraction_above_one_admits_nothing() -> None:
    data = small_study_dict(evaluator="simulate", constraints=["slo_attainment > 1"], objective=None)
    data["workloads"]["chat"]["arrival_rate_per_s"] = 2
    with pytest.raises(InputError, match="never below 0 or above 1") as err:
        study_from_dict(data, source="s.yaml")
    assert err.value.field == "constraints[0]"
