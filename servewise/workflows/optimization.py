"""The optimization cycle as a LangGraph graph with a human approval gate.

collect -> analyze -> optimize (benchmark-validated) -> propose -> gate (``interrupt``) -> dry_run
-> apply -> verify -> rollback (on regression) -> report. The thread id is the run id; state is
checkpointed after every node, so a run stopped anywhere (the gate, a crash, a kill) continues
from another process with ``Command(resume=decision)`` or ``invoke(None)``.

A node runs again from its start when resumed, so every side effect is idempotent: audit events
are written once per (run, action, proposal); ``apply`` skips a proposal the audit log shows as
applied and relies on ``ClusterBackend.apply`` being idempotent per proposal id for the window
between the cluster call and the audit write; nothing is applied without an approval event.
The nodes live in ``servewise.workflows.nodes``.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy

from servewise.errors import RetryableError
from servewise.workflows.nodes import Nodes, Runtime, options
from servewise.workflows.state import OptimizationState

NODES = (
    "collect",
    "analyze",
    "optimize",
    "propose",
    "gate",
    "dry_run",
    "apply",
    "verify",
    "rollback",
    "report",
)
__all__ = ["NODES", "Runtime", "build_graph"]


def _after_propose(state: OptimizationState) -> Literal["gate", "report"]:
    return "gate" if state.get("proposals") and not options(state).stop_after_propose else "report"


def _after_gate(state: OptimizationState) -> Literal["dry_run", "report"]:
    return "dry_run" if state.get("approved") else "report"


def _after_dry_run(state: OptimizationState) -> Literal["apply", "report"]:
    return "apply" if any(d["ok"] for d in state.get("dry_runs") or []) else "report"


def _after_apply(state: OptimizationState) -> Literal["verify", "report"]:
    return "verify" if state.get("applied") else "report"


def _after_verify(state: OptimizationState) -> Literal["rollback", "report"]:
    return "rollback" if any(v["regression"] for v in state.get("verification") or []) else "report"


def build_graph(rt: Runtime) -> StateGraph:
    nodes = Nodes(rt)
    retry = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=RetryableError)
    g = StateGraph(OptimizationState)
    for name in NODES:
        g.add_node(name, getattr(nodes, name), retry_policy=retry if name != "gate" else None)
    g.add_edge(START, "collect")
    g.add_edge("collect", "analyze")
    g.add_edge("analyze", "optimize")
    g.add_edge("optimize", "propose")
    g.add_conditional_edges("propose", _after_propose)
    g.add_conditional_edges("gate", _after_gate)
    g.add_conditional_edges("dry_run", _after_dry_run)
    g.add_conditional_edges("apply", _after_apply)
    g.add_conditional_edges("verify", _after_verify)
    g.add_edge("rollback", "report")
    g.add_edge("report", END)
    return g
