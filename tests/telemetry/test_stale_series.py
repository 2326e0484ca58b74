"""Engine series that stop partway through the window (the exporter or its scrape went down): rate()
reads the window low, and the snapshot says which deployments' series ended and how long ago."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S, need_prometheus
from .handwritten import Pod, backfilled

pytestmark = pytest.mark.slow
PODS = [
    Pod("chat", "chat-a", ended_s=360),
    Pod("chat", "chat-b", ended_s=360),
    Pod("batch", "batch-a", ended_s=600),
    Pod("steady", "steady-a"),
    Pod("steady", "steady-b", ended_s=60),  # a scrape or two late: not stale
]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    need_prometheus()
    with backfilled(PODS, tmp_path_factory.mktemp("stale")) as prom:
        yield prom


def test_series_that_ended_inside_the_window_are_said_to(stopped: PrometheusServer) -> None:
    at = datetime.fromtimestamp(END_S, UTC)
    snap = PrometheusSource(stopped.url).snapshot(window="15m", at=at)
    got = {d.deployment: d for d in snap.deployments}
    assert set(got) == {"chat", "batch", "steady"}
    # chat served 1 request/s per pod until 6 minutes before the end: rate() over 15m reads ~9/15 of it
    assert got["chat"].signals["request_rate_per_s"] == pytest.approx(2 * 9 / 15, rel=0.05)
    [note] = [n for n in snap.notes if "ended" in n]
    assert note.startswith("engine series of 2 deployments (apps/batch, apps/chat) ended 6-10 min before "), (
        note
    )
    assert "rates cover only part of the 15m window" in note
    # before they stopped, nothing to say; nor of a deployment a scrape behind
    earlier = PrometheusSource(stopped.url).snapshot(
        window="15m", at=datetime.fromtimestamp(END_S - 720, UTC)
    )
    assert not [n for n in earlier.notes if "ended" in n], earlier.notes
    one = PrometheusSource(stopped.url).snapshot(window="15m", at=datetime.fromtimestamp(END_S - 300, UTC))
    [note] = [n for n in one.notes if "ended" in n]
    assert note.startswith("engine series of 1 deployment (apps/batch) ended 5 min before "), note
