"""`servewise study ...`: what-if sweeps (process pool or Ray) and hardware-aware architecture search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from servewise.commands._output import err_console, out_console, output_dir, print_json, writing

study_app = typer.Typer(
    help="Studies: what-if sweeps and hardware-aware architecture search.", no_args_is_help=True
)


def run_cmd(
    study_file: Annotated[Path, typer.Argument(help="study YAML (see studies/ and docs/studies.md)")],
    workers: Annotated[
        int | None, typer.Option(help="process-pool workers (default: all cores; 1 = in-process)")
    ] = None,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Ray address (host:port, ray://host:10001) or 'local'")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: out/studies/<name>)")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="points per work unit", min=1)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Run a study (resuming into --out if it holds finished points) and write its report."""
    from servewise.errors import InputError
    from servewise.studies.running import run_study
    from servewise.studies.study_file import load_study

    if workers is not None and ray not in (None, "local"):
        raise InputError(
            "--workers sizes a local pool or a local Ray; a Ray cluster has its own", field="--workers"
        )
    if workers is not None and workers < 1:
        raise InputError(f"must be >= 1, got {workers}", field="--workers")
    study = load_study(study_file)
    out_dir = output_dir(out or Path("out") / "studies" / study.spec.name, "--out")
    summary = run_study(
        study, out_dir, workers=workers, ray_address=ray, chunk_size=chunk_size, progress=True
    )
    doc = {
        "study": study.spec.name,
        "out_dir": str(summary.out_dir),
        "report": str(summary.out_dir / "report.md"),
        "points": summary.points,
        "evaluated": summary.evaluated,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "backend": summary.backend,
        "workers": summary.workers,
        "seconds": round(summary.seconds, 3),
    }
    if json_out:
        print_json(doc)
        return
    err_console.print(
        f"{summary.points} points ({summary.skipped} already stored, {summary.failed} failed) on "
        f"{summary.backend} x{summary.workers} in {summary.seconds:.1f} s"
    )
    out_console.print(f"report: {summary.out_dir / 'report.md'}")


def nas_cmd(
    gpu: Annotated[str, typer.Option(help="target GPU (catalog id or alias)")],
    workload: Annotated[
        str, typer.Option(help="INPUT:OUTPUT:CONCURRENCY tokens, e.g. 1024:256:32")
    ] = "1024:256:32",
    params: Annotated[str, typer.Option(help="parameter budget in billions, MIN..MAX, e.g. 6..9")] = "6..9",
    objective: Annotated[str, typer.Option(help="tpot, throughput or cost")] = "tpot",
    weights: Annotated[str, typer.Option(help="weights dtype of the searched shapes")] = "bf16",
    tp: Annotated[int, typer.Option("--tp", help="tensor parallel size")] = 1,
    train_tokens: Annotated[float, typer.Option(help="training tokens D for the scaling-law proxy")] = 15e12,
    generations: Annotated[int, typer.Option(help="NSGA-II generations")] = 40,
    population: Annotated[int, typer.Option(help="NSGA-II population")] = 64,
    seed: Annotated[int, typer.Option(help="search seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="folder for front.csv and front.png")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Search decoder-only shapes within a parameter budget for the Pareto front of quality proxy vs speed."""
    from rich.table import Table

    from servewise.studies.nas import NasTarget, parse_budget, parse_workload, search_front, write_front

    if out is not None:
        output_dir(out, "--out")  # refused before the search, not after it
    target = NasTarget.build(
        gpu=gpu,
        workload=parse_workload(workload),
        budget_b=parse_budget(params),
        objective=objective,
        weights=weights,
        tp=tp,
        train_tokens=train_tokens,
    )
    result = search_front(target, generations=generations, population=population, seed=seed)
    if out is not None:
        with writing(out, "--out"):
            write_front(result, out)
    if json_out:
        print_json(result.to_json())
        return
    table = Table(
        title=f"Pareto front on {target.hw.id}: quality proxy (Chinchilla loss, lower is better) vs {objective}"
    )
    for col in (
        "layers",
        "hidden",
        "heads",
        "kv",
        "ffn",
        "experts",
        "vocab",
        "params B",
        "proxy loss",
        objective,
    ):
        table.add_column(col, justify="right")
    for p in result.front:
        table.add_row(
            str(p.shape.num_layers),
            str(p.shape.hidden_size),
            str(p.shape.num_heads),
            str(p.shape.num_kv_heads),
            str(p.shape.intermediate_size),
            f"{p.shape.num_experts}/{p.shape.experts_per_token}",
            str(p.shape.vocab_size),
            f"{p.params_b:.2f}",
            f"{p.loss:.4f}",
            f"{p.score(objective):.3g}",
        )
    if not result.front:
        reasons = "; ".join(f"{n} x {reason}" for reason, n in result.reasons.most_common(3))
        err_console.print(
            f"no shape fits: all {result.evaluated} evaluated were rejected ({reasons}); widen --params or"
            " use a larger GPU / --tp",
            markup=False,
            soft_wrap=True,
        )
    else:
        out_console.print(table)
    err_console.print(f"{result.evaluated} shapes evaluated, {result.rejected} rejected; {result.proxy_note}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    study_app.command("run")(run_cmd)
    study_app.command("nas")(nas_cmd)
    app.add_typer(study_app, name="study")
