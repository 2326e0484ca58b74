"""`servewise analyze -d NAMESPACE/NAME`: one deployment's findings; a wrong name says which exist."""

from __future__ import annotations

import json
import re
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


def test_a_real_cluster_without_prometheus_is_refused_as_optimize_refuses_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ``AttributeError: 'KubernetesCluster' object has no attribute 'scenario'``: the twin's
    telemetry only reads the twin. The kubeconfig's server is never called before the error."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
        "clusters: [{name: nowhere, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: nobody, user: {token: x}}]\n"
        "contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    said = "a real cluster needs --prometheus URL"
    for command in ("analyze", "optimize"):  # the same words from both
        with pytest.raises(InputError, match=said) as err:
            CliRunner().invoke(app, [command, "--cluster", "k8s"], catch_exceptions=False)
        assert err.value.field == "--prometheus"


def test_analyze_opens_the_cluster_as_optimize_does_py_factories_too(home: Path) -> None:
    result = CliRunner().invoke(
        app, ["analyze", "--cluster", "py:servewise.testing.fake_fleet:environment", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert {f["ref"]["name"] for f in json.loads(result.stdout)["findings"]} >= {"chat-8b"}


def test_a_report_folder_that_cannot_be_written_is_an_input_error(home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match=re.escape(f"cannot write {blocker / 'out'}: ")) as err:
        CliRunner().invoke(
            app,
            ["analyze", "-d", "chat/chat-assistant", "--report", str(blocker / "out")],
            catch_exceptions=False,
        )
    assert err.value.field == "--report"


def test_prometheus_reading_options_without_prometheus_are_refused(home: Path) -> None:
    """--engine and --deployment-label say how to read Prometheus; on the twin they were ignored."""
    with pytest.raises(InputError, match="--engine and --deployment-label apply only with --prometheus"):
        CliRunner().invoke(
            app, ["analyze", "--engine", "tgi", "--deployment-label", "app", "--json"], catch_exceptions=False
        )
