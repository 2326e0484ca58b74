"""Server-rendered HTML pages: fleet, runs, one run with its approval forms, audit log, chat.

Every value that comes from the cluster, a run or a person (names, annotations, summaries,
narratives, comments) is untrusted and goes through ``esc`` before it reaches the page; the
browser script only ever writes text with ``textContent``. The forms post JSON to ``/api``.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from string import Template
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from servewise.console.api import StateDep
from servewise.domain import Proposal, ServingConfig
from servewise.errors import NotFoundError
from servewise.workflows.runs import RunView
from servewise.workflows.verification import verdict

router = APIRouter(include_in_schema=False)
LAYOUT = Template(resources.files("servewise.console").joinpath("templates/layout.html").read_text())
KNOBS = tuple(ServingConfig.model_fields)
IN_FLIGHT = ("queued", "running")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, state: Any, status_code: int = 200) -> HTMLResponse:
    doc = LAYOUT.substitute(
        title=esc(title), body=body, cluster=esc(state.config.cluster), mode=esc(state.mode)
    )
    return HTMLResponse(doc, status_code=status_code)


def table(headers: list[str], rows: list[list[str]], *, cls: str = "") -> str:
    """``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:,.2f}/h"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def _knob(config: ServingConfig, knob: str) -> str:
    value = getattr(config, knob)
    return value.label if knob == "quantization" and hasattr(value, "label") else str(value)


@router.get("/healthz", response_class=PlainTextResponse)
def healthz() -> str:
    return "ok"


@router.get("/", response_class=HTMLResponse)
def fleet_page(state: StateDep) -> HTMLResponse:
    fleet = state.fleet()
    deps = []
    for d in fleet.deployments:
        c = d.config
        slo = _ms(d.slo.ttft_p99_ms) if d.slo and d.slo.ttft_p99_ms else "none"
        notes = "; ".join(f"{k}={v}" for k, v in sorted(d.annotations.items()))
        deps.append(
            [
                f'<span title="{esc(notes)}">{esc(d.ref.key)}</span>',
                esc(c.model),
                esc(c.gpu),
                esc(f"{c.replicas} x {c.gpus_per_replica}"),
                esc(c.tensor_parallel),
                esc(_knob(c, "quantization")),
                esc(c.max_num_seqs),
                esc(c.max_num_batched_tokens),
                esc(d.pool or ""),
                esc(slo),
                esc("" if d.ready_replicas is None else d.ready_replicas),
            ]
        )
    pools = [
        [
            esc(p.name),
            esc(p.gpu),
            esc(p.nodes),
            esc(p.gpus_per_node),
            esc(p.free_gpus),
            esc(p.location),
            esc(_money(p.price_per_gpu_hour)),
        ]
        for p in fleet.node_pools
    ]
    unparsed = "".join(f"<li>{esc(u.namespace)}/{esc(u.name)}: {esc(u.reason)}</li>" for u in fleet.unparsed)
    body = f"""
<section class="actions">
  <button id="start-run" data-api="/api/runs">Start optimization run</button>
  <span class="hint">analyses the fleet and stops at the approval gate; nothing changes without a decision</span>
  <p id="start-error" class="error" role="alert"></p>
</section>
<h2>Deployments ({len(fleet.deployments)})</h2>
{
        table(
            [
                "deployment",
                "model",
                "gpu",
                "replicas x gpus",
                "TP",
                "quant",
                "max seqs",
                "batched tokens",
                "pool",
                "p99 TTFT SLO",
                "ready",
            ],
            deps,
            cls="deployments",
        )
    }
<h2>Node pools</h2>
{table(["pool", "gpu", "nodes", "gpus/node", "free gpus", "location", "price/gpu"], pools)}
{f"<h2>Not understood</h2><ul>{unparsed}</ul>" if unparsed else ""}
<h2>Findings</h2>
<div id="findings" data-api="/api/findings"><p class="hint">analysing the fleet...</p></div>
"""
    return page("Fleet", body, state=state)


