"""The console's JSON API under ``/api`` (typed with pydantic, so FastAPI's OpenAPI documents it).

Deciding needs a named approver: ``actor`` is required and blank names are refused with a 422
that names the field. A decision is validated against the pending proposals before the run
resumes (unknown proposal ids or invalid edits answer 400 naming the field); nothing is applied
without the decision recorded in the audit log.
"""

from __future__ import annotations

from concurrent.futures import wait
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from servewise.console.state import ConsoleState, FindingsView, FleetView
from servewise.errors import InputError
from servewise.workflows.approval import Decision
from servewise.workflows.audit import RunRecord
from servewise.workflows.runs import RunStatus, RunView

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Health(BaseModel):
    status: str = "ok"
    cluster: str
    mode: str = Field(description="'offline' or the LLM model in use")
    home: str


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: Name = Field(description="who approves; recorded in the audit log")
    comment: str = Field(default="", max_length=2000)
    proposal_ids: list[str] | None = Field(default=None, description="approve only these; omitted = all")
    edits: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="{proposal_id: {knob: value}}; re-validated before applying"
    )


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: Name = Field(description="who rejects; recorded in the audit log")
    reason: Name = Field(description="why; recorded in the audit log")


class StartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: bool = Field(default=False, description="answer only when the run reaches the gate or ends")


class RunStarted(BaseModel):
    run_id: str
    status: str
    run: RunView | None = Field(default=None, description="the run, when started with wait=true")


class RunList(BaseModel):
    runs: list[RunRecord]


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class ChatOut(BaseModel):
    message: str
    answer: str
    mode: str


def get_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


StateDep = Annotated[ConsoleState, Depends(get_state)]
router = APIRouter(prefix="/api", tags=["api"])


@router.get("/health")
def health(state: StateDep) -> Health:
    return Health(cluster=state.config.cluster, mode=state.mode, home=str(state.home))


@router.get("/fleet")
def fleet(state: StateDep) -> FleetView:
    return state.fleet()


@router.get("/findings")
def findings(state: StateDep, refresh: bool = False) -> FindingsView:
    return state.findings(refresh=refresh)


@router.post("/runs", status_code=status.HTTP_202_ACCEPTED)
def start_run(state: StateDep, body: StartIn | None = None) -> RunStarted:
    run_id, future = state.start_run()
    if body is not None and body.wait:
        wait([future])  # a failure is recorded by the worker; the run view below says what went wrong
        view = state.view(run_id)
        return RunStarted(run_id=run_id, status=view.status, run=view)
    return RunStarted(run_id=run_id, status="queued")


@router.get("/runs")
def list_runs(
    state: StateDep, status_filter: Annotated[RunStatus | None, Query(alias="status")] = None
) -> RunList:
    return RunList(runs=state.service.runs(status=status_filter))


@router.get("/runs/{run_id}")
def get_run(state: StateDep, run_id: str) -> RunView:
    return state.view(run_id)


@router.post("/runs/{run_id}/approve")
def approve(state: StateDep, run_id: str, body: ApproveIn) -> RunView:
    decision = Decision(
        action="approve",
        actor=body.actor,
        comment=body.comment,
        proposal_ids=body.proposal_ids,
        edits=body.edits,
    )
    try:
        return state.decide(run_id, decision)
    except InputError as exc:
        if exc.field == "--edit":  # the CLI's flag name; this API calls it ``edits``
            raise InputError(str(exc).split(": ", 1)[-1], field="edits") from exc
        raise


@router.post("/runs/{run_id}/reject")
def reject(state: StateDep, run_id: str, body: RejectIn) -> RunView:
    return state.decide(run_id, Decision(action="reject", actor=body.actor, comment=body.reason))


@router.get("/audit")
def audit(state: StateDep, run_id: Annotated[str | None, Query(alias="run")] = None) -> list[dict[str, Any]]:
    """Audit events in order, each ``{"ts", "run_id", "action", "actor", ...}`` (as ``servewise audit``)."""
    return [e.as_record() for e in state.service.audit.events(run_id)]


@router.post("/chat")
def chat(state: StateDep, body: ChatIn) -> ChatOut:
    return ChatOut(message=body.message, answer=state.chat(body.message), mode=state.mode)
