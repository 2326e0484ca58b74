"""The workflow on the embedded twin with the product's real tools (no fakes): propose, approve, verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servewise.workflows.approval import Decision
from servewise.workflows.runs import WorkflowService
from servewise.workflows.state import RunOptions

pytestmark = pytest.mark.slow


def test_demo_fleet_cycle(home: Path) -> None:
    opts = RunOptions(cluster="sim:demo", benchmark=False, verify_window_s=600)
    with WorkflowService(home=home, llm=None) as svc:
        view = svc.start(opts)
    assert view.status == "awaiting_approval" and view.proposals
    first = view.proposals[0]
    assert first["proposed"] != first["current"] and first["predicted"]["cost_per_hour_before"] > 0

    with WorkflowService(home=home, llm=None) as svc:  # another service instance: state from disk only
        done = svc.decide(view.run_id, Decision(action="approve", actor="alice", proposal_ids=[first["id"]]))
        events = svc.audit.events(view.run_id)
    assert done.status in ("completed", "rolled_back")
    applied = [e for e in events if e.action == "applied"]
    assert [e.proposal_id for e in applied] == [first["id"]]
    verified = next(e for e in events if e.action == "verified")
    ttft = verified.details["compared"]["ttft_p99_ms"]
    assert ttft["measured"] is not None and ttft["predicted"] == first["predicted"]["ttft_p99_ms"]
    rolled_back = any(e.action == "rolled_back" for e in events)
    assert rolled_back == verified.details["regression"] == (done.status == "rolled_back")
    # the twin's own record: the proposal was applied to exactly one deployment, once
    records = [
        rec["proposal_id"]
        for path in (home / "sim").glob("*.json")
        for dep in json.loads(path.read_text())["deployments"]
        for rec in dep["applied"]
    ]
    assert records.count(first["id"]) == 1
