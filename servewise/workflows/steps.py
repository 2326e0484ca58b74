"""The workflow's calls into the tool layer, one function per node, each a narrow adapter.

Nodes never parse tool outputs themselves: they call these functions, which call the tools by
name through the registry (the same typed path an agent uses) and turn a ``ToolError`` into a
``WorkflowStepError`` naming the tool.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from servewise.domain import SLO, BenchmarkRequest, Finding, Impact, Proposal, TelemetrySnapshot
from servewise.errors import PermanentError, ServewiseError
from servewise.tools.context import use_context
from servewise.tools.registry import ToolError
from servewise.workflows.environment import Environment

log = logging.getLogger(__name__)


class WorkflowStepError(PermanentError):
    """A tool the workflow depends on failed."""


def _call(env: Environment, tool: str, args: dict[str, Any]) -> BaseModel:
    with use_context(env.tool_context()):
        out = env.registry.call(tool, args)
    if isinstance(out, ToolError):
        raise WorkflowStepError(f"tool {tool} failed ({out.kind}): {out.error}")
    return out


def _items(out: BaseModel, field: str, tool: str) -> list[Any]:
    items = getattr(out, field, None)
    if not isinstance(items, list):
        raise WorkflowStepError(f"tool {tool} returned {type(out).__name__} without a '{field}' list")
    return [i.model_dump(mode="json") if isinstance(i, BaseModel) else i for i in items]


def collect_telemetry(env: Environment, window: str) -> TelemetrySnapshot:
    return env.telemetry.snapshot(window=window)


def analyze(env: Environment, window: str) -> list[Finding]:
    out = _call(env, "analyze_fleet", {"window": window})
    return [Finding.model_validate(f) for f in _items(out, "findings", "analyze_fleet")]


def optimize(env: Environment, window: str) -> list[Proposal]:
    out = _call(env, "optimize_fleet", {"window": window})
    return [Proposal.model_validate(p) for p in _items(out, "proposals", "optimize_fleet")]


def slo_of(env: Environment, proposal: Proposal) -> SLO | None:
    return env.cluster.get_deployment(proposal.ref).slo


def benchmark(env: Environment, proposal: Proposal, num_requests: int) -> tuple[Proposal, list[str]]:
    """Measure the proposed config; returns the proposal with ``measured`` and the SLOs it breaks."""
    dep = env.cluster.get_deployment(proposal.ref)
    if dep.workload is None:
        return proposal, []
    try:
        res = env.cluster.run_benchmark(
            BenchmarkRequest(
                ref=proposal.ref, config=proposal.proposed, workload=dep.workload, num_requests=num_requests
            )
        )
    except ServewiseError as exc:
        log.warning("benchmark of %s failed: %s", proposal.id, exc)
        return proposal, []
    measured = Impact(
        cost_per_hour_before=proposal.predicted.cost_per_hour_before,
        cost_per_hour_after=proposal.predicted.cost_per_hour_after,
        ttft_p99_ms=res.ttft_p99_ms,
        tpot_p99_ms=res.tpot_p99_ms,
        throughput_tok_s=res.throughput_tok_s,
        validated_by=f"benchmark:{res.completed}",
    )
    broken = (
        dep.slo.violations(
            {"ttft_p99_ms": res.ttft_p99_ms, "tpot_p99_ms": res.tpot_p99_ms, "e2e_p99_ms": res.e2e_p99_ms}
        )
        if dep.slo
        else []
    )
    return proposal.model_copy(update={"measured": measured}), broken
