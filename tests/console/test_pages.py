"""The HTML pages: what an operator sees, and cluster-provided text escaped."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from servewise.console import create_app

from .conftest import console_config, fleet_state, save_fleet

SCRIPT = '<script>alert("owned")</script>'


def test_cluster_text_is_escaped_on_every_page(home: Path) -> None:
    state = fleet_state(home)
    state.deployments[0].annotations["servewise.io/note"] = SCRIPT
    save_fleet(home, state)
    with TestClient(create_app(console_config(home))) as client:
        fleet = client.get("/")
        assert fleet.status_code == 200 and "chat-8b" in fleet.text
        assert SCRIPT not in fleet.text and "&lt;script&gt;alert(&quot;owned&quot;)" in fleet.text
        run = client.post("/api/runs", json={"wait": True}).json()["run"]
        client.post(f"/api/runs/{run['run_id']}/reject", json={"actor": "<b>eve</b>", "reason": SCRIPT})
        for url in (f"/runs/{run['run_id']}", "/audit", "/runs"):
            page = client.get(url)
            assert page.status_code == 200
            assert SCRIPT not in page.text and "<b>eve</b>" not in page.text
        assert "&lt;b&gt;eve&lt;/b&gt;" in client.get("/audit").text


def test_run_page_shows_proposals_and_the_decision_forms(client: TestClient) -> None:
    run = client.post("/api/runs", json={"wait": True}).json()["run"]
    page = client.get(f"/runs/{run['run_id']}").text
    assert 'id="approve-form"' in page and 'id="reject-form"' in page
    for p in run["proposals"]:
        assert f'value="{p["id"]}"' in page  # one checkbox per pending proposal
    assert '<tr class="changed"><td>replicas</td><td>4</td><td>3</td></tr>' in page
    assert "$16.00/h -&gt; $12.00/h" in page
    client.post(f"/api/runs/{run['run_id']}/approve", json={"actor": "alice"})
    done = client.get(f"/runs/{run['run_id']}").text
    assert 'id="approve-form"' not in done and "completed" in done and "alice" in done
    assert client.get("/runs/run-nope").status_code == 404
    assert client.get("/static/console.js").status_code == 200


def test_cross_site_form_posts_are_refused_and_pages_cannot_be_framed(client: TestClient, home: Path) -> None:
    run = client.post("/api/runs", json={"wait": True}).json()["run"]
    # what a hostile page can send without a CORS preflight: a form or text/plain body
    forged = client.post(
        f"/api/runs/{run['run_id']}/approve",
        content='{"actor": "mallory"}',
        headers={"Content-Type": "text/plain"},
    )
    assert forged.status_code == 422
    form = client.post(f"/api/runs/{run['run_id']}/approve", data={"actor": "mallory"})
    assert form.status_code == 422
    assert client.get(f"/api/runs/{run['run_id']}").json()["status"] == "awaiting_approval"
    assert fleet_state(home).apply_calls == []
    headers = client.get(f"/runs/{run['run_id']}").headers
    assert (
        headers["x-frame-options"] == "DENY"
        and "frame-ancestors 'none'" in headers["content-security-policy"]
    )
