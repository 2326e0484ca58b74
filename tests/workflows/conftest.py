"""Fixtures: an isolated SERVEWISE_HOME and the file-backed fake fleet as the workflow environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servewise.testing.fake_fleet import FakeCluster, FleetState
from servewise.workflows.environment import Environment
from servewise.workflows.runs import WorkflowService
from servewise.workflows.state import RunOptions

FAKE = "py:servewise.testing.fake_fleet:environment"


@pytest.fixture
def env(home: Path) -> Environment:
    from servewise.testing.fake_fleet import environment

    e = environment()
    assert isinstance(e, Environment)
    return e


@pytest.fixture
def service(home: Path, env: Environment) -> Iterator[WorkflowService]:
    with WorkflowService(home=home, environment=env, llm=None) as svc:
        yield svc


def opts(**kw: object) -> RunOptions:
    base: dict[str, object] = {"cluster": FAKE, "verify_window_s": 300}
    base.update(kw)
    return RunOptions.model_validate(base)


def fleet_state(env: Environment) -> FleetState:
    assert isinstance(env.cluster, FakeCluster)
    return env.cluster.load()


def real_applies(state: FleetState) -> list[str]:
    """Proposal ids of apply calls that changed the cluster."""
    return [c["proposal_id"] for c in state.apply_calls if not c["dry_run"] and c["changed"]]
