"""Engine series that no kube-state-metrics owner maps to a deployment, read from a real Prometheus.

The snapshot says the series were found but not mapped, and names ``--deployment-label``; ``analyze``
takes that option (and ``--engine``, ``--timeout``) as ``telemetry snapshot`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.errors import InputError
from servewise.telemetry.names import LabelMap
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S, need_prometheus
from .handwritten import Pod, backfilled, scraped

pytestmark = pytest.mark.slow
PODS = [
    Pod("chat", "chat-a", kv=0.6),
    Pod("chat", "chat-b", kv=0.2),
    Pod("agent", "agent-a", engine="sglang", kv=0.4),
]
UNMAPPED = "engine series of 3 pods were found in the 15m window before"


@pytest.fixture(scope="module")
def unowned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Engine series without kube-state-metrics: nothing maps their pods to deployments."""
    need_prometheus()
    with backfilled(PODS, tmp_path_factory.mktemp("unowned"), owners=False) as prom:
        yield prom


def test_engine_series_no_owner_maps_are_said_so_naming_the_option(unowned: PrometheusServer) -> None:
    at = datetime.fromtimestamp(END_S, UTC)
    snap = PrometheusSource(unowned.url).snapshot(window="15m", at=at)
    assert snap.deployments == []
    [note] = snap.notes
    assert note.startswith(UNMAPPED), note  # not "no deployment has engine ... series"
    assert "could not be mapped to a deployment" in note and "--deployment-label" in note
    assert "kube_pod_owner" in note
    # the label it names maps them
    labelled = PrometheusSource(unowned.url, label_map=LabelMap(deployment="app")).snapshot(
        window="15m", at=at
    )
    assert {d.deployment: d.signals["kv_cache_usage"] for d in labelled.deployments} == pytest.approx(
        {"chat": 0.4, "agent": 0.4}
    )
    assert not labelled.notes
    # a label the series do not carry: said so too
    wrong = PrometheusSource(unowned.url, label_map=LabelMap(deployment="team")).snapshot(window="15m", at=at)
    [note] = wrong.notes
    assert note.startswith(UNMAPPED) and "no 'team' label" in note
    # nothing there at all: the old words
    before = datetime.fromtimestamp(END_S - 7200, UTC)
    [note] = PrometheusSource(unowned.url).snapshot(window="15m", at=before).notes
    assert note.startswith("no deployment has engine (vLLM, TGI, SGLang) or GPU (DCGM) series")


@pytest.fixture(scope="module")
def live_unowned() -> Iterator[PrometheusServer]:
    need_prometheus()
    with scraped(PODS, owners=False) as prom:
        yield prom


def _analyze(prom: PrometheusServer, *args: str) -> dict[str, object]:
    argv = ["analyze", "--cluster", "sim:demo", "--prometheus", prom.url, "--window", "5m", "--json", *args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_analyze_takes_the_label_options_of_telemetry_snapshot(
    live_unowned: PrometheusServer, home: Path
) -> None:
    notes = _analyze(live_unowned)["notes"]
    assert isinstance(notes, list)
    assert any("could not be mapped to a deployment" in n and "--deployment-label" in n for n in notes), notes
    labelled = _analyze(live_unowned, "--deployment-label", "app", "--engine", "auto", "--timeout", "5")[
        "notes"
    ]
    assert isinstance(labelled, list)
    assert not [n for n in labelled if "could not be mapped" in n or n.startswith("no deployment has")]
    with pytest.raises(InputError, match="unknown engine 'triton'") as err:
        CliRunner().invoke(
            app,
            ["analyze", "--prometheus", live_unowned.url, "--engine", "triton"],
            catch_exceptions=False,
        )
    assert err.value.field == "--engine"
