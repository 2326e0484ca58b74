"""`servewise analyze`: bottleneck findings for a fleet (JSON or a table), plus a markdown report."""

from __future__ import annotations

from pathlib import Path

import typer

from servewise.commands._output import err_console, out_console, print_json


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""

    @app.command("analyze")
    def analyze(
        cluster: str = typer.Option("sim:demo", "--cluster", help="sim:SCENARIO or k8s[:CONTEXT]"),
        prometheus: str | None = typer.Option(None, "--prometheus", help="Prometheus URL (default: the twin)"),
        window: str = typer.Option("15m", "--window"),
        json_out: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
        report: Path | None = typer.Option(None, "--report", help="write a markdown report (+plots) here, e.g. out/"),
    ) -> None:
        """Run every bottleneck analyzer on every inference deployment."""
        from rich.table import Table

        from servewise.cluster.factory import open_cluster
        from servewise.tools.analyzing import analyze_fleet
        from servewise.tools.reporting import write_report

        from servewise.telemetry.source import TelemetrySource

        backend = open_cluster(cluster)
        source: TelemetrySource
        if prometheus:
            from servewise.telemetry.prometheus import PrometheusSource

            source = PrometheusSource(prometheus)
        else:
            from servewise.telemetry.sim import SimTelemetrySource

            source = SimTelemetrySource(backend)  # type: ignore[arg-type]
        analysis = analyze_fleet(backend, source.snapshot(window=window))
        if report is not None:
            path = write_report(analysis, [], report)
            err_console.print(f"report: {path}")
        if json_out:
            print_json(analysis)
            return
        table = Table(title=f"{len(analysis.findings)} findings ({analysis.source}, {analysis.window})")
        for col in ("deployment", "finding", "severity", "summary", "knob"):
            table.add_column(col)
        for f in analysis.findings:
            table.add_row(f.ref.key, f.kind, f.severity.value, f.summary, f.suggested_knob or "")
        out_console.print(table)
        for note in analysis.notes:
            err_console.print(f"[dim]{note}[/dim]")
