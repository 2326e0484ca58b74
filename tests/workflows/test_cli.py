"""`servewise optimize | runs | approve | reject | audit` through the Typer app (CONVENTIONS.md shapes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.errors import InputError, NotFoundError, UnknownIdError
from servewise.testing.fake_fleet import FakeCluster

from .conftest import FAKE, real_applies

runner = CliRunner()


def run(*args: str) -> Any:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


def test_optimize_approve_audit_json(home: Path) -> None:
    doc = run("optimize", "--cluster", FAKE, "--json", "--verify-window", "60")
    assert set(doc) >= {"run_id", "status", "proposals"} and doc["status"] == "awaiting_approval"
    run_id, proposals = doc["run_id"], doc["proposals"]
    assert len(proposals) == 2 and {"id", "ref", "current", "proposed", "predicted"} <= set(proposals[0])
    listed = run("runs", "--json")["runs"]
    assert [r["run_id"] for r in listed] == [run_id] and listed[0]["status"] == "awaiting_approval"

    pid = next(p["id"] for p in proposals if p["ref"]["name"] == "chat-8b")
    with pytest.raises(InputError, match="power of two"):
        runner.invoke(
            app,
            ["approve", run_id, "--as", "alice", "--proposal", pid, "--edit", "tensor_parallel=3"],
            catch_exceptions=False,
        )
    assert run("runs", run_id, "--json")["status"] == "awaiting_approval"

    result = runner.invoke(
        app, ["approve", run_id, "--as", "alice", "--proposal", pid, "--edit", "replicas=2", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["status"] == "completed"
    # the other proposal is rejected with the decision, and the approver is told so
    other = next(p["id"] for p in proposals if p["id"] != pid)
    assert f"the run's other 1 proposal(s) are rejected ({other})" in result.stderr
    state = FakeCluster(home / "fake-fleet.json").load()
    assert real_applies(state) == [pid]
    assert next(d for d in state.deployments if d.ref.name == "chat-8b").config.replicas == 2

    events = run("audit", "--json")
    assert all({"ts", "run_id", "action", "actor"} <= set(e) for e in events)
    actions = [(e["action"], e["actor"]) for e in events if e["proposal_id"] == pid]
    assert actions == [
        ("proposed", "servewise"),
        ("approved", "alice"),
        ("dry_run", "servewise"),
        ("applied", "servewise"),
        ("verified", "servewise"),
    ]
    out = home / "audit.jsonl"
    run("audit", "--run", run_id, "--jsonl", str(out))
    assert [json.loads(line)["action"] for line in out.read_text().splitlines()] == [
        e["action"] for e in events
    ]


def test_reject_and_dry_run(home: Path) -> None:
    doc = run("optimize", "--cluster", FAKE, "--json")
    done = run("reject", doc["run_id"], "--reason", "freeze week", "--as", "bob", "--json")
    assert done["status"] == "rejected"
    rejected = [e for e in run("audit", "--json") if e["action"] == "rejected"]
    assert len(rejected) == 2 and rejected[0]["comment"] == "freeze week" and rejected[0]["actor"] == "bob"
    dry = run("optimize", "--cluster", FAKE, "--dry-run", "--json")
    assert dry["status"] == "proposed" and len(dry["proposals"]) == 2
    assert FakeCluster(home / "fake-fleet.json").load().apply_calls == []


def test_optimize_one_deployment(home: Path) -> None:
    both = run("optimize", "--cluster", FAKE, "--dry-run", "--json")["proposals"]
    chosen = both[0]["ref"]
    key = f"{chosen['namespace']}/{chosen['name']}"
    one = run("optimize", "--cluster", FAKE, "--dry-run", "--deployment", key, "--json")
    assert [p["ref"] for p in one["proposals"]] == [chosen]
    with pytest.raises(UnknownIdError, match="no deployment ml/nope on") as err:
        runner.invoke(app, ["optimize", "--cluster", FAKE, "-d", "ml/nope"], catch_exceptions=False)
    assert err.value.field == "--deployment" and key in str(err.value)
    with pytest.raises(InputError, match="NAMESPACE/NAME") as bare:
        runner.invoke(app, ["optimize", "--cluster", FAKE, "-d", "nope"], catch_exceptions=False)
    assert str(bare.value).endswith("(e.g. chat/chat-assistant), got 'nope'")  # said once, with an example
    assert len(run("runs", "--json")["runs"]) == 2  # the bad ones never started


def test_bad_policy_fails_before_the_run(home: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("namespaces: [staging]\nmax_added_cost_per_hour: -1\n")
    with pytest.raises(InputError, match="p.yaml"):
        runner.invoke(
            app, ["optimize", "--cluster", FAKE, "--auto-approve", str(policy)], catch_exceptions=False
        )
    assert run("runs", "--json")["runs"] == []


def test_bad_cluster_spec_fails_before_the_run(home: Path) -> None:
    with pytest.raises(InputError, match="--cluster") as unknown:
        runner.invoke(app, ["optimize", "--cluster", "nomad:prod"], catch_exceptions=False)
    assert "'sim:SCENARIO', 'k8s[:CONTEXT]' or 'py:module:factory'" in str(unknown.value)
    with pytest.raises(InputError, match="field '--cluster': no scenario in 'sim:'"):
        runner.invoke(app, ["optimize", "--cluster", "sim:", "--dry-run"], catch_exceptions=False)
    with pytest.raises(InputError, match="--cluster"):
        runner.invoke(app, ["optimize", "--cluster", "py:no.such.module:factory"], catch_exceptions=False)
    with pytest.raises(InputError, match="field '--cluster': no context in 'k8s:'"):
        runner.invoke(app, ["optimize", "--cluster", "k8s:", "--dry-run"], catch_exceptions=False)
    assert run("runs", "--json")["runs"] == []


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--verify-window", "-1", "greater than or equal to 0, got -1.0"),
        ("--verify-window", "nan", "finite number, got nan"),
        ("--verify-window", "inf", "finite number, got inf"),
        ("--max-benchmark-minutes", "inf", "finite number, got inf"),
        ("--window", "abc", "PromQL duration like 30s, 15m, 1h or 1h30m, got 'abc'"),
    ],
)
def test_bad_run_option_is_an_input_error_naming_the_flag(
    home: Path, option: str, value: str, problem: str
) -> None:
    with pytest.raises(InputError, match=f"field '{option}': .*{problem}"):
        runner.invoke(
            app, ["optimize", "--cluster", FAKE, option, value, "--dry-run"], catch_exceptions=False
        )
    assert run("runs", "--json")["runs"] == []


def test_empty_approver_is_refused(home: Path) -> None:
    run_id = run("optimize", "--cluster", FAKE, "--json")["run_id"]
    with pytest.raises(InputError, match="field '--as'"):
        runner.invoke(app, ["approve", run_id, "--as", ""], catch_exceptions=False)
    with pytest.raises(InputError, match="field '--as'"):
        runner.invoke(app, ["reject", run_id, "--as", "", "--reason", "x"], catch_exceptions=False)
    with pytest.raises(InputError, match="field '--as': .*blank"):  # blanks are no one either
        runner.invoke(app, ["approve", run_id, "--as", "  "], catch_exceptions=False)
    assert run("runs", run_id, "--json")["status"] == "awaiting_approval"
    assert [e for e in run("audit", "--json") if e["action"] in ("approved", "rejected")] == []


def test_reject_needs_a_named_person_as_approve_does(home: Path) -> None:
    """The audit log names whoever decided, deliberately: no login name stands in for ``--as``."""
    shown = runner.invoke(app, ["optimize", "--cluster", FAKE])
    assert shown.exit_code == 0, shown.output
    run_id = run("runs", "--json")["runs"][0]["run_id"]
    # the hint the gate prints gives both commands their --as
    assert f"reject: servewise reject {run_id} --as NAME --reason TEXT" in shown.stdout
    for verb, rest in (("approve", []), ("reject", ["--reason", "freeze week"])):
        refused = runner.invoke(app, [verb, run_id, *rest])
        assert refused.exit_code == 2 and "Missing option '--as'" in refused.output, refused.output
    assert run("runs", run_id, "--json")["status"] == "awaiting_approval"
    assert [e for e in run("audit", "--json") if e["action"] in ("approved", "rejected")] == []


def test_a_dry_run_cannot_be_decided(home: Path) -> None:
    run_id = run("optimize", "--cluster", FAKE, "--dry-run", "--json")["run_id"]
    for args in (["approve", run_id, "--as", "alice"], ["reject", run_id, "--as", "bob", "--reason", "x"]):
        with pytest.raises(InputError, match="field 'run_id': .*dry run.*re-run without --dry-run"):
            runner.invoke(app, args, catch_exceptions=False)


def test_audit_of_an_unknown_run_is_an_error(home: Path) -> None:
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        runner.invoke(app, ["audit", "--run", "nope"], catch_exceptions=False)
    assert run("audit", "--json") == []


def test_audit_to_a_folder_that_does_not_exist_is_an_input_error(home: Path, tmp_path: Path) -> None:
    """``audit --jsonl /nonexistent/dir/x.jsonl`` printed a FileNotFoundError traceback."""
    target = tmp_path / "nonexistent" / "x.jsonl"
    with pytest.raises(InputError, match="cannot write .*x.jsonl: No such file or directory") as err:
        runner.invoke(app, ["audit", "--jsonl", str(target)], catch_exceptions=False)
    assert err.value.field == "--jsonl" and str(target) in str(err.value)
    # through the real entry point: one line on stderr and exit 2, as for every input error
    done = subprocess.run(
        [sys.executable, "-m", "servewise.cli", "audit", "--jsonl", str(target)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: field '--jsonl': cannot write {target}: No such file or directory\n"


def test_demo_out_that_cannot_be_written_is_refused_before_the_twin_starts(
    home: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write .*: Not a directory") as err:
        runner.invoke(app, ["demo", "--out", str(blocker / "demo")], catch_exceptions=False)
    assert err.value.field == "--out"
    assert not (home / "sim").exists()


def test_the_demo_report_has_a_section_per_proposal_and_says_what_was_not_proposed() -> None:
    from servewise.commands.demo import proposals_markdown

    narrative = (
        "[p-a-1] ns/a: 2x m on l4 -> 1x m on l4. Why: slow (ttft_p99_ms=900). Change: replicas 2 -> 1. "
        "Predicted: $2.00/h -> $1.00/h (-1.00), p99 TTFT 500 ms. Measured by a benchmark of 1000 requests: "
        "p99 TTFT 480 ms. Risk: low; rollback: restore."
    )
    text = proposals_markdown("run-1", narrative, ["ns/b: no proposal: no candidate passed"])
    assert text.splitlines()[:5] == [
        "# Optimization run run-1",
        "",
        "## ns/a (`p-a-1`)",
        "",
        "2x m on l4 -> 1x m on l4.",
    ]
    bullets = [line for line in text.splitlines() if line.startswith("- ")]
    assert [b.split()[1] for b in bullets] == ["Why:", "Change:", "Predicted:", "Measured", "Risk:", "ns/b:"]
    assert "## Not proposed" in text
    # an LLM's narrative (not the offline form) is kept as written
    assert "A free text." in proposals_markdown("run-2", "A free text.", [])


def test_the_demo_twin_starts_at_its_pinned_clock_and_goes_on_from_saved_state(
    home: Path, tmp_path: Path
) -> None:
    """A fresh demo's traffic (daily peaks, translate's 09:00 burst) must not depend on when it runs;
    the twin is saved at once, since the workflow opens it again from its saved state."""
    from datetime import UTC, datetime, timedelta

    import yaml

    from servewise.cluster.sim import SimCluster
    from servewise.commands.demo import _demo_start, open_twin

    pinned = datetime(2026, 11, 24, 9, 20, tzinfo=UTC)
    assert _demo_start("2026-01-02T03:04") == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)  # UTC unless named
    assert abs(_demo_start("now") - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(InputError, match="'noon' is not an ISO 8601 time"):
        _demo_start("noon")
    twin, clock = open_twin("demo", None, home)
    assert twin.now == pinned and clock == "clock 2026-11-24 09:20 UTC"
    assert SimCluster.from_scenario("demo").now == pinned  # what the workflow's own open finds
    again, clock = open_twin("demo", "2026-11-24T15:00+02:00", home)
    assert again.now == pinned and "its saved state; remove" in clock and "at 2026-11-24 13:00 UTC)" in clock
    # a scenario that declares its own start keeps it, unless --start says otherwise
    declared = yaml.safe_load((Path(__file__).parents[2] / "servewise/scenarios/edge.yaml").read_text())
    declared.update(name="edge-dawn", start="2026-03-01T05:00:00Z")
    path = tmp_path / "edge-dawn.yaml"
    path.write_text(yaml.safe_dump(declared))
    own, _ = open_twin(str(path), None, home)
    assert own.now == datetime(2026, 3, 1, 5, 0, tzinfo=UTC)


def test_runs_refuses_an_unknown_status(home: Path) -> None:
    with pytest.raises(
        InputError, match="unknown run status 'bogus'; statuses: queued, running, interrupted"
    ):
        runner.invoke(app, ["runs", "--status", "bogus"], catch_exceptions=False)
    assert run("runs", "--status", "interrupted", "--json") == {"runs": []}
