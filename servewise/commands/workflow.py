"""`servewise optimize | runs | approve | reject | resume | chat | audit`: the optimization workflow.

Each command opens the workflow service on ``$SERVEWISE_HOME`` (checkpoints + audit log), so a run
started by one process is approved, resumed or audited by another.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from servewise.commands._inputs import from_options
from servewise.commands._output import err_console, out_console, print_json, writing
from servewise.errors import InputError, UnknownIdError

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
ClusterOpt = Annotated[
    str, typer.Option("--cluster", help="sim:SCENARIO | k8s[:CONTEXT] | py:module:factory", show_default=True)
]
MaxBenchmarkMinutesOpt = Annotated[
    float | None,
    typer.Option(
        "--max-benchmark-minutes",
        min=0.1,
        help="cap a confirming benchmark run at this many minutes of traffic (default: 10 000 requests)",
    ),
]
PromOpt = Annotated[
    str | None, typer.Option("--prometheus", help="Prometheus URL for telemetry (required with k8s)")
]
# the options that set RunOptions (and ConsoleConfig) fields, named in input errors
OPTION_FLAGS = {
    "cluster": "--cluster",
    "prometheus": "--prometheus",
    "policy_path": "--auto-approve",
    "stop_after_propose": "--dry-run",
    "window": "--window",
    "verify_window_s": "--verify-window",
    "benchmark": "--benchmark",
    "max_benchmark_minutes": "--max-benchmark-minutes",
    "deployments": "--deployment",
    "use_llm": "--offline",
    "offline": "--offline",
}
DECISION_FLAGS = {"actor": "--as"}


def _progress(run_id: str, node: str) -> None:
    err_console.print(f"[dim]{run_id}: {node} done[/dim]")


def _benchmark_progress(run_id: str, line: str) -> None:
    err_console.print(f"[dim]{run_id}: {escape(line)}[/dim]", highlight=False, soft_wrap=True)


def _service(**kwargs: Any) -> Any:
    from servewise.workflows.runs import WorkflowService

    return WorkflowService(on_node=_progress, on_progress=_benchmark_progress, **kwargs)


def _view_doc(view: Any) -> dict[str, Any]:
    doc = view.model_dump(mode="json")
    return {
        "run_id": doc.pop("run_id"),
        "status": doc.pop("status"),
        "proposals": doc.pop("proposals"),
        **doc,
    }


def _print_view(view: Any) -> None:
    from servewise.workflows.verification import verdict

    out_console.print(f"[bold]run {view.run_id}[/bold]: {view.status}")
    if view.narrative:
        out_console.print(view.narrative, markup=False, soft_wrap=True)
    for d in view.dropped:
        out_console.print(f"dropped {d['proposal']['id']}: {d['reason']}", markup=False, soft_wrap=True)
    for note in view.notes:
        out_console.print(f"note: {note}", markup=False, soft_wrap=True)
    if view.status == "awaiting_approval":
        if view.auto_approved:
            out_console.print(
                f"auto-approved by the policy (applied when the run is approved, withdrawn if it is rejected): "
                f"{', '.join(view.auto_approved)}",
                markup=False,
                soft_wrap=True,
            )
        out_console.print(
            f"approve: servewise approve {view.run_id} --as NAME   "
            f"reject: servewise reject {view.run_id} --as NAME --reason TEXT"
        )
    if view.report:
        for row in view.report["proposals"]:
            v = row.get("verification") or {}
            out_console.print(
                f"  {row['proposal_id']} {row['ref']}: approved={row['approved']} applied={row['applied']} "
                f"regression={v.get('regression')} rolled_back={row['rolled_back']}",
                markup=False,
                soft_wrap=True,
            )
            if row["approved"]:
                out_console.print(f"    {row['summary']}", markup=False, soft_wrap=True)
            if row["applied"]:
                out_console.print(f"    verification: {verdict(v)}", markup=False, soft_wrap=True)
        for e in view.report.get("errors", []):
            err_console.print(f"error: {e}", markup=False, soft_wrap=True)


def optimize(
    cluster: ClusterOpt = "sim:demo",
    prometheus: PromOpt = None,
    auto_approve: Annotated[
        Path | None, typer.Option("--auto-approve", help="bounded auto-approve policy (YAML)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="stop after proposing; never apply")] = False,
    window: Annotated[str, typer.Option(help="telemetry window analysed")] = "15m",
    verify_window: Annotated[float, typer.Option(help="seconds observed after a change")] = 600.0,
    benchmark: Annotated[bool, typer.Option("--benchmark/--no-benchmark", help="benchmark proposals")] = True,
    max_benchmark_minutes: MaxBenchmarkMinutesOpt = None,
    offline: Annotated[bool, typer.Option("--offline", help="no LLM even if one is configured")] = False,
    deployment: Annotated[
        list[str] | None,
        typer.Option("--deployment", "-d", help="optimize only NAMESPACE/NAME (repeatable; default: all)"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Analyze the fleet and propose changes; stops at the approval gate (unless auto-approved)."""
    from servewise.workflows.approval import AutoApprovePolicy
    from servewise.workflows.state import RunOptions

    if auto_approve is not None:
        AutoApprovePolicy.load(auto_approve)  # fail now, naming the file, not inside the graph
    opts = from_options(
        RunOptions,
        OPTION_FLAGS,
        cluster=cluster,
        prometheus=prometheus,
        policy_path=str(auto_approve.resolve()) if auto_approve else None,
        stop_after_propose=dry_run,
        window=window,
        verify_window_s=verify_window,
        benchmark=benchmark,
        max_benchmark_minutes=max_benchmark_minutes,
        use_llm=not offline,
        deployments=deployment or [],
    )
    from servewise.workflows.environment import open_environment

    env = open_environment(
        cluster, prometheus=prometheus
    )  # bad --cluster/--prometheus fail before a run exists
    if opts.deployments:  # a misspelled deployment fails now, naming the ones there are
        known = {d.ref.key for d in env.cluster.list_deployments()}
        unknown = [key for key in opts.deployments if key not in known]
        if unknown:
            raise UnknownIdError(
                f"no deployment {', '.join(unknown)} on {cluster}; there are {', '.join(sorted(known))}",
                field="--deployment",
            )
    with _service(llm=None if offline else True, environment=env) as svc:
        view = svc.start(opts)
    print_json(_view_doc(view)) if json_out else _print_view(view)


