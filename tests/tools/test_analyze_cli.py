"""`servewise analyze -d NAMESPACE/NAME`: one deployment's findings; a wrong name says which exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.errors import InputError, UnknownIdError


def test_analyze_one_deployment(home: Path) -> None:
    result = CliRunner().invoke(app, ["analyze", "-d", "chat/chat-assistant", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["deployments"] == 1 and doc["findings"]
    assert {f["ref"]["name"] for f in doc["findings"]} == {"chat-assistant"}


@pytest.mark.parametrize(
    ("key", "error", "said"),
    [
        ("chat-assistant", InputError, "e.g. chat/chat-assistant), got 'chat-assistant'"),
        ("chat/nope", UnknownIdError, "no deployment chat/nope on sim:demo; there are chat/chat-assistant, "),
    ],
)
def test_a_wrong_deployment_is_named_before_anything_is_read(
    home: Path, key: str, error: type[Exception], said: str
) -> None:
    with pytest.raises(error, match=said.replace("(", r"\(").replace(")", r"\)")) as err:
        CliRunner().invoke(app, ["analyze", "-d", key], catch_exceptions=False)
    assert getattr(err.value, "field", None) == "--deployment"


def test_a_snapshot_without_any_deployment_says_why_in_the_analysis() -> None:
    from datetime import UTC, datetime

    from servewise.cluster.sim import SimCluster
    from servewise.domain import TelemetrySnapshot
    from servewise.tools.analyzing import analyze_fleet

    why = "no deployment has engine (vLLM, TGI, SGLang) or GPU (DCGM) series in the 15m window before ..."
    empty = TelemetrySnapshot(source="prometheus:http://p:9090", taken_at=datetime.now(UTC), notes=[why])
    analysis = analyze_fleet(SimCluster.from_scenario("demo", ephemeral=True, warmup_s=60), empty)
    assert analysis.notes[0] == why  # first: it explains every "no telemetry" note after it
    assert any("no telemetry" in n for n in analysis.notes[1:])
