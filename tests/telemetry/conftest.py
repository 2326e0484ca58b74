from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from servewise.cluster.sim import SimCluster
from servewise.domain import DeploymentRef
from servewise.telemetry.openmetrics import HistoryExport, history_twin, write_history
from servewise.testing.prometheus import PrometheusServer, PrometheusUnavailable, binaries

# A fixed end (in the past: the head block must not overlap the backfill): the twin's traffic follows
# its clock's time of day, so a wall-clock end made every run read a different history.
END_S = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()
HOURS = 2.0
STEP_S = 30.0
DROPPED_NAMESPACE = "legal"  # its DCGM exporter "failed": its GPU series are absent from the history
ROLLED = "search/rag-search"  # rolled out mid-window: its old pods' series go stale


def need_prometheus() -> None:
    try:
        binaries()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))


@dataclass
class History:
    """A twin, the history it wrote, and a real Prometheus holding that history."""

    sim: SimCluster
    export: HistoryExport
    prom: PrometheusServer


def scenario_twin(root: Path, scenario: dict[str, object], *, hours: float, step_s: float) -> SimCluster:
    """A twin of an inline scenario (written to ``root``) whose clock stands ``hours`` before END_S."""
    path = root / f"{scenario['name']}.yaml"
    path.write_text(yaml.safe_dump(scenario))
    return history_twin(str(path), hours=hours, step_s=step_s, end_s=END_S)


@dataclass
class Backfilled(History):
    dropped_namespace: str = DROPPED_NAMESPACE
    rolled: str = ROLLED


@pytest.fixture(scope="session")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfilled]:
    """2 h of `demo` history backfilled into a real Prometheus; the twin stands at its end."""
    need_prometheus()
    out: Path = tmp_path_factory.mktemp("history") / "demo.om"
    end = END_S
    sim = history_twin("demo", hours=HOURS, step_s=STEP_S, end_s=end)

    def drop(name: str, labels: tuple[tuple[str, str], ...]) -> bool:
        return name.startswith("DCGM_") and ("namespace", DROPPED_NAMESPACE) in labels

    def roll(sim: SimCluster) -> None:  # pods of rag-search are replaced 8 minutes before the end
        if sim.now_s >= end - 8 * 60 and not sim.deployment_state(ROLLED).applied:
            config = sim.deployment_state(ROLLED).spec.with_changes(max_num_seqs=128)
            sim.apply(DeploymentRef(name=ROLLED.split("/")[1], namespace="search"), config, proposal_id="mid")

    export = write_history(sim, out, hours=HOURS, step_s=STEP_S, exclude=drop, on_step=roll)
    with PrometheusServer(backfill=[out]) as prom:
        yield Backfilled(sim, export, prom)
