"""The console's JSON API on the fake fleet: start a run, approve or reject it, read the audit log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from .conftest import fleet_state, real_applies


def _start(client: TestClient) -> dict[str, Any]:
    resp = client.post("/api/runs", json={"wait": True})
    assert resp.status_code == 202, resp.text
    run = resp.json()["run"]
    assert run["status"] == "awaiting_approval"
    return dict(run)


def _events(client: TestClient, run_id: str) -> list[tuple[str, str, str | None]]:
    resp = client.get("/api/audit", params={"run": run_id})
    assert resp.status_code == 200
    return [(e["action"], e["actor"], e["proposal_id"]) for e in resp.json()]


def test_health_fleet_and_findings(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["mode"] == "offline" and health["cluster"].endswith("fake_fleet:environment")
    assert client.get("/healthz").text == "ok"
    fleet = client.get("/api/fleet").json()
    assert {d["ref"]["name"]: d["config"]["replicas"] for d in fleet["deployments"]} == {
        "chat-8b": 4,
        "chat-70b": 2,
    }
    assert fleet["node_pools"] and all("gpu" in p for p in fleet["node_pools"])
    findings = client.get("/api/findings").json()["findings"]
    assert any(f["kind"] == "over_provisioned" and f["ref"]["name"] == "chat-8b" for f in findings)


def test_start_then_approve_one_proposal_as_a_named_person(client: TestClient, home: Path) -> None:
    run = _start(client)
    assert real_applies(home) == [] and fleet_state(home).apply_calls == []  # nothing before a decision
    staging = next(p["id"] for p in run["proposals"] if p["ref"]["namespace"] == "staging")
    other = next(p["id"] for p in run["proposals"] if p["id"] != staging)

    resp = client.post(
        f"/api/runs/{run['run_id']}/approve",
        json={"actor": "alice", "comment": "ok for staging", "proposal_ids": [staging]},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "completed"
    assert real_applies(home) == [staging]
    replicas = {d.ref.name: d.config.replicas for d in fleet_state(home).deployments}
    assert replicas == {"chat-8b": 3, "chat-70b": 2}

    events = _events(client, run["run_id"])
    assert events.index(("approved", "alice", staging)) < events.index(("applied", "servewise", staging))
    assert ("rejected", "alice", other) in events
    assert not any(a == "applied" and p == other for a, _, p in events)
    approved = next(e for e in client.get("/api/audit").json() if e["action"] == "approved")
    assert approved["comment"] == "ok for staging"
    listed = client.get("/api/runs", params={"status": "completed"}).json()["runs"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]


def test_background_start_is_polled_to_the_gate(client: TestClient) -> None:
    resp = client.post("/api/runs")
    assert resp.status_code == 202 and resp.json() == {
        "run_id": resp.json()["run_id"],
        "status": "queued",
        "run": None,  # the run itself only with {"wait": true} (docs/console.md)
    }
    run_id = resp.json()["run_id"]
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = client.get(f"/api/runs/{run_id}").json()["status"]
        if status == "awaiting_approval":
            break
        time.sleep(0.2)
    assert status == "awaiting_approval"


def test_runs_are_filtered_by_a_known_status_and_an_unknown_one_is_a_422(client: TestClient) -> None:
    run = _start(client)
    waiting = client.get("/api/runs", params={"status": "awaiting_approval"})
    assert waiting.status_code == 200 and [r["run_id"] for r in waiting.json()["runs"]] == [run["run_id"]]
    assert client.get("/api/runs", params={"status": "completed"}).json() == {"runs": []}
    bogus = client.get("/api/runs", params={"status": "bogus"})
    assert bogus.status_code == 422, bogus.text  # not {"runs": []}, which reads as "no such runs"
    (error,) = bogus.json()["detail"]
    assert error["loc"] == ["query", "status"] and "awaiting_approval" in error["msg"]


def test_reject_records_who_and_why_and_applies_nothing(client: TestClient, home: Path) -> None:
    run = _start(client)
    resp = client.post(f"/api/runs/{run['run_id']}/reject", json={"actor": "bob", "reason": "freeze week"})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert fleet_state(home).apply_calls == []
    rejected = [e for e in client.get("/api/audit").json() if e["action"] == "rejected"]
    assert len(rejected) == len(run["proposals"]) and {e["actor"] for e in rejected} == {"bob"}
    assert rejected[0]["comment"] == "freeze week"
    again = client.post(f"/api/runs/{run['run_id']}/approve", json={"actor": "alice"})
    assert again.status_code == 400 and again.json()["field"] == "run_id"


def test_bad_decisions_are_refused_naming_the_field_and_nothing_resumes(
    client: TestClient, home: Path
) -> None:
    run = _start(client)
    url = f"/api/runs/{run['run_id']}"
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("approve", {}, 422, "actor"),
        ("approve", {"actor": "   "}, 422, "actor"),
        ("approve", {"actor": "alice", "surprise": 1}, 422, "surprise"),
        ("reject", {"actor": "bob"}, 422, "reason"),
        ("approve", {"actor": "alice", "proposal_ids": ["p-nope"]}, 400, "proposal"),
    ]
    for verb, body, code, name in cases:
        resp = client.post(f"{url}/{verb}", json=body)
        assert resp.status_code == code, (body, resp.text)
        detail = resp.json()
        named = detail.get("field") if code == 400 else [e["loc"][-1] for e in detail["detail"]]
        assert name in (named if isinstance(named, list) else [named]), detail
    pid = run["proposals"][0]["id"]
    bad_edit = client.post(
        f"{url}/approve",
        json={"actor": "alice", "proposal_ids": [pid], "edits": {pid: {"tensor_parallel": 3}}},
    )
    assert bad_edit.status_code == 400 and bad_edit.json()["field"] == "edits"
    assert "tensor_parallel" in bad_edit.json()["detail"]
    assert client.get(url).json()["status"] == "awaiting_approval"
    assert fleet_state(home).apply_calls == []
    assert not any(a in ("approved", "rejected") for a, _, _ in _events(client, run["run_id"]))
    missing = client.post("/api/runs/run-000000000000/approve", json={"actor": "alice"})
    assert missing.status_code == 404 and "run-000000000000" in missing.json()["detail"]
    assert client.get("/api/runs/run-000000000000").status_code == 404


def test_approve_with_edits_applies_the_edited_config(client: TestClient, home: Path) -> None:
    run = _start(client)
    pid = next(p["id"] for p in run["proposals"] if p["ref"]["name"] == "chat-8b")
    resp = client.post(
        f"/api/runs/{run['run_id']}/approve",
        json={"actor": "carol", "proposal_ids": [pid], "edits": {pid: {"replicas": 2}}},
    )
    assert resp.status_code == 200 and resp.json()["status"] == "completed"
    assert {d.ref.name: d.config.replicas for d in fleet_state(home).deployments}["chat-8b"] == 2


def test_chat_answers_commands_and_needs_a_name_to_approve(client: TestClient, home: Path) -> None:
    status = client.post("/api/chat", json={"message": "status"}).json()
    assert "staging/chat-8b" in status["answer"] and status["mode"] == "offline"
    proposed = client.post("/api/chat", json={"message": "propose"}).json()["answer"]
    run_id = proposed.split()[1].rstrip(":")
    assert "awaiting_approval" in proposed
    assert "usage" in client.post("/api/chat", json={"message": f"approve {run_id}"}).json()["answer"]
    assert fleet_state(home).apply_calls == []
    assert "No LLM" in client.post("/api/chat", json={"message": "why is chat-70b slow?"}).json()["answer"]
    assert client.post("/api/chat", json={"message": "  "}).status_code == 422


def test_openapi_documents_the_approval_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/runs", "/api/runs/{run_id}/approve", "/api/runs/{run_id}/reject", "/api/audit"} <= set(
        spec["paths"]
    )
    assert "actor" in spec["components"]["schemas"]["ApproveIn"]["required"]


def test_a_run_that_fails_says_why_and_changes_nothing(client: TestClient, home: Path) -> None:
    client.get("/api/fleet")  # the fake fleet file exists now; break it
    (home / "fake-fleet.json").write_text("{not json")
    resp = client.post("/api/runs", json={"wait": True})
    assert resp.status_code == 202
    run = resp.json()["run"]
    assert run["status"] != "awaiting_approval" and run["proposals"] == []
    assert "stopped by an error before collect" in run["narrative"] and "fake-fleet" not in run["status"]
    assert "FleetState" in run["narrative"]
    assert client.get("/api/runs").json()["runs"][0]["status"] == "failed"
    assert client.post(f"/api/runs/{run['run_id']}/approve", json={"actor": "alice"}).status_code == 400
    assert "stopped by an error" in client.get(f"/runs/{run['run_id']}").text
