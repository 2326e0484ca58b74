"""The workflow's calls into the tool layer, one function per node, each a narrow adapter.

Nodes never parse tool outputs themselves: they call these functions, which call the tools by
name through the registry (the same typed path an agent uses) and turn a ``ToolError`` into a
``WorkflowStepError`` naming the tool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from servewise.domain import SLO, Finding, Proposal, TelemetrySnapshot
from servewise.errors import PermanentError
from servewise.tools.context import use_context
from servewise.tools.registry import ToolError
from servewise.workflows.environment import Environment

log = logging.getLogger(__name__)


class WorkflowStepError(PermanentError):
    """A tool the workflow depends on failed."""


def _call(
    env: Environment, tool: str, args: dict[str, Any], on_progress: Callable[[str], None] | None = None
) -> BaseModel:
    ctx = env.tool_context()
    if on_progress is not None:
        ctx.extras["on_progress"] = on_progress  # tools that run long report lines through it
    with use_context(ctx):
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


def optimize(
    env: Environment,
    window: str,
    findings: list[Finding],
    *,
    benchmark: bool,
    max_benchmark_minutes: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    only: list[str] | None = None,
) -> tuple[list[Proposal], list[str]]:
    """One ``optimize_deployment`` call per deployment with findings (benchmark-validated by the tool),
    or per deployment of ``only`` (``NAMESPACE/NAME``) that has findings.

    Returns the proposals and a note per deployment that could not be optimized. ``on_progress``
    receives a line per benchmark run, prefixed with the deployment."""
    kinds: dict[str, list[str]] = {}
    refs = {}
    for f in findings:
        if only and f.ref.key not in only:
            continue
        kinds.setdefault(f.ref.key, []).append(f.kind)
        refs[f.ref.key] = f.ref
    proposals: list[Proposal] = []
    notes = [f"{key}: no findings: nothing to optimize" for key in only or [] if key not in refs]
    for key, ref in refs.items():
        args: dict[str, object] = {
            "name": ref.name,
            "namespace": ref.namespace,
            "window": window,
            "benchmark": benchmark,
        }
        if max_benchmark_minutes is not None:
            args["policy"] = {"max_benchmark_minutes": max_benchmark_minutes}
        try:
            report = (lambda line, k=key: on_progress(f"{k}: {line}")) if on_progress else None
            plan = _call(env, "optimize_deployment", args, report)
        except WorkflowStepError as exc:
            notes.append(f"{key}: {exc}")
            continue
        proposal = getattr(plan, "proposal", None)
        if proposal is None:
            reason = getattr(plan, "no_proposal_reason", None) or "no cheaper configuration meets the SLO"
            notes.append(f"{key}: no proposal: {reason}")
            continue
        p = Proposal.model_validate(
            proposal.model_dump(mode="json") if isinstance(proposal, BaseModel) else proposal
        )
        proposals.append(p if p.findings else p.model_copy(update={"findings": sorted(set(kinds[key]))}))
    return proposals, notes


def slo_of(env: Environment, proposal: Proposal) -> SLO | None:
    return env.cluster.get_deployment(proposal.ref).slo


def measured_slo_breaks(env: Environment, proposal: Proposal) -> list[str]:
    """SLOs the proposal's benchmark measurement (if any) breaks."""
    if proposal.measured is None:
        return []
    slo = slo_of(env, proposal)
    if slo is None:
        return []
    m = proposal.measured
    values = {
        k: v for k, v in (("ttft_p99_ms", m.ttft_p99_ms), ("tpot_p99_ms", m.tpot_p99_ms)) if v is not None
    }
    return slo.violations(values)
