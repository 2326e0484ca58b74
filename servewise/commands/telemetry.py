"""`servewise telemetry ...`: fleet telemetry snapshots from the twin or a real Prometheus."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from servewise.commands._output import err_console, out_console, print_json
from servewise.domain.histograms import beyond_last_bucket

if TYPE_CHECKING:
    from servewise.telemetry.prometheus import PrometheusSource

# How a Prometheus is read, shared by every command that takes --prometheus (`telemetry snapshot`,
# `analyze`): one definition, so the options and their help never drift apart.
EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="Prometheus metric names: auto (every engine found), vllm, tgi or sglang"),
]
DeploymentLabelOpt = Annotated[
    str | None,
    typer.Option(
        "--deployment-label",
        help="pod label naming the deployment, where kube-state-metrics does not map pods (Prometheus only)",
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="seconds per Prometheus query")]


def open_prometheus(
    url: str, *, engine: str = "auto", deployment_label: str | None = None, timeout: float = 10.0
) -> PrometheusSource:
    """The ``PrometheusSource`` the options above describe; a wrong value names its option."""
    from servewise.errors import InputError
    from servewise.telemetry.names import DEFAULT_LABELS, ENGINE_NAMES, LabelMap
    from servewise.telemetry.prometheus import PrometheusSource

    if engine.lower() not in (*ENGINE_NAMES, "auto"):
        raise InputError(
            f"unknown engine {engine!r}; use auto or one of {sorted(ENGINE_NAMES)}", field="--engine"
        )
    labels = LabelMap(deployment=deployment_label) if deployment_label else DEFAULT_LABELS
    return PrometheusSource(url, names=ENGINE_NAMES.get(engine.lower()), label_map=labels, timeout_s=timeout)


telemetry_app = typer.Typer(help="Read fleet telemetry (twin or Prometheus).", no_args_is_help=True)

_COLUMNS = (
    ("requests_running", "running", "{:.1f}"),
    ("requests_waiting", "waiting", "{:.1f}"),
    ("kv_cache_usage", "kv", "{:.0%}"),
    ("request_rate_per_s", "req/s", "{:.2f}"),
    ("ttft_p99_ms", "ttft p99 ms", "{:.0f}"),
    ("itl_p99_ms", "itl p99 ms", "{:.1f}"),
    ("preemptions_per_s", "preempt/s", "{:.2f}"),
    ("gpu_utilization", "gpu util", "{:.0%}"),
)


@telemetry_app.command("snapshot")
def snapshot(
    source: Annotated[str | None, typer.Option("--source", help="sim:SCENARIO (the embedded twin)")] = None,
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus base URL")] = None,
    window: Annotated[str, typer.Option("--window", help="PromQL duration the signals cover")] = "15m",
    engine: EngineOpt = "auto",
    deployment_label: DeploymentLabelOpt = None,
    at: Annotated[
        str | None, typer.Option("--at", help="ISO evaluation time (Prometheus only; default now)")
    ] = None,
    timeout: TimeoutOpt = 10.0,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Signals per deployment over a window; missing series are listed, never zeroed."""
    from servewise.errors import InputError

    if (source is None) == (prometheus is None):
        raise InputError("give exactly one of --source sim:SCENARIO or --prometheus URL", field="--source")
    if prometheus:
        src = open_prometheus(prometheus, engine=engine, deployment_label=deployment_label, timeout=timeout)
        when = None
        if at:
            try:
                when = datetime.fromisoformat(at.replace("Z", "+00:00"))
            except ValueError:
                raise InputError(f"not an ISO time: {at!r}", field="--at") from None
        snap = src.snapshot(window=window, at=when)
    else:
        assert source is not None
        kind, _, scenario = source.partition(":")
        if kind.strip().lower() != "sim":
            raise InputError(
                f"unknown source {source!r}; use sim:SCENARIO or --prometheus URL", field="--source"
            )
        from servewise.cluster.sim import SimCluster
        from servewise.telemetry.sim import SimTelemetrySource

        snap = SimTelemetrySource(SimCluster.from_scenario(scenario or "demo")).snapshot(window=window)
    if json_out:
        print_json(snap)
        return
    err_console.print(
        f"{snap.source} at {snap.taken_at.isoformat()} over {snap.window} ({snap.queries} queries)"
    )
    table = Table("deployment", "engine", "replicas", *(c[1] for c in _COLUMNS), "missing")
    for d in snap.deployments:
        cells = [
            "-" if s not in d.signals
            else ">= " + fmt.format(d.signals[s]) if beyond_last_bucket(d.engine, s, d.signals[s])
            else fmt.format(d.signals[s])
            for s, _, fmt in _COLUMNS
        ]  # fmt: skip
        table.add_row(
            f"{d.namespace}/{d.deployment}",
            d.engine or "-",
            str(d.replicas or "-"),
            *cells,
            ", ".join(d.missing),
        )
    out_console.print(table)
    for note in snap.notes:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True)
    for d in snap.deployments:
        for note in d.notes:
            err_console.print(f"{d.namespace}/{d.deployment}: {note}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(telemetry_app, name="telemetry")
