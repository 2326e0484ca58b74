"""`servewise demo`: the main job end to end on the embedded twin (no cluster, Prometheus or key).

1. discover the simulated fleet, 2. read its telemetry and find bottlenecks, 3. run the
optimization workflow to the human approval gate, 4. show the performance model against public
measurements, 5. run a small what-if study. Everything it prints is computed by the tools.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from servewise.commands._output import err_console, out_console, output_dir
from servewise.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO_ROOT / "data" / "published" / "measurements.csv"
DEMO_STUDY = REPO_ROOT / "studies" / "demo.yaml"
# The twin's clock for a fresh demo: its traffic follows the time of day (daily peaks, translate's
# 09:00 burst), so an unpinned clock made the findings and proposals depend on when it ran.
DEMO_CLOCK = "2026-11-24T09:20:00Z"


def _demo_start(text: str) -> datetime:
    """``now`` (the wall clock) or an ISO 8601 time (UTC unless it names a zone)."""
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"{text!r} is not an ISO 8601 time (e.g. {DEMO_CLOCK}) or 'now'", field="--start"
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _changes(current: dict[str, Any], proposed: dict[str, Any]) -> str:
    from servewise.agents.analyst import changed_knobs
    from servewise.domain import ServingConfig

    before, after = ServingConfig.model_validate(current), ServingConfig.model_validate(proposed)
    return ", ".join(changed_knobs(before, after)) or "(no knob change)"


_PARTS = re.compile(r" (?=(?:Why|Change|Predicted|Risk): |Measured by |Not benchmarked: )")
_HEAD = re.compile(r"^\[(p-[^\]]+)\] (\S+): (.*)$")


def proposals_markdown(run_id: str, narrative: str, notes: list[str]) -> str:
    """The approver's report: a section per proposal (its summary, then why, change, predicted and
    measured impact, risk and rollback as a list), and the deployments left as they are. A narrative
    an LLM wrote, not in the offline form, is kept as it is."""
    out = [f"# Optimization run {run_id}", ""]
    for line in narrative.splitlines():
        head = _HEAD.match(line)
        if head is None:
            out.append(line)
            continue
        proposal_id, key, body = head.groups()
        summary, *parts = _PARTS.split(body)
        out += [f"## {key} (`{proposal_id}`)", "", summary, ""]
        out += [f"- {part}" for part in parts] + [""]
    if notes:
        out += ["## Not proposed", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def open_twin(scenario: str, start: str | None, home: Path) -> tuple[Any, str]:
    """The demo's twin, saved (the workflow opens it again and must find this clock), and a line on
    its clock. A fresh twin starts at ``start`` (``_demo_start``), else at the scenario's own
    ``start:``, else at ``DEMO_CLOCK``; one with saved state under ``home`` goes on from it."""
    from servewise.cluster.sim import SimCluster
    from servewise.cluster.sim_scenario import load_scenario

    declared = load_scenario(scenario).start
    when = _demo_start(start or declared or DEMO_CLOCK)
    cluster = SimCluster.from_scenario(scenario, start=when)
    cluster.save()
    clock = f"clock {cluster.now:%Y-%m-%d %H:%M} UTC"
    if abs(cluster.now_s - when.timestamp()) > cluster.step_s:
        fresh = when.astimezone(UTC)
        clock += f" (its saved state; remove {home / 'sim'} to start at {fresh:%Y-%m-%d %H:%M} UTC)"
    return cluster, clock


def _fleet(cluster: Any) -> None:
    from servewise.perf.catalog import get_catalog

    cat = get_catalog()
    table = Table(title="1. Inference deployments discovered on the twin")
    for col in ("deployment", "model", "GPUs / replica", "replicas", "quant", "$/hour"):
        table.add_column(col, justify="right" if col in ("replicas", "$/hour") else "left")
    total = 0.0
    for dep in cluster.list_deployments():
        c = dep.config
        cost = cat.gpu(c.gpu).price_per_gpu_hour * c.total_gpus
        total += cost
        table.add_row(
            dep.ref.key,
            c.model,
            f"{c.gpus_per_replica}x {c.gpu}",
            str(c.replicas),
            c.quantization.label,
            f"{cost:,.2f}",
        )
    table.caption = f"fleet cost {total:,.2f} $/hour"
    out_console.print(table)


def _findings(cluster: Any) -> None:
    from servewise.telemetry.sim import SimTelemetrySource
    from servewise.tools.analyzing import analyze_fleet

    snapshot = SimTelemetrySource(cluster).snapshot(window="15m")
    analysis = analyze_fleet(cluster, snapshot)
    table = Table(title=f"2. Bottlenecks found in {analysis.deployments} deployments (telemetry window 15m)")
    for col in ("deployment", "severity", "finding", "evidence"):
        table.add_column(col)
    for f in analysis.findings:
        ev = f.evidence[0] if f.evidence else None
        evidence = (
            f"{ev.signal}={ev.value:.3g} (threshold {ev.threshold:.3g})"
            if ev and ev.value is not None and ev.threshold is not None
            else ""
        )
        table.add_row(f.ref.name, f.severity.value, f.summary, evidence)
    out_console.print(table)


def _optimize(scenario: str, home: Path, out: Path) -> str | None:
    from servewise.workflows.runs import WorkflowService
    from servewise.workflows.state import RunOptions

    def progress(run_id: str, line: str) -> None:  # the optimize step's benchmarks take minutes
        err_console.print(f"[dim]{escape(line)}[/dim]", highlight=False, soft_wrap=True)

    with WorkflowService(home=home, llm=None, on_progress=progress) as svc:
        view = svc.start(RunOptions(cluster=f"sim:{scenario}", use_llm=False))
    table = Table(title=f"3. Optimization run {view.run_id}: {view.status}")
    for col in (
        "deployment",
        "change",
        "$/h before",
        "$/h after",
        "p99 TTFT ms",
        "p99 TPOT ms",
        "validated by",
    ):
        table.add_column(col)
    for p in view.proposals:
        impact = p.get("measured") or p["predicted"]
        table.add_row(
            p["ref"]["name"],
            _changes(p["current"], p["proposed"]),
            f"{p['predicted']['cost_per_hour_before']:,.2f}",
            f"{p['predicted']['cost_per_hour_after']:,.2f}",
            "" if impact.get("ttft_p99_ms") is None else f"{impact['ttft_p99_ms']:,.0f}",
            "" if impact.get("tpot_p99_ms") is None else f"{impact['tpot_p99_ms']:,.1f}",
            impact.get("validated_by", ""),
        )
    out_console.print(table)
    for note in view.notes:  # deployments left as they are, and why: as visible as the proposals
        out_console.print(f"not proposed: {note}", markup=False, soft_wrap=True)
    if view.narrative:
        path = out / "proposals.md"
        path.write_text(proposals_markdown(view.run_id, view.narrative, view.notes))
        out_console.print(f"why, evidence, risk and rollback of each proposal: {path}")
    if view.status == "awaiting_approval":
        out_console.print(
            f"Nothing was applied. Approve with: [bold]servewise approve {view.run_id} --as YOUR_NAME[/bold]"
            f"  (or reject: servewise reject {view.run_id} --as YOUR_NAME --reason TEXT)"
        )
    return view.run_id


def _model_vs_measurements(out: Path) -> None:
    from servewise.perf.measurements import read_measurements
    from servewise.perf.plots import plot_predicted_vs_measured
    from servewise.perf.validation import validate

    if not MEASUREMENTS.exists():
        err_console.print(f"skipping: {MEASUREMENTS} not found")
        return
    report = validate(read_measurements(MEASUREMENTS))
    table = Table(title=f"4. Performance model vs {report.counts['predicted']} public measurements (MAPE)")
    for col in ("metric", "fitted rows", "held-out rows"):
        table.add_column(col, justify="right")
    for metric in report.mape:
        cells = [report.mape_by_split[s].get(metric) for s in ("train", "holdout")]
        table.add_row(metric, *("-" if v is None else f"{v:.1f}%" for v in cells))
    out_console.print(table)
    path = plot_predicted_vs_measured(report, out / "predicted_vs_measured.png")
    out_console.print(f"plot: {path}")


def _study(out: Path) -> None:
    from servewise.studies.running import run_study
    from servewise.studies.study_file import load_study

    if not DEMO_STUDY.exists():
        err_console.print(f"skipping the study: {DEMO_STUDY} not found")
        return
    study = load_study(DEMO_STUDY)
    summary = run_study(study, out / "study", workers=1, progress=False)
    findings = (summary.out_dir / "report.md").read_text().split("## Findings", 1)[-1].split("\n## ", 1)[0]
    out_console.print(
        f"5. What-if study '{study.spec.name}': {summary.points} points in {summary.seconds:.1f} s"
    )
    out_console.print(findings.strip(), markup=False)
    out_console.print(f"report with plots: {summary.out_dir / 'report.md'}")


def demo(
    scenario: Annotated[str, typer.Option(help="twin scenario")] = "demo",
    out: Annotated[Path, typer.Option(help="where plots and reports go")] = Path("out/demo"),
    start: Annotated[
        str | None,
        typer.Option(
            help="the twin's clock when it starts fresh (ISO 8601, or 'now'; default: the scenario's"
            f" start:, else {DEMO_CLOCK}), pinned so the demo reads the same wherever and whenever it"
            " runs. A twin with saved state goes on from it."
        ),
    ] = None,
) -> None:
    """Run the whole product on the embedded twin: discover, analyze, propose (approval gate), validate."""
    from servewise.settings import get_settings

    if start is not None:
        _demo_start(start)  # a malformed --start is refused before anything is written
    output_dir(out, "--out")
    home = get_settings().ensure_home()
    cluster, clock = open_twin(scenario, start, home)
    out_console.print(Rule(f"servewise demo: embedded twin '{scenario}', {clock}, state in {home}"))
    _fleet(cluster)
    _findings(cluster)
    _optimize(scenario, home, out)
    _model_vs_measurements(out)
    _study(out)
    out_console.print(Rule("done"))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
