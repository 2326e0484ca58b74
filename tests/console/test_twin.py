"""The console on the embedded digital twin (sim:demo): a run, a named approval, the fleet changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from servewise.console import create_app

from .conftest import console_config


@pytest.mark.slow
def test_twin_run_approved_in_the_console_changes_the_fleet(home: Path) -> None:
    config = console_config(home, cluster="sim:demo", benchmark=False, verify_window_s=120)
    with TestClient(create_app(config)) as client:
        before = {d["ref"]["name"]: d["config"] for d in client.get("/api/fleet").json()["deployments"]}
        resp = client.post("/api/runs", json={"wait": True})
        assert resp.status_code == 202, resp.text
        run = resp.json()["run"]
        assert run["status"] == "awaiting_approval" and run["proposals"]
        chosen = run["proposals"][0]
        assert before[chosen["ref"]["name"]] == chosen["current"]  # nothing changed at the gate

        done = client.post(
            f"/api/runs/{run['run_id']}/approve",
            json={"actor": "dana", "comment": "twin check", "proposal_ids": [chosen["id"]]},
        )
        assert done.status_code == 200, done.text
        events = client.get("/api/audit", params={"run": run["run_id"]}).json()
        mine = [(e["action"], e["actor"]) for e in events if e["proposal_id"] == chosen["id"]]
        assert mine[:3] == [("proposed", "servewise"), ("approved", "dana"), ("dry_run", "servewise")]
        report = {r["proposal_id"]: r for r in done.json()["report"]["proposals"]}
        after = {d["ref"]["name"]: d["config"] for d in client.get("/api/fleet").json()["deployments"]}
        expected = chosen["current"] if report[chosen["id"]]["rolled_back"] else chosen["proposed"]
        assert report[chosen["id"]]["applied"] and after[chosen["ref"]["name"]] == expected
        others = {p["ref"]["name"] for p in run["proposals"][1:]} - {chosen["ref"]["name"]}
        assert all(after[name] == before[name] for name in others)