@router.get("/runs", response_class=HTMLResponse)
def runs_page(state: StateDep) -> HTMLResponse:
    rows = [
        [
            f'<a href="/runs/{esc(r.run_id)}">{esc(r.run_id)}</a>',
            f'<span class="status {esc(r.status)}">{esc(r.status)}</span>',
            esc(r.proposals),
            esc(r.cluster),
            esc(f"{r.created:%Y-%m-%d %H:%M:%S}"),
            esc(r.summary),
        ]
        for r in state.service.runs()
    ]
    body = "<h1>Runs</h1>" + (
        table(["run", "status", "proposals", "cluster", "created", "summary"], rows)
        if rows
        else '<p class="hint">No runs yet: start one from the fleet page.</p>'
    )
    return page("Runs", body, state=state)


def _proposal_card(p: Proposal, pending: bool) -> str:
    rows = []
    for knob in KNOBS:
        before, after = _knob(p.current, knob), _knob(p.proposed, knob)
        cls = ' class="changed"' if before != after else ""
        rows.append(f"<tr{cls}><td>{esc(knob)}</td><td>{esc(before)}</td><td>{esc(after)}</td></tr>")
    pr, me = p.predicted, p.measured
    impact = [
        [
            "predicted",
            esc(f"{_money(pr.cost_per_hour_before)} -> {_money(pr.cost_per_hour_after)}"),
            esc(_ms(pr.ttft_p99_ms)),
            esc(_ms(pr.tpot_p99_ms)),
            esc(f"±{pr.uncertainty_pct:.0f}%"),
            esc(pr.validated_by),
        ],
    ]
    if me is not None:
        impact.append(
            [
                "measured",
                esc(f"{_money(me.cost_per_hour_before)} -> {_money(me.cost_per_hour_after)}"),
                esc(_ms(me.ttft_p99_ms)),
                esc(_ms(me.tpot_p99_ms)),
                "",
                esc(me.validated_by),
            ]
        )
    check = (
        f'<div class="pick"><label><input type="checkbox" name="proposal_ids" value="{esc(p.id)}" checked> '
        'include in approval</label> <label>edits <input class="edits" data-proposal="'
        f'{esc(p.id)}" placeholder="knob=value, ... (e.g. replicas=2)"></label></div>'
        if pending
        else ""
    )
    return f"""
<article class="proposal" id="{esc(p.id)}">
  <h3>{esc(p.ref.key)} <small>{esc(p.id)}</small></h3>
  <p>{esc(p.summary)}</p>
  <p><b>risk:</b> {esc(p.risk)} &middot; <b>addresses:</b> {esc(", ".join(p.findings) or "-")}</p>
  <table class="knobs"><thead><tr><th>knob</th><th>current</th><th>proposed</th></tr></thead>
  <tbody>{"".join(rows)}</tbody></table>
  {table(["", "cost", "p99 TTFT", "p99 TPOT", "uncertainty", "how validated"], impact)}
  <details><summary>rollback and manifest patch</summary><p>{esc(p.rollback)}</p>
  <pre>{esc(json.dumps(p.manifest_patch, indent=1))}</pre></details>
  {check}
</article>"""


def _overview(view: RunView) -> str:
    rows = []
    for raw in view.proposals:
        p = Proposal.model_validate(raw)
        changed = [k for k in KNOBS if _knob(p.current, k) != _knob(p.proposed, k)]
        pr = p.predicted
        rows.append(
            [
                f'<a href="#{esc(p.id)}">{esc(p.ref.key)}</a>',
                esc(", ".join(f"{k} {_knob(p.current, k)} -> {_knob(p.proposed, k)}" for k in changed)),
                esc(f"{_money(pr.cost_per_hour_before)} -> {_money(pr.cost_per_hour_after)}"),
                esc(_ms(pr.ttft_p99_ms)),
                esc(p.risk.split(":")[0]),
                esc(
                    "pending"
                    if p.id in view.pending
                    else ("auto-approved" if p.id in view.auto_approved else "")
                ),
            ]
        )
    return table(["deployment", "change", "cost", "p99 TTFT (predicted)", "risk", ""], rows, cls="overview")


def _decision_forms(view: RunView) -> str:
    return f"""
<section class="decide" id="decide">
<form id="approve-form" data-api="/api/runs/{esc(view.run_id)}/approve">
  <h3>Approve</h3>
  <label>Your name <input name="actor" required autocomplete="username"></label>
  <label>Comment <input name="comment"></label>
  <button type="submit">Approve selected</button>
  <span class="hint">tick the proposals below; optional edits are re-validated</span>
</form>
<form id="reject-form" data-api="/api/runs/{esc(view.run_id)}/reject">
  <h3>Reject all</h3>
  <label>Your name <input name="actor" required></label>
  <label>Reason <input name="reason" required></label>
  <button type="submit" class="danger">Reject</button>
</form>
<p id="decide-error" class="error" role="alert"></p>
</section>"""


