"""The markdown report of `servewise analyze --propose --report`: readable impacts, honest headlines."""

from __future__ import annotations

from pathlib import Path

import pytest

from servewise.domain import DeploymentRef, Impact, Proposal, ServingConfig
from servewise.tools.analyzing import FleetAnalysis
from servewise.tools.proposing import DeploymentPlan, ParetoPoint, TrialRecord
from servewise.tools.reporting import write_report

CURRENT = ServingConfig(model="llama-3.1-70b", gpu="h100-sxm", tensor_parallel=4, replicas=3)
PROPOSED = CURRENT.with_changes(replicas=5)


def _proposal(before: float, after: float, uncertainty_pct: float = 95.1) -> Proposal:
    return Proposal(
        id="p-chat-assistant-1",
        ref=DeploymentRef(name="chat-assistant", namespace="chat"),
        current=CURRENT,
        proposed=PROPOSED,
        summary="3x -> 5x",
        predicted=Impact(
            cost_per_hour_before=before,
            cost_per_hour_after=after,
            ttft_p99_ms=2987.7041767366163,
            tpot_p99_ms=51.596829826810705,
            uncertainty_pct=uncertainty_pct,
            validated_by="benchmark:2+telemetry-calibrated(3 obs)",
        ),
        measured=Impact(
            cost_per_hour_before=before,
            cost_per_hour_after=after,
            ttft_p99_ms=2219.5948422604583,
            tpot_p99_ms=51.09096729976773,
            validated_by="benchmark of 1000 requests at 4.31 req/s (peak + headroom)",
        ),
        risk="medium",
        rollback="rollback(chat/chat-assistant)",
    )


def _trial(pred_ttft: float, meas_ttft: float, passed: bool = True) -> TrialRecord:
    return TrialRecord(
        config=PROPOSED,
        pool="h100",
        cost_per_hour=245.8,
        passed=passed,
        predicted={"ttft_p99_ms": pred_ttft, "tpot_p99_ms": 50.0},
        measured={"ttft_p99_ms": meas_ttft, "tpot_p99_ms": 51.0},
        requests=1000,
    )


def _front() -> list[ParetoPoint]:
    return [
        ParetoPoint(
            config=PROPOSED,
            pool="h100",
            cost_per_hour=245.8,
            ttft_p99_ms=2987.7,
            tpot_p99_ms=51.6,
            e2e_p99_ms=60000.0,
            picked=True,
        )
    ]


def _plan(**kw: object) -> DeploymentPlan:
    data: dict[str, object] = {
        "deployment": "chat-assistant",
        "namespace": "chat",
        "proposal": None,
        "current_cost_per_hour": 147.48,
        "pareto_front": _front(),
    }
    data.update(kw)
    return DeploymentPlan.model_validate(data)


def _report(tmp_path: Path, plan: DeploymentPlan) -> str:
    analysis = FleetAnalysis(source="sim:demo", window="15m", deployments=1)
    return write_report(analysis, [plan], tmp_path).read_text()


def test_impacts_are_table_cells_not_json(tmp_path: Path) -> None:
    plan = _plan(proposal=_proposal(147.48, 245.79999999999998), trials=[_trial(977.0, 2000.0)])
    text = _report(tmp_path, plan)
    assert "{" not in text and "cost_per_hour_before" not in text and "uncertainty_pct" not in text
    assert "| predicted | $147.48/h -> $245.80/h | 2,988 ms" in text
    assert "| 52 ms" in text  # TPOT p99, predicted
    assert "| measured | $147.48/h -> $245.80/h | 2,220 ms | 51 ms |" in text
    assert "benchmark:2+telemetry-calibrated(3 obs)" in text
    # the band as the p99s it allows: 2988 x 0.049 .. 2988 x 1.951
    assert "2,988 ms (146 ms - 5,829 ms)" in text
    assert "±95.1% band" in text
    assert "predicted 977 ms, measured 2,000 ms" in text  # the benchmark run the band comes from


def test_a_band_of_100_pct_or_more_starts_from_zero(tmp_path: Path) -> None:
    # a benchmark measured 2.3x the prediction: a 129% error relative to the predicted p99
    plan = _plan(proposal=_proposal(147.48, 245.8, uncertainty_pct=129.2), trials=[_trial(175.5, 402.0)])
    text = _report(tmp_path, plan)
    assert "2,988 ms (0.0 ms - 6,848 ms)" in text
    assert "±129.2% band" in text and "predicted 176 ms, measured 402 ms" in text


