"""What the console holds while it runs: the workflow service, the environment, and its locks.

One ``ConsoleState`` per app. Runs are started in a single background worker (a run can take
minutes on the twin, longer than an ingress waits for a response) and their progress is read from
the LangGraph checkpoint and the audit log, like the CLI does. Everything that drives the graph
or the environment (starting, deciding, chatting) holds ``work_lock``: one mutation at a time.
Fleet and findings read from a second environment so the pages stay responsive during a run; it
is reopened after every run or decision, because the twin keeps its fleet in memory and only the
environment that ran the workflow saw the change (it persists it under ``$SERVEWISE_HOME/sim``).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from servewise.agents.llm import LLMClient, LLMConfig
from servewise.agents.operator import OperatorAgent, parse_command
from servewise.domain import Finding, InferenceDeployment, NodePool, UnparsedWorkload
from servewise.errors import NotFoundError, ServewiseError
from servewise.settings import get_settings
from servewise.workflows import steps
from servewise.workflows.approval import Decision
from servewise.workflows.chat import ChatSession
from servewise.workflows.environment import Environment, open_environment
from servewise.workflows.runs import RunView, WorkflowService, new_run_id
from servewise.workflows.state import RunOptions

log = logging.getLogger(__name__)


class ConsoleConfig(BaseModel):
    """How ``servewise console serve`` was started."""

    cluster: str = Field(default="sim:demo", description="sim:SCENARIO | k8s[:CONTEXT] | py:module:factory")
    prometheus: str | None = None
    offline: bool = Field(default=False, description="never call an LLM, even if one is configured")
    window: str = "15m"
    verify_window_s: float = Field(default=600.0, ge=0, allow_inf_nan=False)
    benchmark: bool = True
    max_benchmark_minutes: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="cap on a confirming benchmark run's traffic"
    )
    findings_ttl_s: float = Field(default=60.0, ge=0, description="how long analysed findings are reused")


class FleetView(BaseModel):
    cluster: str
    deployments: list[InferenceDeployment]
    node_pools: list[NodePool]
    unparsed: list[UnparsedWorkload]


class FindingsView(BaseModel):
    cluster: str
    window: str
    analysed_at: float = Field(description="unix time of the analysis (results are cached briefly)")
    findings: list[Finding]


@dataclass
class ConsoleState:
    config: ConsoleConfig
    home: Path
    service: WorkflowService
    env: Environment
    read_env: Environment
    llm: LLMClient | None
    work_lock: threading.RLock = field(default_factory=threading.RLock)
    read_lock: threading.Lock = field(default_factory=threading.Lock)
    failures: dict[str, str] = field(default_factory=dict)
    # runs the background worker has queued or is executing: between two nodes their checkpoint
    # looks like a run stopped by a crash ("interrupted"), but they are still in flight
    in_flight: set[str] = field(default_factory=set)
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="servewise-run")
    )
    _findings: FindingsView | None = None
    _chat: ChatSession | None = None

    @classmethod
    def open(cls, config: ConsoleConfig) -> ConsoleState:
        home = get_settings().ensure_home()  # $SERVEWISE_HOME: runs, audit log and the twin's state
        cfg = None if config.offline else LLMConfig.load(home=home)
        llm = LLMClient(cfg) if cfg else None
        env = open_environment(config.cluster, prometheus=config.prometheus)
        read_env = open_environment(config.cluster, prometheus=config.prometheus)
        service = WorkflowService(home=home, environment=env, llm=llm)
        return cls(config=config, home=home, service=service, env=env, read_env=read_env, llm=llm)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.service.close()

    @property
    def mode(self) -> str:
        return f"LLM {self.llm.config.model}" if self.llm is not None else "offline"

    def options(self) -> RunOptions:
        c = self.config
        return RunOptions(
            cluster=c.cluster,
            prometheus=c.prometheus,
            window=c.window,
            verify_window_s=c.verify_window_s,
            benchmark=c.benchmark,
            max_benchmark_minutes=c.max_benchmark_minutes,
            use_llm=self.llm is not None,
        )

    # -- fleet -----------------------------------------------------------------------------------
    def fleet(self) -> FleetView:
        with self.read_lock:
            cluster = self.read_env.cluster
            return FleetView(
                cluster=self.read_env.spec,
                deployments=cluster.list_deployments(),
                node_pools=cluster.list_node_pools(),
                unparsed=cluster.list_unparsed(),
            )

    def findings(self, *, refresh: bool = False) -> FindingsView:
        with self.read_lock:
            cached = self._findings
            if cached and not refresh and time.time() - cached.analysed_at < self.config.findings_ttl_s:
                return cached
            found = steps.analyze(self.read_env, self.config.window)
            self._findings = FindingsView(
                cluster=self.read_env.spec, window=self.config.window, analysed_at=time.time(), findings=found
            )
            return self._findings

    # -- runs ------------------------------------------------------------------------------------
    def start_run(self) -> tuple[str, Future[RunView]]:
        """Register a run and start it in the background worker; returns its id and its future."""
        run_id = new_run_id()
        opts = self.options()
        self.service.audit.upsert_run(run_id, cluster=opts.cluster, status="queued")
        self.in_flight.add(run_id)
        return run_id, self._executor.submit(self._run, run_id, opts)

    def _run(self, run_id: str, opts: RunOptions) -> RunView:
        try:
            with self.work_lock:
                view = self.service.start(opts, run_id=run_id)
        except Exception as exc:  # the worker must record every failure, not lose it in a future
            log.exception("run %s failed", run_id)
            self.failures[run_id] = f"{type(exc).__name__}: {exc}"
            record = self.service.audit.get_run(run_id)
            if (
                record is None or record.status != "failed"
            ):  # a failed step already said it, with how to resume
                self.service.audit.upsert_run(
                    run_id, cluster=opts.cluster, status="failed", summary=self.failures[run_id]
                )
            raise
        finally:
            self.in_flight.discard(run_id)
        self._refresh_reads()
        return view

    def _refresh_reads(self) -> None:
        """The fleet may have changed: reopen the read environment and forget cached findings."""
        fresh = open_environment(self.config.cluster, prometheus=self.config.prometheus)
        with self.read_lock:
            self.read_env = fresh
            self._findings = None

    def view(self, run_id: str) -> RunView:
        """The run from its checkpoint, or from the run index while it has none yet."""
        try:
            view = self.service.view(run_id)
        except NotFoundError:
            record = self.service.audit.get_run(run_id)
            if record is None:
                raise
            narrative = self.failures.get(run_id, record.summary)
            return RunView(run_id=run_id, status=record.status, narrative=narrative)
        if run_id in self.in_flight and view.status == "interrupted":
            return view.model_copy(update={"status": "running"})
        error = self.failures.get(run_id)
        if error and view.next:  # stopped by an error between nodes: say why and how to go on
            note = (
                f"stopped by an error before {', '.join(view.next)}: {error}; "
                f"fix it, then `servewise resume {run_id}`"
            )
            view = view.model_copy(update={"narrative": "\n".join(filter(None, [note, view.narrative]))})
        return view

    def decide(self, run_id: str, decision: Decision) -> RunView:
        with self.work_lock:
            view = self.service.decide(run_id, decision)
        self._refresh_reads()
        return view

    # -- chat ------------------------------------------------------------------------------------
    def chat(self, message: str) -> str:
        with self.work_lock:
            if self._chat is None:
                self._chat = ChatSession(
                    service=self.service,
                    env=self.env,
                    options=self.options(),
                    operator=OperatorAgent(self.llm, self.env.registry) if self.llm else None,
                )
            try:
                answer = self._chat.handle(message)
            except ServewiseError as exc:
                return f"error: {exc}"
        if parse_command(message) is not None:  # a command may have started or decided a run
            self._refresh_reads()
        return answer
