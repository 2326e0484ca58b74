"""Fixtures: an isolated SERVEWISE_HOME and a console app on the file-backed fake fleet."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from servewise.console import ConsoleConfig, create_app
from servewise.testing.fake_fleet import FakeCluster, FleetState

FAKE = "py:servewise.testing.fake_fleet:environment"


def console_config(home: Path, **kw: object) -> ConsoleConfig:
    """A console on the fake fleet; ``home`` is the fixture that points SERVEWISE_HOME at a temp dir."""
    assert os.environ["SERVEWISE_HOME"] == str(home)
    base: dict[str, object] = {"cluster": FAKE, "offline": True, "verify_window_s": 300}
    base.update(kw)
    return ConsoleConfig.model_validate(base)


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(console_config(home))) as c:
        yield c


def fleet_state(home: Path) -> FleetState:
    return FakeCluster(home / "fake-fleet.json").load()


def save_fleet(home: Path, state: FleetState) -> None:
    FakeCluster(home / "fake-fleet.json").save(state)


def real_applies(home: Path) -> list[str]:
    """Proposal ids of apply calls that changed the fake cluster."""
    return [c["proposal_id"] for c in fleet_state(home).apply_calls if not c["dry_run"] and c["changed"]]
