"""`servewise study run` and `servewise study nas` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from studies_helpers import small_study_dict
from typer.testing import CliRunner

from servewise.cli import app

runner = CliRunner()


def test_study_run_json(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_study_dict()))
    res = runner.invoke(
        app, ["study", "run", str(path), "--workers", "1", "--out", str(tmp_path / "o"), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["points"] == 24 and doc["evaluated"] == 24 and doc["backend"] == "serial"
    assert Path(doc["report"]).exists()
    again = json.loads(
        runner.invoke(
            app, ["study", "run", str(path), "--workers", "1", "--out", str(tmp_path / "o"), "--json"]
        ).stdout
    )
    assert again["skipped"] == 24 and again["evaluated"] == 0


def test_study_run_bad_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_study_dict(axes={"gpu": ["l4", "tpu-v9"]})))
    from servewise.errors import UnknownIdError

    res = runner.invoke(app, ["study", "run", str(path), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, UnknownIdError) and "axes.gpu[1]" in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_study_out_that_cannot_be_written_is_an_input_error_before_any_work(tmp_path: Path) -> None:
    """Not a traceback from ``mkdir`` (``--out /proc/x`` printed 23 lines): ``error: field '--out':
    cannot write PATH: ...``, exit 2, before a point is evaluated or a shape searched."""
    from servewise.errors import InputError

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small_study_dict()))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args in (
        ["study", "run", str(path), "--workers", "1"],
        ["study", "nas", "--gpu", "l4", "--params", "2..4", "--generations", "2", "--population", "8"],
    ):
        res = runner.invoke(app, [*args, "--out", str(blocker / "o")])
        assert isinstance(res.exception, InputError), res.output
        assert res.exception.field == "--out"
        assert str(res.exception).endswith(f"cannot write {blocker / 'o'}: Not a directory")


def test_study_nas_json(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "study",
            "nas",
            "--gpu",
            "l4",
            "--params",
            "2..4",
            "--objective",
            "throughput",
            "--generations",
            "8",
            "--population",
            "24",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert "PROXY" in doc["quality_proxy"] and "Hoffmann" in doc["quality_proxy"]
    assert doc["front"] and all(2 <= p["params_b"] <= 4 for p in doc["front"])
    assert (tmp_path / "front.png").exists() and (tmp_path / "front.csv").exists()


def test_study_nas_table_labels_the_proxy() -> None:
    res = runner.invoke(
        app, ["study", "nas", "--gpu", "l4", "--params", "2..4", "--generations", "5", "--population", "16"]
    )
    assert res.exit_code == 0, res.output
    assert "quality proxy (Chinchilla loss" in res.output and "shapes evaluated" in res.output


def test_study_inputs_a_researcher_got_wrong_are_refused_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(small_study_dict(fixed={"model": "llama-3.1-8b", "gpu_memory_utilization": 1.5}))
    )
    res = runner.invoke(app, ["study", "run", str(path), "--out", str(tmp_path / "o")])
    assert "must be a fraction in (0, 1], got 1.5" in str(res.exception)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(small_study_dict()))
    res = runner.invoke(app, ["study", "run", str(ok), "--out", str(tmp_path / "o2"), "--chunk-size", "0"])
    assert res.exit_code == 2 and not (tmp_path / "o2").exists()


def test_a_nas_that_nothing_fits_says_why(tmp_path: Path) -> None:
    res = runner.invoke(app, ["study", "nas", "--gpu", "l4", "--params", "500..600", "--generations", "2"])
    assert res.exit_code == 0 and "no shape fits: all" in res.stderr and "parameters outside" in res.stderr
