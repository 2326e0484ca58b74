"""End to end: uvicorn on 127.0.0.1, headless Debian chromium through Playwright, a person approves a run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from servewise.console import create_app

from .conftest import console_config, fleet_state, real_applies

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def console_url(home: Path) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(console_config(home)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "console did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.slow
def test_operator_starts_and_approves_a_run_in_the_browser(
    console_url: str, home: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(console_url + "/")
            sync_api.expect(page.locator("table.deployments")).to_contain_text("staging/chat-8b")
            sync_api.expect(page.locator("#findings table")).to_contain_text(
                "over_provisioned", timeout=30_000
            )
            page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)

            page.click("#start-run")
            page.wait_for_url("**/runs/run-*")
            sync_api.expect(page.locator("#run-status")).to_have_text("awaiting_approval", timeout=60_000)
            assert real_applies(home) == []
            page.screenshot(path=str(tmp_path / "run-at-gate.png"), full_page=True)

            page.click("#approve-form button[type=submit]")  # no name: the browser refuses the form
            assert real_applies(home) == []
            page.fill("#approve-form input[name=actor]", "alice")
            page.fill("#approve-form input[name=comment]", "looks right")
            edits = page.locator("article.proposal", has_text="staging/chat-8b").locator("input.edits")
            edits.fill("tensor_parallel=3")  # refused by the gate, shown, nothing applied
            page.click("#approve-form button[type=submit]")
            sync_api.expect(page.locator("#decide-error")).to_contain_text("tensor_parallel")
            assert real_applies(home) == []
            edits.fill("replicas=2")
            page.click("#approve-form button[type=submit]")
            sync_api.expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
            sync_api.expect(page.locator("table.report")).to_contain_text("True")
            sync_api.expect(page.locator("table.audit")).to_contain_text("alice")
            page.screenshot(path=str(tmp_path / "run-approved.png"), full_page=True)

            page.goto(console_url + "/chat")
            page.fill("#chat-form input[name=message]", "status")
            page.press("#chat-form input[name=message]", "Enter")
            sync_api.expect(page.locator("#transcript pre")).to_contain_text(
                "staging/chat-8b: llama-3.1-8b on 2x1"
            )
        finally:
            browser.close()
    assert len(real_applies(home)) == 2
    assert {d.ref.name: d.config.replicas for d in fleet_state(home).deployments} == {
        "chat-8b": 2,
        "chat-70b": 1,
    }
