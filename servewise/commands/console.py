"""`servewise console serve`: the operator console (FastAPI + uvicorn)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import typer

from servewise.commands._inputs import from_options
from servewise.commands._output import err_console
from servewise.commands.workflow import OPTION_FLAGS, MaxBenchmarkMinutesOpt

console_app = typer.Typer(help="The operator console: fleet, findings, runs, approvals, audit, chat.")


def resolve_target(
    cluster: str | None, prometheus: str | None, environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """The cluster (default: ``k8s`` inside a pod, else ``sim:demo``) and, for ``k8s``, $PROMETHEUS_URL."""
    cluster = cluster or ("k8s" if environ.get("KUBERNETES_SERVICE_HOST") else "sim:demo")
    if prometheus is None and cluster.split(":")[0] == "k8s":
        prometheus = environ.get("PROMETHEUS_URL") or None
    return cluster, prometheus


@console_app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless behind an auth proxy")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8080,
    cluster: Annotated[
        str | None,
        typer.Option(
            envvar="SERVEWISE_CLUSTER",
            help="sim:SCENARIO | k8s[:CONTEXT] | py:module:factory; default: k8s inside a pod, else sim:demo",
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="Prometheus URL for telemetry (required with k8s; default $PROMETHEUS_URL there)"),
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="no LLM even if one is configured")] = False,
    verify_window: Annotated[float, typer.Option(help="seconds observed after a change")] = 600.0,
    benchmark: Annotated[bool, typer.Option("--benchmark/--no-benchmark", help="benchmark proposals")] = True,
    max_benchmark_minutes: MaxBenchmarkMinutesOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the console (HTML pages at /, JSON API at /api, OpenAPI docs at /docs)."""
    import uvicorn

    from servewise.console import ConsoleConfig, create_app

    cluster, prometheus = resolve_target(cluster, prometheus, os.environ)
    config = from_options(
        ConsoleConfig,
        OPTION_FLAGS,
        cluster=cluster,
        prometheus=prometheus,
        offline=offline,
        verify_window_s=verify_window,
        benchmark=benchmark,
        max_benchmark_minutes=max_benchmark_minutes,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"console listening on {host}: it has no login of its own; put it behind your ingress auth"
        )
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(console_app, name="console")
