"""The nodes of the optimization graph and the per-process runtime they use.

Every node may run again from its start after a crash (see ``optimization.py``), so each side
effect is idempotent: audit events carry a once-key, ``apply`` checks the audit log for the
approval and for an earlier apply, and ``ClusterBackend.apply`` is idempotent per proposal id.

``SERVEWISE_CRASH_AT=<node>`` (or ``apply:after_cluster``, ``gate:after_decision``) makes the
process exit inside that node: a test-only hook for the crash-and-resume tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.types import interrupt

from servewise.agents.analyst import narrate
from servewise.agents.llm import LLMClient
from servewise.domain import DeploymentRef, Finding, Proposal
from servewise.errors import ApprovalRequiredError, RetryableError, ServewiseError
from servewise.workflows import steps
from servewise.workflows.approval import AutoApprovePolicy, Decision, resolve_decision
from servewise.workflows.audit import AuditLog
from servewise.workflows.environment import Environment, open_environment
from servewise.workflows.state import OptimizationState, RunOptions
from servewise.workflows.verification import verify_change

log = logging.getLogger(__name__)
CRASH_ENV = "SERVEWISE_CRASH_AT"
SYSTEM_ACTOR = "servewise"


def crash_point(name: str) -> None:
    """Test-only: exit the process abruptly (no cleanup, no checkpoint) at ``name``."""
    if os.environ.get(CRASH_ENV) == name:
        log.error("%s=%s: exiting abruptly", CRASH_ENV, name)
        os._exit(86)


@dataclass
class Runtime:
    """Per-process dependencies of the nodes (never checkpointed)."""

    audit: AuditLog
    llm: LLMClient | None = None
    environment: Environment | None = None
    on_progress: Callable[[str, str], None] | None = None  # (run id, a line per benchmark run)
    _policy: AutoApprovePolicy | None = field(default=None, repr=False)

    def env(self, state: OptimizationState) -> Environment:
        if self.environment is None:
            opts = options(state)
            self.environment = open_environment(opts.cluster, prometheus=opts.prometheus)
        return self.environment

    def policy(self, state: OptimizationState) -> AutoApprovePolicy | None:
        path = options(state).policy_path
        if path and self._policy is None:
            self._policy = AutoApprovePolicy.load(Path(path))
        return self._policy


def options(state: OptimizationState) -> RunOptions:
    return RunOptions.model_validate(state.get("options") or {})


def _proposals(items: list[dict[str, Any]] | None) -> list[Proposal]:
    return [Proposal.model_validate(p) for p in items or []]


def _allowed(policy: AutoApprovePolicy | None, proposals: list[Proposal], at: datetime) -> list[Proposal]:
    """The proposals ``policy`` approves at ``at`` (none without a policy)."""
    if policy is None:
        return []
    out = []
    for p in proposals:
        reasons = policy.reasons_to_refuse(p, at)
        if reasons:
            log.info("policy %s does not approve %s at %s: %s", policy.name, p.id, at, "; ".join(reasons))
        else:
            out.append(p)
    return out


def _dump(items: list[Proposal]) -> list[dict[str, Any]]:
    return [p.model_dump(mode="json") for p in items]


class Nodes:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def _status(
        self, state: OptimizationState, status: str, proposals: int | None = None, summary: str = ""
    ) -> None:
        self.rt.audit.upsert_run(
            state["run_id"],
            cluster=options(state).cluster,
            status=status,
            proposals=proposals,
            summary=summary,
        )

    def collect(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("collect")
        self.rt.audit.record(
            state["run_id"], "started", SYSTEM_ACTOR, once=True, details={"options": state.get("options")}
        )
        self._status(state, "running")
        snap = steps.collect_telemetry(self.rt.env(state), options(state).window)
        return {"snapshot": snap.model_dump(mode="json"), "status": "running"}

    def analyze(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("analyze")
        findings = steps.analyze(self.rt.env(state), options(state).window)
        return {"findings": [f.model_dump(mode="json") for f in findings]}

    def optimize(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("optimize")
        opts, env = options(state), self.rt.env(state)
        findings = [Finding.model_validate(f) for f in state.get("findings") or []]
        proposals, notes = steps.optimize(
            env,
            opts.window,
            findings,
            benchmark=opts.benchmark,
            max_benchmark_minutes=opts.max_benchmark_minutes,
            on_progress=self._progress(state["run_id"]),
            only=opts.deployments,
        )
        kept, dropped = [], []
        for p in proposals:
            broken = steps.measured_slo_breaks(env, p)
            if broken:
                dropped.append(
                    {"proposal": p.model_dump(mode="json"), "reason": f"benchmark breaks SLO: {broken}"}
                )
            else:
                kept.append(p)
        return {"proposals": _dump(kept), "dropped": dropped, "notes": notes}

    def propose(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("propose")
        findings = [Finding.model_validate(f) for f in state.get("findings") or []]
        proposals = _proposals(state.get("proposals"))
        llm = self.rt.llm if options(state).use_llm else None
        before = llm.usage.as_dict() if llm else {}
        narrative, author = narrate(findings, proposals, llm)
        usage = {k: round(v - before.get(k, 0), 6) for k, v in llm.usage.as_dict().items()} if llm else {}
        for p in proposals:
            self.rt.audit.record(
                state["run_id"],
                "proposed",
                SYSTEM_ACTOR,
                proposal_id=p.id,
                once=True,
                details={
                    "ref": p.ref.key,
                    "summary": p.summary,
                    "predicted": p.predicted.model_dump(mode="json"),
                },
            )
        status = (
            "no_proposals"
            if not proposals
            else ("proposed" if options(state).stop_after_propose else "awaiting_approval")
        )
        self._status(
            state, status, proposals=len(proposals), summary=proposals[0].summary if proposals else ""
        )
        return {
            "narrative": narrative,
            "narrative_by": author,
            "status": status,
            "llm_usage": usage,
            # the instant the gate checks the auto-approve policy at, so a re-run shows the same set
            "proposed_at": self.rt.env(state).now().isoformat(),
        }

    def _progress(self, run_id: str) -> Callable[[str], None] | None:
        report = self.rt.on_progress
        return None if report is None else (lambda line: report(run_id, line))

    def gate(self, state: OptimizationState) -> dict[str, Any]:
        run_id, proposals = state["run_id"], _proposals(state.get("proposals"))
        policy, env = self.rt.policy(state), self.rt.env(state)
        # What the policy allows at the instant the run proposed: the same set on every run of this
        # node (it re-runs from its start on resume), so a window that opens while a person decides
        # cannot take proposals away from that person.
        stored = state.get("proposed_at")
        auto = _allowed(policy, proposals, datetime.fromisoformat(stored) if stored else env.now())
        pending = [p for p in proposals if p not in auto]
        decision: Decision | None = None
        withdrawn: list[Proposal] = []
        if pending:
            self._status(state, "awaiting_approval", proposals=len(proposals))
            # The approver sees what the policy allows; rejecting the run withdraws those too.
            answer = interrupt(
                {
                    "run_id": run_id,
                    "pending": _dump(pending),
                    "auto_approved": [p.id for p in auto],
                    "narrative": state.get("narrative", ""),
                }
            )
            decision = Decision.model_validate(answer)
            crash_point("gate:after_decision")
            # a proposal the approver named decides as they said (it was pending when they saw it)
            named = set(decision.proposal_ids or []) | set(decision.edits)
            pending += [p for p in auto if p.id in named]
            auto = [p for p in auto if p.id not in named]
            if decision.action == "reject":
                withdrawn, auto = auto, []
        # Checked again when they would be applied, which only narrows the set (a window that closed);
        # a verdict already recorded for this run (a crash after it, then a re-run) stands.
        still = _allowed(policy, auto, env.now())

        def recorded(action: str, p: Proposal) -> bool:
            return self.rt.audit.has(action, p.id, run_id=run_id)

        kept = [
            p for p in auto if recorded("auto_approved", p) or (p in still and not recorded("rejected", p))
        ]
        lapsed, auto = [p for p in auto if p not in kept], kept
        approved = list(auto) + (resolve_decision(pending, decision) if decision else [])
        policy_actor = policy.actor if policy else SYSTEM_ACTOR

        def verdict(action: str, actor: str, p: Proposal, **details: Any) -> None:
            self.rt.audit.record(run_id, action, actor, proposal_id=p.id, once=True, details=details)

        for p in lapsed:
            verdict(
                "rejected",
                policy_actor,
                p,
                comment="the auto-approve policy no longer allows it (its change window closed?)",
            )
        for p in withdrawn:  # only a decision withdraws
            assert decision is not None
            verdict(
                "rejected",
                decision.actor,
                p,
                comment=decision.comment,
                withdrawn="the run was rejected: the auto-approve policy's approval is withdrawn",
            )
        for p in auto:
            verdict("auto_approved", policy_actor, p)
            verdict("approved", policy_actor, p, comment="within the auto-approve policy")
        if decision is not None:
            approved_ids = {p.id for p in approved}
            for p in pending:
                ok = p.id in approved_ids
                edited = next((a for a in approved if a.id == p.id and a.proposed != p.proposed), None)
                details: dict[str, Any] = {"comment": decision.comment}
                if edited is not None:
                    details["edits"] = decision.edits.get(p.id, {})
                verdict("approved" if ok else "rejected", decision.actor, p, **details)
        status = "approved" if approved else "rejected"
        self._status(state, status)
        return {
            "approved": _dump(approved),
            "auto_approved": [p.id for p in auto],
            "decision": decision.model_dump() if decision else None,
            "status": status,
        }

    def dry_run(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("dry_run")
        env, results, errors = self.rt.env(state), [], list(state.get("errors") or [])
        for p in _proposals(state.get("approved")):
            try:
                res = env.cluster.apply(p.ref, p.proposed, proposal_id=p.id, dry_run=True)
                results.append({"proposal_id": p.id, "ok": True, "patch": res.patch, "message": res.message})
                self.rt.audit.record(
                    state["run_id"],
                    "dry_run",
                    SYSTEM_ACTOR,
                    proposal_id=p.id,
                    once=True,
                    details={"ok": True, "patch": res.patch},
                )
            except ServewiseError as exc:
                results.append({"proposal_id": p.id, "ok": False, "message": str(exc)})
                errors.append(f"dry run of {p.id} failed: {exc}")
                self.rt.audit.record(
                    state["run_id"],
                    "dry_run",
                    SYSTEM_ACTOR,
                    proposal_id=p.id,
                    once=True,
                    details={"ok": False, "error": str(exc)},
                )
        return {"dry_runs": results, "errors": errors}

    def apply(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("apply")
        run_id, env = state["run_id"], self.rt.env(state)
        passed = {d["proposal_id"] for d in state.get("dry_runs") or [] if d["ok"]}
        applied, errors = [], list(state.get("errors") or [])
        for p in _proposals(state.get("approved")):
            if p.id not in passed:
                continue
            if not self.rt.audit.has("approved", p.id, run_id=run_id):
                raise ApprovalRequiredError(f"proposal {p.id} has no recorded approval; refusing to apply")
            if self.rt.audit.has("applied", p.id, run_id=run_id):  # this run's: an id recurs across runs
                log.info("proposal %s already applied in %s (audit log); not applying again", p.id, run_id)
                applied.append(
                    {"proposal_id": p.id, "ref": p.ref.model_dump(), "changed": False, "resumed": True}
                )
                continue
            try:
                res = env.cluster.apply(p.ref, p.proposed, proposal_id=p.id)
            except RetryableError:
                raise  # the node's retry policy tries again
            except ServewiseError as exc:
                errors.append(f"apply of {p.id} failed: {exc}")
                self.rt.audit.record(
                    run_id, "failed", SYSTEM_ACTOR, proposal_id=p.id, once=True, details={"error": str(exc)}
                )
                continue
            crash_point("apply:after_cluster")
            self.rt.audit.record(
                run_id,
                "applied",
                SYSTEM_ACTOR,
                proposal_id=p.id,
                once=True,
                details={"changed": res.changed, "patch": res.patch, "ref": p.ref.key},
            )
            applied.append({"proposal_id": p.id, "ref": p.ref.model_dump(), "changed": res.changed})
        self._status(state, "applied" if applied else "failed")
        return {"applied": applied, "errors": errors, "status": "applied" if applied else "failed"}

    def verify(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("verify")
        opts, env = options(state), self.rt.env(state)
        applied_ids = {a["proposal_id"] for a in state.get("applied") or []}
        proposals = [p for p in _proposals(state.get("approved")) if p.id in applied_ids]
        before = state.get("snapshot") or {}
        results = verify_change(env, proposals, before, opts)
        for r in results:
            self.rt.audit.record(
                state["run_id"], "verified", SYSTEM_ACTOR, proposal_id=r["proposal_id"], once=True, details=r
            )
        return {"verification": results}

    def rollback(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("rollback")
        env, done = self.rt.env(state), []
        refs = {a["proposal_id"]: DeploymentRef.model_validate(a["ref"]) for a in state.get("applied") or []}
        for r in state.get("verification") or []:
            pid = r["proposal_id"]
            if not r["regression"]:
                continue
            if not self.rt.audit.has("rolled_back", pid, run_id=state["run_id"]):
                res = env.cluster.rollback(refs[pid], proposal_id=pid)
                self.rt.audit.record(
                    state["run_id"],
                    "rolled_back",
                    SYSTEM_ACTOR,
                    proposal_id=pid,
                    once=True,
                    details={"reasons": r["reasons"], "patch": res.patch},
                )
            done.append(pid)
        return {"rolled_back": done}

    def report(self, state: OptimizationState) -> dict[str, Any]:
        crash_point("report")
        status = _final_status(state)
        approved = {p.id: p for p in _proposals(state.get("approved"))}  # edited as approved
        applied = {a["proposal_id"] for a in state.get("applied") or []}
        verification = {v["proposal_id"]: v for v in state.get("verification") or []}
        rows = [
            {
                "proposal_id": p.id,
                "ref": p.ref.key,
                "summary": approved.get(p.id, p).summary,
                "approved": p.id in approved,
                "applied": p.id in applied,
                "rolled_back": p.id in (state.get("rolled_back") or []),
                "verification": verification.get(p.id),
            }
            for p in _proposals(state.get("proposals"))
        ]
        report = {
            "status": status,
            "proposals": rows,
            "dropped": state.get("dropped") or [],
            "errors": state.get("errors") or [],
        }
        if status not in ("proposed", "no_proposals"):
            self.rt.audit.record(
                state["run_id"], "completed", SYSTEM_ACTOR, once=True, details={"status": status}
            )
        self._status(state, status)
        return {"report": report, "status": status}


def _final_status(state: OptimizationState) -> str:
    if not state.get("proposals"):
        return "no_proposals"
    if options(state).stop_after_propose:
        return "proposed"
    if not state.get("approved"):
        return "rejected"
    if state.get("rolled_back"):
        return "rolled_back"
    if not state.get("applied"):
        return "failed"
    return "completed"
