"""`servewise sim serve-metrics` on a port another process holds: an input error naming the port,
said before anything claims to be serving (a new user got a 51-line traceback after 'serving ...')."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from servewise.cli import app
from servewise.errors import InputError


def test_a_taken_port_is_an_input_error_and_nothing_claims_to_serve() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["sim", "serve-metrics", "--port", str(port), "--duration", "1"])
    assert isinstance(result.exception, InputError) and result.exception.field == "--port"
    assert f"cannot listen on 127.0.0.1:{port}" in str(result.exception)
    assert "serving the twin" not in result.output


def test_a_free_port_serves_and_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["sim", "serve-metrics", "--port", str(port), "--duration", "0.5"])
    assert result.exit_code == 0, result.output
    assert f"serving the twin of demo on http://127.0.0.1:{port}/metrics" in result.output


def test_port_zero_says_the_port_it_got_and_an_impossible_port_is_an_input_error() -> None:
    result = CliRunner().invoke(app, ["sim", "serve-metrics", "--port", "0", "--duration", "0.3"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:0/" not in result.output and "/metrics (x1 real time" in result.output
    bad = CliRunner().invoke(app, ["sim", "serve-metrics", "--port", "70000", "--duration", "0.3"])
    assert isinstance(bad.exception, InputError) and bad.exception.field == "--port"