def test_a_costlier_proposal_says_it_adds_cost(tmp_path: Path) -> None:
    text = _report(tmp_path, _plan(proposal=_proposal(147.48, 245.8), trials=[_trial(977.0, 2000.0)]))
    assert "No cheaper configuration" not in text
    assert "cheapest configuration found that meets the SLO, adding $98.32/h" in text


def test_a_cheaper_proposal_says_it_saves(tmp_path: Path) -> None:
    text = _report(tmp_path, _plan(proposal=_proposal(393.28, 24.58), trials=[_trial(977.0, 2000.0)]))
    assert "a cheaper configuration that meets the SLO, saving $368.70/h" in text


def test_no_proposal_gives_the_reason_and_one_note_a_line(tmp_path: Path) -> None:
    reason = "no candidate passed its benchmark in 8 run(s); keeping the current config"
    plan = _plan(
        notes=["calibrated on telemetry of h100-sxm: fit residual 0.5%", reason],
        no_proposal_reason=reason,
    )
    text = _report(tmp_path, plan)
    assert "0.5% no candidate" not in text
    assert f"**No proposal**: {reason}." in text
    assert "No cheaper configuration" not in text  # nothing at any cost passed
    assert "\n- calibrated on telemetry of h100-sxm: fit residual 0.5%\n" in text
    assert text.count(reason) == 1


def test_a_plan_without_a_pareto_front_says_why(tmp_path: Path) -> None:
    plan = _plan(proposal=_proposal(20.48, 49.16), trials=[_trial(405.0, 1150.0)], pareto_front=[])
    text = _report(tmp_path, plan)
    assert "pareto-" not in text
    assert (
        "No Pareto plot: the optimizer's last search (after 1 benchmark run(s) recalibrated the model)"
        in text
    )
    drawn = _report(tmp_path / "with-front", _plan(proposal=_proposal(20.48, 49.16)))
    assert "![pareto-chat-chat-assistant.png](pareto-chat-chat-assistant.png)" in drawn
    assert "No Pareto plot" not in drawn
    assert (tmp_path / "with-front" / "pareto-chat-chat-assistant.png").exists()


def test_the_manifest_change_is_in_the_report(tmp_path: Path) -> None:
    patch = [{"op": "replace", "path": "/spec/replicas", "value": 5}]
    plan = _plan(proposal=_proposal(147.48, 245.8).model_copy(update={"manifest_patch": patch}))
    text = _report(tmp_path, plan)
    assert "Manifest change (JSON patch):" in text
    assert '"path": "/spec/replicas"' in text and "```json" in text


def test_a_fleet_with_no_findings_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    analysis = FleetAnalysis(source="sim:healthy", window="15m", deployments=1)
    text = write_report(analysis, [], tmp_path).read_text()
    assert "Every analyzer was quiet" in text and "| deployment | finding |" not in text


def test_the_band_comes_from_runs_a_calibrated_model_predicted(tmp_path: Path) -> None:
    """Demo support-bot: its first run, predicted before any benchmark, was off by 181 %; the third,
    predicted after two runs calibrated the model, by 23 %. The proposal's prediction comes from a
    model calibrated on every run, so the band is the 23 %, not the 181 %."""
    from servewise.tools.proposing import banded_runs, worst_p99_error

    first = _trial(352.0, 990.0)
    third = _trial(826.0, 636.0).model_copy(update={"calibrated_on": 2})
    worst = worst_p99_error(banded_runs([first, third]))
    assert worst is not None and worst[0] == pytest.approx(23.0, abs=0.1) and worst[1] is third
    assert banded_runs([first]) == [first]  # nothing calibrated: every run counts
    plan = _plan(proposal=_proposal(147.48, 245.8, uncertainty_pct=23.0), trials=[first, third])
    text = _report(tmp_path, plan)
    assert "over 1 of this plan's 2 benchmark runs, those on the proposal's GPU class predicted after" in text
    # a run on another GPU class (whose queue ran away) does not set the band of this one's pick
    other = _trial(2103.0, 367178.0).model_copy(
        update={"calibrated_on": 3, "config": PROPOSED.with_changes(gpu="a100-80gb")}
    )
    worst = worst_p99_error(banded_runs([first, third, other], PROPOSED))
    assert worst is not None and worst[1] is third
    assert banded_runs([other], PROPOSED) == [other]  # none on the class: every run counts
    assert "predicted 826 ms, measured 636 ms" in text
