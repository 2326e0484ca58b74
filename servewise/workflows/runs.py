"""Start, inspect, approve and continue optimization runs from any process.

``WorkflowService`` opens the checkpointer (SQLite file ``$SERVEWISE_HOME/checkpoints.sqlite`` by
default; Postgres when ``SERVEWISE_CHECKPOINT_URL=postgresql://...`` and
``langgraph-checkpoint-postgres`` is installed) and the audit log, compiles the graph, and uses
the run id as LangGraph's thread id. Checkpoints are written synchronously after each node
(``durability="sync"``) so a killed process loses at most the node it was in.

A process executing a run holds an exclusive lock on ``$SERVEWISE_HOME/locks/<run_id>.lock``
(``flock``; the OS releases it when the process ends, however it ends). So a second process
cannot execute the same run at once (a second ``approve`` or ``resume`` is refused), and a run the
run list still calls ``running`` whose lock nobody holds was killed: it is listed as its checkpoint
says (``interrupted``). The lock is per host: processes sharing a Postgres checkpointer from
several hosts are not kept apart by it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command, RunnableConfig
from pydantic import BaseModel, Field

from servewise.agents.llm import LLMClient, LLMConfig
from servewise.domain import Proposal
from servewise.errors import InputError, NotFoundError
from servewise.settings import get_settings
from servewise.workflows.approval import Decision, resolve_decision
from servewise.workflows.audit import AuditLog, RunRecord
from servewise.workflows.environment import Environment
from servewise.workflows.optimization import Runtime, build_graph
from servewise.workflows.state import RunOptions

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not kept apart there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LOCK_WAIT_S = 2.0  # how long to wait out another process merely looking at the lock
# statuses a run is left in for good; any other, with no process executing it, is read from its checkpoint
FINAL_STATUSES = frozenset({"completed", "rejected", "rolled_back", "failed", "no_proposals", "proposed"})
CHECKPOINT_URL_ENV = "SERVEWISE_CHECKPOINT_URL"
# LangGraph keeps a ``Command(resume=...)`` value as a pending write on this channel until the
# interrupted node finishes, so a decision survives a crash inside the gate node.
RESUME_CHANNEL = "__resume__"
# Every status a run is listed with (nodes.py and this module write them; ``interrupted`` is read
# from the checkpoint of a run no process executes; the console's ``queued`` precedes the first).
RunStatus = Literal[
    "queued",
    "running",
    "interrupted",
    "proposed",
    "no_proposals",
    "awaiting_approval",
    "approved",
    "rejected",
    "applied",
    "failed",
    "rolled_back",
    "completed",
]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)


class RunView(BaseModel):
    """A run as the CLI, the console and GitOps see it."""

    run_id: str
    status: str
    proposals: list[dict[str, Any]] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list, description="proposal ids waiting at the gate")
    auto_approved: list[str] = Field(
        default_factory=list,
        description="proposal ids the auto-approve policy allows (while waiting: applied when the run is"
        " approved, withdrawn when it is rejected; after the gate: approved by the policy)",
    )
    narrative: str = ""
    next: list[str] = Field(default_factory=list, description="nodes still to run (non-empty after a crash)")
    report: dict[str, Any] | None = None
    dropped: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="deployments the optimizer could not improve, and why"
    )
    decision: dict[str, Any] | None = Field(default=None, description="the gate's decision, once given")
    llm_usage: dict[str, float] = Field(
        default_factory=dict, description="tokens and USD the run's LLM calls used"
    )


def new_run_id() -> str:
    return "run-" + uuid.uuid4().hex[:12]


@contextmanager
def open_checkpointer(home: Path) -> Iterator[BaseCheckpointSaver[Any]]:
    url = os.environ.get(CHECKPOINT_URL_ENV, "")
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError as exc:
            raise InputError(
                "Postgres checkpoints need `pip install langgraph-checkpoint-postgres`",
                field=CHECKPOINT_URL_ENV,
            ) from exc
        with PostgresSaver.from_conn_string(url) as saver:
            saver.setup()
            yield saver
        return
    if url:
        raise InputError(
            f"unsupported checkpoint URL {url!r}; use postgresql://...", field=CHECKPOINT_URL_ENV
        )
    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(home / "checkpoints.sqlite", check_same_thread=False, timeout=30)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


class WorkflowService:
    """Use as a context manager: ``with WorkflowService() as svc: svc.start(RunOptions())``."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        environment: Environment | None = None,
        llm: LLMClient | None | bool = True,
        on_node: Callable[[str, str], None] | None = None,
        on_progress: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_node(run_id, node)`` after each step; ``on_progress(run_id, line)`` for each
        benchmark run of the optimize step (they take minutes)."""
        self.on_node = on_node
        self.home = home or get_settings().ensure_home()
        self._stack = ExitStack()
        self.audit = AuditLog(self.home / "audit.sqlite")
        if llm is True:
            cfg = LLMConfig.load(home=self.home)
            llm = LLMClient(cfg) if cfg else None
        self.runtime = Runtime(
            audit=self.audit, llm=llm or None, environment=environment, on_progress=on_progress
        )
        self._saver = self._stack.enter_context(open_checkpointer(self.home))
        self.graph = build_graph(self.runtime).compile(checkpointer=self._saver)

    def __enter__(self) -> WorkflowService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self.audit.close()

    @staticmethod
    def _config(run_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": run_id}}

    def start(self, opts: RunOptions, *, run_id: str | None = None) -> RunView:
        run_id = run_id or new_run_id()
        with self._executing(run_id):
            if self.graph.get_state(self._config(run_id)).values:
                raise InputError(f"run {run_id} already exists", field="run_id")
            self.audit.upsert_run(run_id, cluster=opts.cluster, status="running")
            self._drive({"run_id": run_id, "options": opts.model_dump()}, run_id)
        return self.view(run_id)

    def _lock_path(self, run_id: str) -> Path:
        return self.home / "locks" / f"{run_id}.lock"

    @contextmanager
    def _executing(self, run_id: str) -> Iterator[None]:
        """Hold the run's lock while this process executes it; refused while another holds it
        (after ``LOCK_WAIT_S``: ``executing`` holds it for an instant to look)."""
        if fcntl is None:
            yield
            return
        path = self._lock_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        raise InputError(
                            f"run {run_id} is being executed by another process; wait for it to stop at the "
                            f"gate or finish (`servewise runs {run_id}`)",
                            field="run_id",
                        ) from exc
                    time.sleep(0.05)
            yield  # closing the file releases the lock

    def executing(self, run_id: str) -> bool:
        """Is a process (this one or another on this host) executing the run now?"""
        path = self._lock_path(run_id)
        if fcntl is None or not path.exists():
            return False
        with path.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def runs(self, *, status: str | None = None) -> list[RunRecord]:
        """The run list, newest first; a run not in a final status that no process executes (one
        killed mid-step, even after its gate) is given the status its checkpoint says
        (``interrupted``, or ``awaiting_approval`` at the gate), as ``view`` does."""
        out = []
        for record in self.audit.runs():
            if (
                record.status not in FINAL_STATUSES
                and record.status != "queued"
                and not self.executing(record.run_id)
            ):
                try:
                    record = record.model_copy(update={"status": self.view(record.run_id).status})
                except NotFoundError:  # killed before its first checkpoint
                    record = record.model_copy(update={"status": "interrupted"})
            if status is None or record.status == status:
                out.append(record)
        return out

    def _drive(self, graph_input: Any, run_id: str) -> None:
        """Run the graph until it ends or interrupts, reporting each finished node; the caller
        holds the run's lock (``_executing``) from its checks on. A step that raises leaves the run
        ``failed`` in the run list, with the error (its checkpoint stays: ``resume`` retries from
        the last finished step); a killed process leaves the run list's last word, which ``runs``
        reads from the checkpoint (``interrupted``)."""
        try:
            for update in self.graph.stream(
                graph_input, self._config(run_id), stream_mode="updates", durability="sync"
            ):
                for node in update:
                    if not node.startswith("__") and self.on_node is not None:
                        self.on_node(run_id, node)
        except Exception as exc:
            summary = f"{type(exc).__name__}: {exc} (`servewise resume {run_id}` retries from the last finished step)"
            self.audit.upsert_run(run_id, cluster="", status="failed", summary=summary)
            raise

    def view(self, run_id: str) -> RunView:
        snap = self.graph.get_state(self._config(run_id))
        values = snap.values or {}
        if not values:
            raise NotFoundError(f"no run {run_id!r} in {self.home}")
        pending: list[str] = []
        auto: list[str] = list(values.get("auto_approved") or [])
        for intr in snap.interrupts:
            if isinstance(intr.value, dict):
                pending += [p["id"] for p in intr.value.get("pending", [])]
                auto += [i for i in intr.value.get("auto_approved", []) if i not in auto]
        status = values.get("status", "running")
        stored = self._stored_decision(run_id)
        if snap.interrupts and stored is None:
            status = "awaiting_approval"
        elif snap.next:  # a crash or a failed step: `resume` continues (with the stored decision, if any)
            status = "running" if self.executing(run_id) else "interrupted"
        approved = {p["id"]: p for p in values.get("approved") or []}  # as approved: edits applied
        dry = {d["proposal_id"]: d.get("patch") for d in values.get("dry_runs") or [] if d.get("ok")}
        for pid, p in approved.items():  # an edited proposal's patch is its dry run's
            if not p.get("manifest_patch") and dry.get(pid):
                approved[pid] = {**p, "manifest_patch": dry[pid]}
        return RunView(
            run_id=run_id,
            status=status,
            proposals=[approved.get(p["id"], p) for p in values.get("proposals") or []],
            pending=pending,
            auto_approved=auto,
            narrative=values.get("narrative", ""),
            next=list(snap.next),
            report=values.get("report"),
            dropped=values.get("dropped") or [],
            notes=values.get("notes") or [],
            decision=values.get("decision") or stored,
            llm_usage=values.get("llm_usage") or {},
        )

    def _stored_decision(self, run_id: str) -> dict[str, Any] | None:
        tup = self._saver.get_tuple(self._config(run_id))
        for _task, channel, value in (tup.pending_writes or []) if tup else []:
            if channel == RESUME_CHANNEL and isinstance(value, dict):
                return value
        return None

    def pending_proposals(self, run_id: str) -> list[Proposal]:
        view = self.view(run_id)
        if view.status == "proposed":  # started with --dry-run: it ended after proposing
            raise InputError(
                f"run {run_id} is a dry run: it stops after proposing and cannot be approved or rejected; "
                "re-run without --dry-run",
                field="run_id",
            )
        if view.status != "awaiting_approval":
            raise InputError(f"run {run_id} is {view.status}, not awaiting approval", field="run_id")
        return [Proposal.model_validate(p) for p in view.proposals if p["id"] in view.pending]

    def decide(self, run_id: str, decision: Decision) -> RunView:
        """Approve or reject at the gate; the decision is validated before the run resumes, under
        the run's lock (a second decider is refused, or finds the run decided)."""
        with self._executing(run_id):
            resolve_decision(self.pending_proposals(run_id), decision)  # raises InputError; nothing resumes
            self._drive(Command(resume=decision.model_dump()), run_id)
        return self.view(run_id)

    def resume(self, run_id: str) -> RunView:
        """Continue a run that stopped between nodes (a crash); a run at the gate needs a decision."""
        with self._executing(run_id):
            view = self.view(run_id)
            if view.status == "awaiting_approval":
                raise InputError(
                    f"run {run_id} is waiting for approval: use `servewise approve` or `reject`",
                    field="run_id",
                )
            if not view.next:
                return view
            previous = self.audit.get_run(run_id)
            failed = previous is not None and previous.status == "failed"  # its error no longer describes it
            self.audit.upsert_run(run_id, cluster="", status="running", summary="resumed" if failed else "")
            self._drive(None, run_id)
        return self.view(run_id)
