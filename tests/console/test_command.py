"""`servewise console serve` as a process: the options reach the app and the probes answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import FAKE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_serve_command_binds_localhost_and_takes_the_cluster_from_the_environment(home: Path) -> None:
    port = _free_port()
    env = {**os.environ, "SERVEWISE_CLUSTER": FAKE}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servewise.cli",
            "console",
            "serve",
            "--port",
            str(port),
            "--offline",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "console did not answer"
                time.sleep(0.2)
        assert health.json() == {"status": "ok", "cluster": FAKE, "mode": "offline", "home": str(home)}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok"
        assert "staging/chat-8b" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_target_defaults_to_the_cluster_the_pod_runs_in() -> None:
    from servewise.commands.console import resolve_target

    prom = "http://prometheus:9090"
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "PROMETHEUS_URL": prom}
    assert resolve_target(None, None, in_pod) == ("k8s", prom)
    assert resolve_target("sim:demo", None, in_pod) == ("sim:demo", None)  # the twin has its own telemetry
    assert resolve_target("k8s:prod", "http://other:9090", in_pod) == ("k8s:prod", "http://other:9090")
    assert resolve_target(None, None, {"PROMETHEUS_URL": prom}) == ("sim:demo", None)


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_bad_verify_window_is_an_input_error_naming_the_flag(home: Path, value: str) -> None:
    from typer.testing import CliRunner

    from servewise.cli import app
    from servewise.errors import InputError

    with pytest.raises(InputError, match="field '--verify-window'"):
        CliRunner().invoke(
            app, ["console", "serve", "--cluster", FAKE, "--verify-window", value], catch_exceptions=False
        )
