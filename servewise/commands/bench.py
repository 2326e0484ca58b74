"""`servewise bench optimizer`: the optimizer measured against the twin's truth."""

from __future__ import annotations

import typer

from servewise.commands._output import err_console, out_console, print_json

bench_app = typer.Typer(help="Benchmarks that measure servewise itself.", no_args_is_help=True)


@bench_app.command("optimizer")
def optimizer(
    scenarios: int = typer.Option(3, "--scenarios", min=1, help="generated twin scenarios"),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = typer.Option(False, "--json"),
    max_benchmark_minutes: float | None = typer.Option(
        None, "--max-benchmark-minutes", min=0.1, help="servewise's cap on a confirming run's traffic"
    ),
) -> None:
    """Cost vs the true optimum, SLO violations and benchmark runs per method."""
    from rich.table import Table

    from servewise.tools.optimizer_bench import run
    from servewise.tools.search_space import SearchPolicy

    result = run(
        scenarios,
        seed,
        progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"),
        policy=SearchPolicy(max_benchmark_minutes=max_benchmark_minutes),
    )
    if json_out:
        print_json(result)
        return
    table = Table(
        title=f"optimizer vs true optimum ({scenarios} scenarios, seed {seed}; truth: {result['truth']})"
    )
    for col in (
        "method",
        "cost / optimum (mean)",
        "max",
        "SLO violations",
        "above optimum (optimum at the SLO's edge)",
        "benchmarks/deployment",
        "deployments",
    ):
        table.add_column(col)
    for name, m in result["methods"].items():
        table.add_row(
            name,
            f"{m['cost_ratio_to_optimum']:.3f}",
            f"{m['cost_ratio_max']:.3f}",
            str(m["slo_violations"]),
            f"{m['above_optimum']} ({m['above_optimum_at_slo_edge']})",
            f"{m['benchmarks_per_deployment']:.1f}",
            str(m["deployments"]),
        )
    out_console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(bench_app, name="bench")
