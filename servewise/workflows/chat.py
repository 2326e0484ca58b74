"""The operator chat: fixed commands always, free questions when an LLM is configured.

Commands (``status``, ``analyze``, ``propose``, ``explain``, ``approve``, ``reject``, ``runs``)
run deterministically with or without a model; approving is only ever a typed command with a
name (``approve RUN --as alice``), never something the model can do. Free text goes to the
operator agent (read-only tools) when a model is configured, else the chat lists the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from servewise.agents.analyst import offline_narrative
from servewise.agents.operator import ChatCommand, OperatorAgent, format_answer, help_text, parse_command
from servewise.domain import Finding, Proposal
from servewise.domain.histograms import shown_ms
from servewise.errors import ServewiseError
from servewise.tools.context import use_context
from servewise.workflows import steps
from servewise.workflows.approval import Decision
from servewise.workflows.environment import Environment
from servewise.workflows.runs import WorkflowService
from servewise.workflows.state import RunOptions


@dataclass
class ChatSession:
    service: WorkflowService
    env: Environment
    options: RunOptions
    operator: OperatorAgent | None = None

    def handle(self, line: str, *, on_text: Callable[[str], None] | None = None) -> str:
        cmd = parse_command(line)
        if cmd is None:
            if not line.strip():
                return ""
            if self.operator is None:
                return "No LLM is configured (offline mode). I understand these commands:\n" + help_text()
            with use_context(self.env.tool_context()):
                return format_answer(self.operator.ask(line, on_text=on_text), line)
        try:
            handler: Callable[[ChatCommand], str] = getattr(self, f"_cmd_{cmd.name}")
            return handler(cmd)
        except ServewiseError as exc:
            return f"error: {exc}"

    # -- commands -------------------------------------------------------------------------------
    def _cmd_help(self, cmd: ChatCommand) -> str:
        return help_text()

    def _cmd_status(self, cmd: ChatCommand) -> str:
        deps = self.env.cluster.list_deployments()
        snap = steps.collect_telemetry(self.env, self.options.window)
        lines = [f"{len(deps)} deployment(s) on {self.env.spec}:"]
        for d in deps:
            t = snap.for_workload(d.ref)
            sig = t.signals if t else {}
            engine = (t.engine if t else None) or d.config.engine.value
            ttft = (
                f"{shown_ms(engine, 'ttft_p99_ms', sig['ttft_p99_ms'])} ms" if "ttft_p99_ms" in sig else "n/a"
            )
            slo = f"{d.slo.ttft_p99_ms:.0f} ms" if d.slo and d.slo.ttft_p99_ms else "none"
            lines.append(
                f"  {d.ref.key}: {d.config.model} on {d.config.replicas}x{d.config.gpus_per_replica} {d.config.gpu}, "
                f"p99 TTFT {ttft} (SLO {slo})"
            )
        waiting = [r.run_id for r in self.service.runs(status="awaiting_approval")]
        lines.append(f"runs awaiting approval: {', '.join(waiting) or 'none'}")
        return "\n".join(lines)

    def _cmd_analyze(self, cmd: ChatCommand) -> str:
        findings = steps.analyze(self.env, self.options.window)
        if not findings:
            return "No findings: every analyzer passed."
        return "\n".join(_finding_line(f) for f in findings)

    def _cmd_propose(self, cmd: ChatCommand) -> str:
        view = self.service.start(self.options)
        head = f"run {view.run_id}: {view.status}"
        if not view.proposals:
            return head + " (no change proposed)"
        return head + "\n" + view.narrative + f"\napprove with: approve {view.run_id} --as NAME"

    def _cmd_explain(self, cmd: ChatCommand) -> str:
        run_id = cmd.args[0] if cmd.args else self._latest_run()
        view = self.service.view(run_id)
        proposals = [Proposal.model_validate(p) for p in view.proposals]
        lines = [f"run {run_id}: {view.status}"]
        if view.narrative:
            lines.append(view.narrative)
        elif proposals:
            lines.append(offline_narrative([], proposals))
        if view.report:
            for row in view.report.get("proposals", []):
                v = row.get("verification") or {}
                lines.append(
                    f"  {row['proposal_id']}: approved={row['approved']} applied={row['applied']} "
                    f"rolled_back={row['rolled_back']} regression={v.get('regression')}"
                )
        return "\n".join(lines)

    def _cmd_approve(self, cmd: ChatCommand) -> str:
        if not cmd.args or "as" not in cmd.options:
            return "usage: approve RUN [PROPOSAL...] --as NAME [--comment TEXT]"
        run_id, ids = cmd.args[0], list(cmd.args[1:]) or None
        decision = Decision(
            action="approve",
            actor=cmd.options["as"],
            comment=cmd.options.get("comment", ""),
            proposal_ids=ids,
        )
        view = self.service.decide(run_id, decision)
        return f"run {run_id}: {view.status}"

    def _cmd_reject(self, cmd: ChatCommand) -> str:
        if not cmd.args or "as" not in cmd.options:
            return "usage: reject RUN --as NAME --reason TEXT"
        decision = Decision(action="reject", actor=cmd.options["as"], comment=cmd.options.get("reason", ""))
        view = self.service.decide(cmd.args[0], decision)
        return f"run {cmd.args[0]}: {view.status}"

    def _cmd_runs(self, cmd: ChatCommand) -> str:
        runs = self.service.runs()
        if not runs:
            return "no runs yet"
        return "\n".join(f"  {r.run_id}  {r.status:<18} {r.proposals} proposal(s)  {r.summary}" for r in runs)

    def _latest_run(self) -> str:
        runs = self.service.runs()
        if not runs:
            raise ServewiseError("no runs yet: try `propose`")
        return runs[0].run_id


def _finding_line(f: Finding) -> str:
    ev = ", ".join(f"{e.signal}={e.value:g}" for e in f.evidence if e.value is not None)
    return f"  [{f.severity.value}] {f.ref.key} {f.kind}: {f.summary}" + (f" ({ev})" if ev else "")
