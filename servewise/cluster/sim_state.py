"""The twin's persistent state: desired and serving configs, rollouts, applied proposals, the clock.

Saved as JSON under ``$SERVEWISE_HOME/sim/`` after every mutation so that a later process (approve
in one command, apply or verify in another) sees earlier changes. Metric history is not saved; a
process that loads the state re-simulates a warm-up window ending at the saved time.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from servewise.domain import ServingConfig

log = logging.getLogger(__name__)
STATE_VERSION = 1


class AppliedRecord(BaseModel):
    proposal_id: str
    previous: ServingConfig
    previous_pool: str
    config: ServingConfig
    pool: str
    at_s: float
    rolled_back: bool = False


class RolloutRecord(BaseModel):
    config: ServingConfig
    pool: str
    proposal_id: str
    started_at_s: float
    ready_at_s: float
    pending: bool = Field(
        default=False, description="new pods wait for GPUs (FailedScheduling events; retried every step)"
    )
    failed: bool = False
    fails_at_s: float | None = None
    reason: str | None = None
    events: list[str] = Field(default_factory=list)


class DeploymentState(BaseModel):
    name: str
    namespace: str
    spec: ServingConfig = Field(description="desired config (what the Deployment object says)")
    spec_pool: str
    serving: ServingConfig = Field(description="config of the ready pods")
    serving_pool: str
    revision: int = 1
    rollout: RolloutRecord | None = None
    applied: list[AppliedRecord] = Field(default_factory=list)
    benchmark_runs: int = Field(
        0, description="benchmark Jobs run for this deployment: each is a fresh draw of requests and noise"
    )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def record(self, proposal_id: str) -> AppliedRecord | None:
        for rec in reversed(self.applied):
            if rec.proposal_id == proposal_id:
                return rec
        return None


class TwinState(BaseModel):
    version: int = STATE_VERSION
    scenario: str
    fingerprint: str
    seed: int
    time_s: float
    deployments: list[DeploymentState]


def state_file(state_dir: Path, scenario: str, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in scenario)
    return state_dir / f"sim-{safe}-seed{seed}.json"


def load_state(path: Path, fingerprint: str) -> TwinState | None:
    """The saved state, or None when absent, unreadable or made from a different scenario file."""
    if not path.exists():
        return None
    try:
        state = TwinState.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        log.warning("ignoring unreadable twin state %s: %s", path, exc)
        return None
    if state.version != STATE_VERSION or state.fingerprint != fingerprint:
        log.warning("ignoring twin state %s: written for another version of the scenario", path)
        return None
    return state


def save_state(path: Path, state: TwinState) -> None:
    """Atomic write (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(state.model_dump_json(indent=1))
    os.replace(tmp, path)
