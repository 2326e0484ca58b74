"""`servewise analyze`: bottleneck findings for a fleet (JSON or a table), plus a markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from servewise.commands._output import err_console, out_console, output_dir, print_json, writing
from servewise.commands.telemetry import DeploymentLabelOpt, EngineOpt, TimeoutOpt, open_prometheus

if TYPE_CHECKING:
    from servewise.cluster.backend import ClusterBackend
    from servewise.domain import InferenceDeployment, TelemetrySnapshot
    from servewise.tools.analyzing import FleetAnalysis
    from servewise.tools.proposing import DeploymentPlan


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""

    @app.command("analyze")
    def analyze(
        cluster: str = typer.Option(
            "sim:demo", "--cluster", help="sim:SCENARIO | k8s[:CONTEXT] | py:module:factory"
        ),
        prometheus: str | None = typer.Option(
            None, "--prometheus", help="Prometheus URL (required with k8s; default: the twin's telemetry)"
        ),
        window: str = typer.Option("15m", "--window"),
        engine: EngineOpt = "auto",
        deployment_label: DeploymentLabelOpt = None,
        timeout: TimeoutOpt = 10.0,
        json_out: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
        report: Path | None = typer.Option(
            None,
            "--report",
            help="write DIR/report.md here, e.g. out/; with --propose also PNG plots per optimized deployment",
        ),
        propose: bool = typer.Option(
            False, "--propose", help="also optimize deployments with findings (benchmarks)"
        ),
        deployment: list[str] = typer.Option(
            [], "--deployment", "-d", help="analyze only NAMESPACE/NAME (repeatable; default: all)"
        ),
    ) -> None:
        """Run every bottleneck analyzer on every inference deployment."""
        from rich.table import Table

        from servewise.errors import InputError
        from servewise.tools.analyzing import analyze_fleet
        from servewise.tools.reporting import write_report
        from servewise.workflows.environment import open_environment

        given = [f for f, v in (("--engine", engine != "auto"), ("--deployment-label", deployment_label))
                 if v]  # fmt: skip
        if given and not prometheus:  # they say how to read Prometheus; the twin would ignore them
            raise InputError(
                f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only with --prometheus URL",
                field=given[0],
            )
        # read as `telemetry snapshot` reads it (a wrong --engine is refused before anything is opened)
        source = (
            open_prometheus(prometheus, engine=engine, deployment_label=deployment_label, timeout=timeout)
            if prometheus
            else None
        )
        # as `optimize` opens it: a real cluster without --prometheus is an input error, not a crash
        env = open_environment(cluster, prometheus=prometheus)
        if source is not None and isinstance(env.telemetry, type(source)):  # a py: factory's own stays
            env.telemetry = source
        backend = env.cluster
        chosen = _chosen(backend, deployment, cluster) if deployment else None
        if report is not None:
            output_dir(report, "--report")  # an unwritable folder is refused before the analysis
        snapshot = env.telemetry.snapshot(window=window)
        analysis = analyze_fleet(backend, snapshot, deployments=chosen)
        plans = _propose(backend, snapshot, analysis) if propose else []
        if report is not None:
            with writing(report, "--report"):
                path = write_report(analysis, plans, report)
            err_console.print(f"report: {path}")
        if json_out:
            doc = analysis.model_dump(mode="json")
            if propose:
                doc["plans"] = [p.model_dump(mode="json") for p in plans]
            print_json(doc)
            return
        table = Table(title=f"{len(analysis.findings)} findings ({analysis.source}, {analysis.window})")
        for col in ("deployment", "finding", "severity", "summary", "knob"):
            table.add_column(col)
        for f in analysis.findings:
            table.add_row(f.ref.key, f.kind, f.severity.value, f.summary, f.suggested_knob or "")
        out_console.print(table)
        for note in analysis.notes:
            err_console.print(f"[dim]{note}[/dim]")


def _chosen(backend: ClusterBackend, keys: list[str], cluster: str) -> list[InferenceDeployment]:
    """The deployments ``-d`` names, or an error naming the ones there are."""
    from servewise.errors import InputError, UnknownIdError

    known = {d.ref.key: d for d in backend.list_deployments()}
    for key in keys:
        if key not in known and "/" not in key:
            raise InputError(
                f"a deployment is NAMESPACE/NAME as `servewise fleet` lists them (e.g. chat/chat-assistant),"
                f" got {key!r}",
                field="--deployment",
            )
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise UnknownIdError(
            f"no deployment {', '.join(unknown)} on {cluster}; there are {', '.join(sorted(known))}",
            field="--deployment",
        )
    return [known[key] for key in dict.fromkeys(keys)]


def _propose(
    backend: ClusterBackend, snapshot: TelemetrySnapshot, analysis: FleetAnalysis
) -> list[DeploymentPlan]:
    """Optimize each deployment that has a warning or critical finding, with a progress bar."""
    from rich.progress import Progress

    from servewise.errors import ServewiseError
    from servewise.tools.proposing import optimize_deployment

    flagged = {f.ref.key for f in analysis.findings if f.severity.value != "info"}
    deps = [d for d in backend.list_deployments() if d.ref.key in flagged and d.slo is not None]
    plans: list[DeploymentPlan] = []
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("optimizing", total=len(deps))
        for dep in deps:
            progress.update(task, description=f"optimizing {dep.ref.key}")
            kinds = sorted({f.kind for f in analysis.findings if f.ref.key == dep.ref.key})
            try:
                plans.append(
                    optimize_deployment(
                        dep,
                        backend,
                        telemetry=snapshot.for_workload(dep.ref),
                        findings=kinds,
                        on_progress=lambda msg: progress.update(task, description=msg),
                    )
                )
            except ServewiseError as exc:
                err_console.print(f"[yellow]{dep.ref.key}: {exc}[/yellow]")
            progress.advance(task)
    return plans