def _report(report: dict[str, Any]) -> str:
    rows = []
    for r in report.get("proposals", []):
        v = r.get("verification") or {}
        rows.append(
            [
                esc(r.get("proposal_id")),
                esc(r.get("ref")),
                esc(r.get("approved")),
                esc(r.get("applied")),
                esc(v.get("regression")),
                esc(r.get("rolled_back")),
                esc(verdict(v) if r.get("applied") else ""),
            ]
        )
    errors = "".join(f"<li>{esc(e)}</li>" for e in report.get("errors", []))
    return (
        "<h2>Outcome</h2>"
        + table(
            ["proposal", "deployment", "approved", "applied", "regression", "rolled back", "verification"],
            rows,
            cls="report",
        )
        + (f'<ul class="error">{errors}</ul>' if errors else "")
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(state: StateDep, run_id: str) -> HTMLResponse:
    try:
        view = state.view(run_id)
    except NotFoundError:
        return page("Not found", f"<h1>No run {esc(run_id)}</h1>", state=state, status_code=404)
    pending = set(view.pending)
    cards = "".join(_proposal_card(Proposal.model_validate(p), p["id"] in pending) for p in view.proposals)
    dropped = "".join(
        f"<li>{esc(d.get('proposal', {}).get('id'))}: {esc(d.get('reason'))}</li>" for d in view.dropped
    )
    events = [
        [
            esc(e.ts.strftime("%H:%M:%S")),
            esc(e.action),
            esc(e.actor),
            esc(e.proposal_id or ""),
            esc(e.details.get("comment", "")),
        ]
        for e in state.service.audit.events(run_id)
    ]
    refresh = ' data-refresh="3"' if view.status in IN_FLIGHT else ""
    status = f'<span class="status {esc(view.status)}" id="run-status">{esc(view.status)}</span>'
    waiting = view.status == "awaiting_approval"
    body = f"""
<h1{refresh} id="run-head">Run {esc(view.run_id)}: {status}</h1>
{_overview(view) if view.proposals else ""}
{'<p><a href="#decide">Decide below</a> after reading the proposals.</p>' if waiting else ""}
{
        f'<details class="narrative" open><summary>Why (approver note)</summary><pre>{esc(view.narrative)}</pre>'
        "</details>"
        if view.narrative
        else ""
    }
<h2>Proposals ({len(view.proposals)})</h2>
{cards or '<p class="hint">No change proposed.</p>'}
{f"<h2>Dropped</h2><ul>{dropped}</ul>" if dropped else ""}
{_decision_forms(view) if waiting else ""}
{_report(view.report) if view.report else ""}
<h2>Audit</h2>
{table(["time", "action", "actor", "proposal", "comment"], events, cls="audit")}
"""
    return page(f"Run {run_id}", body, state=state)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(state: StateDep) -> HTMLResponse:
    rows = [
        [
            esc(f"{e.ts:%Y-%m-%d %H:%M:%S}"),
            f'<a href="/runs/{esc(e.run_id)}">{esc(e.run_id)}</a>',
            esc(e.action),
            esc(e.actor),
            esc(e.proposal_id or ""),
            esc(e.details.get("comment", "")),
        ]
        for e in state.service.audit.events()
    ]
    body = '<h1>Audit log</h1><p class="hint">append-only; every proposal, decision and action</p>' + table(
        ["time", "run", "action", "actor", "proposal", "comment"], rows, cls="audit"
    )
    return page("Audit", body, state=state)


@router.get("/chat", response_class=HTMLResponse)
def chat_page(state: StateDep, request: Request) -> HTMLResponse:
    body = """
<h1>Operator chat</h1>
<p class="hint">Commands: status, analyze, propose, explain [RUN], runs, approve RUN --as NAME, help.
Free questions need an LLM endpoint.</p>
<div id="transcript" aria-live="polite"></div>
<form id="chat-form" data-api="/api/chat">
  <input name="message" required autocomplete="off" placeholder="status">
  <button type="submit">Send</button>
</form>"""
    return page("Chat", body, state=state)
