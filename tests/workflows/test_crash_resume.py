"""Kill the workflow inside each node (a real process exit), resume from a new process.

Checks: a change is applied exactly once, never before its approval is in the audit log, and
the run ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servewise.errors import InputError
from servewise.testing.fake_fleet import FakeCluster
from servewise.workflows.approval import Decision
from servewise.workflows.audit import AuditLog
from servewise.workflows.runs import WorkflowService

from .conftest import FAKE, opts, real_applies

pytestmark = pytest.mark.slow
CRASH_EXIT = 86


def cli(home: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SERVEWISE_CRASH_AT", "OPENAI_BASE_URL", "SERVEWISE_MODEL")
    }
    env["SERVEWISE_HOME"] = str(home)
    if crash_at:
        env["SERVEWISE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "servewise.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def doc(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def check_exactly_once(home: Path, run_id: str, expected: set[str]) -> None:
    state = FakeCluster(home / "fake-fleet.json").load()
    applied = real_applies(state)
    assert sorted(applied) == sorted(expected), (
        state.apply_calls
    )  # each approved proposal changed the cluster once
    audit = AuditLog(home / "audit.sqlite")
    events = audit.events(run_id)
    audit.close()
    for pid in expected:
        seqs = {e.action: e.seq for e in events if e.proposal_id == pid}
        assert [e.action for e in events if e.proposal_id == pid].count("applied") == 1
        assert seqs["approved"] < seqs["dry_run"] < seqs["applied"]


@pytest.mark.parametrize("node", ["collect", "analyze", "optimize", "propose"])
def test_crash_before_the_gate(home: Path, node: str) -> None:
    crashed = cli(home, "optimize", "--cluster", FAKE, "--json", crash_at=node)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr[-2000:]
    audit = AuditLog(home / "audit.sqlite")
    runs = audit.runs()
    audit.close()
    assert len(runs) == 1
    run_id = runs[0].run_id
    assert FakeCluster(home / "fake-fleet.json").load().apply_calls == []
    resumed = doc(cli(home, "resume", run_id, "--json"))
    assert resumed["status"] == "awaiting_approval" and len(resumed["pending"]) == 2
    assert FakeCluster(home / "fake-fleet.json").load().apply_calls == []  # nothing before approval
    with WorkflowService(home=home, llm=None) as svc:
        assert svc.decide(run_id, Decision(action="approve", actor="alice")).status == "completed"
    check_exactly_once(home, run_id, set(resumed["pending"]))


@pytest.mark.parametrize(
    "node", ["gate:after_decision", "dry_run", "apply", "apply:after_cluster", "verify", "rollback", "report"]
)
def test_crash_after_the_gate(home: Path, node: str) -> None:
    with WorkflowService(home=home, llm=None) as svc:
        view = svc.start(opts(benchmark=False))
    assert view.status == "awaiting_approval"
    if node == "rollback":  # make verification fail so the rollback node runs
        cluster = FakeCluster(home / "fake-fleet.json")
        state = cluster.load()
        state.truth = 8.0
        cluster.save(state)
    crashed = cli(home, "approve", view.run_id, "--as", "alice", "--json", crash_at=node)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr[-2000:]
    with WorkflowService(home=home, llm=None) as svc:
        after_crash = svc.view(view.run_id).model_dump()
    assert after_crash["status"] == "interrupted" and after_crash["next"]
    if node == "gate:after_decision":  # the decision survived the crash: nobody is asked again
        assert after_crash["decision"]["actor"] == "alice"
        assert FakeCluster(home / "fake-fleet.json").load().apply_calls == []
        rejected = cli(home, "reject", view.run_id, "--reason", "too late", "--as", "mallory")
        assert rejected.returncode != 0 and "not awaiting approval" in rejected.stderr
    final = doc(cli(home, "resume", view.run_id, "--json"))
    expected_status = "rolled_back" if node == "rollback" else "completed"
    assert final["status"] == expected_status
    check_exactly_once(home, view.run_id, set(view.pending))
    if node == "rollback":
        state = FakeCluster(home / "fake-fleet.json").load()
        assert sorted(state.rollbacks) == sorted(view.pending)  # each regression rolled back once


def test_a_killed_run_is_listed_interrupted_and_one_being_executed_cannot_be_resumed(home: Path) -> None:
    crashed = cli(home, "optimize", "--cluster", FAKE, "--json", crash_at="analyze")
    assert crashed.returncode == CRASH_EXIT, crashed.stderr[-2000:]
    with WorkflowService(home=home, llm=None) as svc:
        (record,) = svc.audit.runs()
        assert record.status == "running"  # the audit log's last word: the process died
        assert [r.status for r in svc.runs()] == ["interrupted"] == [svc.view(record.run_id).status]
        assert svc.runs(status="running") == []
        lock = home / "locks" / f"{record.run_id}.lock"
        holder = subprocess.Popen(  # another process executing the run
            [sys.executable, "-c", f"import fcntl,sys,time; f=open({str(lock)!r},'a'); "
             "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert [r.status for r in svc.runs()] == ["running"] == [svc.view(record.run_id).status]
            with pytest.raises(InputError, match="being executed by another process"):
                svc.resume(record.run_id)
        finally:
            holder.kill()
            holder.wait()
        assert svc.resume(record.run_id).status == "awaiting_approval"