def runs(
    run_id: Annotated[str | None, typer.Argument(help="show one run in detail")] = None,
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List optimization runs, or show one."""
    with _service(llm=None) as svc:
        if run_id:
            view = svc.view(run_id)
            print_json(_view_doc(view)) if json_out else _print_view(view)
            return
        from servewise.workflows.runs import RUN_STATUSES

        if status is not None and status not in RUN_STATUSES:
            raise InputError(
                f"unknown run status {status!r}; statuses: {', '.join(RUN_STATUSES)}", field="--status"
            )
        records = svc.runs(status=status)
    if json_out:
        print_json({"runs": [r.model_dump(mode="json") for r in records]})
        return
    for r in records:
        out_console.print(
            f"{r.run_id}  {r.status:<18} {r.proposals} proposal(s)  {r.cluster}  {r.summary}",
            markup=False,
            soft_wrap=True,
        )
    if not records:
        err_console.print("no runs")


def approve(
    run_id: Annotated[str, typer.Argument(help="run waiting at the approval gate")],
    actor: Annotated[str, typer.Option("--as", help="your name, recorded in the audit log")],
    proposal: Annotated[
        list[str] | None, typer.Option("--proposal", help="approve only these proposal ids")
    ] = None,
    edit: Annotated[
        list[str] | None, typer.Option("--edit", help="[PROPOSAL:]knob=value, re-validated")
    ] = None,
    comment: Annotated[str, typer.Option(help="why")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Approve (optionally with edits) and continue: dry run, apply, verify, roll back on regression."""
    from servewise.workflows.approval import Decision, parse_edits

    with _service() as svc:
        pending = svc.pending_proposals(run_id)
        chosen = proposal or [p.id for p in pending]
        edits = parse_edits(edit or [], chosen[0] if len(chosen) == 1 else None)
        decision = from_options(
            Decision,
            DECISION_FLAGS,
            action="approve",
            actor=actor,
            comment=comment,
            proposal_ids=proposal or None,
            edits=edits,
        )
        view = svc.decide(run_id, decision)
    others = sorted({p.id for p in pending} - set(chosen))
    if others:  # a run is decided once: what was not approved is rejected, not left pending
        err_console.print(
            f"approved {', '.join(chosen)}; the run's other {len(others)} proposal(s) are rejected "
            f"({', '.join(others)}): a run is decided once, so optimize again to decide them later",
            markup=False,
            soft_wrap=True,
        )
    print_json(_view_doc(view)) if json_out else _print_view(view)


def reject(
    run_id: Annotated[str, typer.Argument(help="run waiting at the approval gate")],
    actor: Annotated[str, typer.Option("--as", help="your name, recorded in the audit log")],
    reason: Annotated[str, typer.Option("--reason", help="why, recorded in the audit log")],
    json_out: JsonOpt = False,
) -> None:
    """Reject every pending proposal of a run."""
    from servewise.workflows.approval import Decision

    decision = from_options(Decision, DECISION_FLAGS, action="reject", actor=actor, comment=reason)
    with _service(llm=None) as svc:
        view = svc.decide(run_id, decision)
    print_json(_view_doc(view)) if json_out else _print_view(view)


def resume(
    run_id: Annotated[str, typer.Argument(help="run that stopped between nodes")], json_out: JsonOpt = False
) -> None:
    """Continue a run interrupted by a crash (changes already applied are never applied again)."""
    with _service() as svc:
        view = svc.resume(run_id)
    print_json(_view_doc(view)) if json_out else _print_view(view)


def audit(
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
    jsonl: Annotated[
        Path | None, typer.Option("--jsonl", help="write events as JSON lines to this file")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The append-only audit log: every proposal, decision and action."""
    with _service(llm=None) as svc:
        events = svc.audit.events(run_id)
        if run_id is not None and not events:
            svc.view(run_id)  # an unknown run is an error, as in `servewise runs RUN`
        if jsonl is not None:
            with writing(jsonl, "--jsonl"), jsonl.open("w") as fh:
                n = svc.audit.export_jsonl(fh, run_id)
            err_console.print(f"wrote {n} event(s) to {jsonl}")
            return
    if json_out:
        print_json([e.as_record() for e in events])
        return
    for e in events:
        out_console.print(
            f"{e.ts:%Y-%m-%d %H:%M:%S} {e.run_id} {e.action:<13} {e.actor:<16} {e.proposal_id or ''}",
            markup=False,
        )


def chat(
    cluster: ClusterOpt = "sim:demo",
    prometheus: PromOpt = None,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="answer these and exit")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="no LLM even if one is configured")] = False,
) -> None:
    """Operator chat in the terminal: ask about the fleet, propose, explain, approve."""
    from servewise.agents.llm import LLMClient, LLMConfig
    from servewise.agents.operator import OperatorAgent, help_text
    from servewise.workflows.chat import ChatSession
    from servewise.workflows.environment import open_environment
    from servewise.workflows.state import RunOptions

    cfg = None if offline else LLMConfig.load()
    llm = LLMClient(cfg) if cfg else None
    env = open_environment(cluster, prometheus=prometheus)
    with _service(llm=llm, environment=env) as svc:
        session = ChatSession(
            service=svc,
            env=env,
            options=RunOptions(cluster=cluster, prometheus=prometheus, use_llm=llm is not None),
            operator=OperatorAgent(llm, env.registry) if llm else None,
        )
        lines = message if message else None
        if lines is None:
            err_console.print(
                f"servewise chat ({cfg.model if cfg else 'offline'}); commands:\n{help_text()}\nCtrl-D to quit"
            )
        for line in lines if lines is not None else _stdin_lines():
            out_console.print(session.handle(line), markup=False, soft_wrap=True)
        if llm is not None:
            err_console.print(f"LLM usage: {llm.usage.as_dict()}")


def _stdin_lines() -> Any:
    while True:
        if sys.stdin.isatty():
            err_console.print("> ", end="")
        line = sys.stdin.readline()
        if not line:
            return
        yield line.rstrip("\n")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(optimize)
    app.command()(runs)
    app.command()(approve)
    app.command()(reject)
    app.command()(resume)
    app.command()(audit)
    app.command()(chat)
