"""`servewise sim ...`: the embedded cluster twin (scenarios, live /metrics, OpenMetrics history)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from servewise.commands._output import err_console, out_console, output_file, print_json, writing

sim_app = typer.Typer(
    help="The embedded cluster twin: scenarios, metrics exporter, history.", no_args_is_help=True
)

Scenario = Annotated[str, typer.Option("--scenario", "-s", help="shipped scenario name or a YAML path")]
Seed = Annotated[int | None, typer.Option("--seed", help="override the scenario's seed")]
Json = Annotated[bool, typer.Option("--json", help="one JSON document on stdout")]


def _seconds(text: str, field: str) -> float:
    from servewise.errors import InputError
    from servewise.telemetry.promql import window_seconds

    try:
        return window_seconds(text) if not text.replace(".", "", 1).isdigit() else float(text)
    except InputError:
        raise InputError(
            f"expected a duration like 15s, 1m or a number of seconds, got {text!r}", field=field
        ) from None


@sim_app.command("scenarios")
def scenarios(json_out: Json = False) -> None:
    """List the shipped scenarios."""
    from servewise.cluster.sim_scenario import load_scenario, scenario_names

    rows = []
    for name in scenario_names():
        sc = load_scenario(name)
        rows.append(
            {
                "name": name,
                "description": sc.description,
                "deployments": len(sc.deployments),
                "gpus": sum(p.total_gpus for p in sc.pools),
                "pools": len(sc.pools),
            }
        )
    if json_out:
        print_json({"scenarios": rows})
        return
    table = Table("scenario", "deployments", "GPUs", "pools", "description")
    for r in rows:
        table.add_row(
            str(r["name"]), str(r["deployments"]), str(r["gpus"]), str(r["pools"]), str(r["description"])
        )
    out_console.print(table)


@sim_app.command("status")
def status(scenario: Scenario = "demo", seed: Seed = None, json_out: Json = False) -> None:
    """Deployments and node pools of the twin (state under $SERVEWISE_HOME/sim)."""
    from servewise.cluster.sim import SimCluster

    sim = SimCluster.from_scenario(scenario, seed)
    deps = sim.list_deployments()
    pools = sim.list_node_pools()
    if json_out:
        print_json(
            {
                "scenario": sim.scenario.name,
                "time": sim.now.isoformat(),
                "deployments": [d.model_dump(mode="json") for d in deps],
                "node_pools": [p.model_dump(mode="json") for p in pools],
                "rollouts": [sim.rollout_status(d.ref).model_dump(mode="json") for d in deps],
            }
        )
        return
    err_console.print(f"twin '{sim.scenario.name}' at {sim.now.isoformat()}")
    table = Table("deployment", "model", "gpu", "tp", "replicas", "pool", "rate/s (peak)")
    for d in deps:
        c = d.config
        rate = d.workload.arrival_rate_per_s if d.workload else None
        table.add_row(
            d.ref.key, c.model, c.gpu, str(c.tensor_parallel), str(c.replicas), d.pool or "", f"{rate:.3g}"
        )
    out_console.print(table)


@sim_app.command("advance")
def advance(
    seconds: Annotated[str, typer.Argument(help="how far to move the twin's clock: 90, 15m, 2h")],
    scenario: Scenario = "demo",
    seed: Seed = None,
) -> None:
    """Move the persisted twin's clock forward (rollouts complete, traffic follows the day)."""
    from servewise.cluster.sim import SimCluster

    sim = SimCluster.from_scenario(scenario, seed)
    sim.advance(_seconds(seconds, "SECONDS"))
    err_console.print(f"twin '{sim.scenario.name}' now at {sim.now.isoformat()}")


@sim_app.command("reset")
def reset(scenario: Scenario = "demo", seed: Seed = None) -> None:
    """Forget the persisted state of a scenario (applied changes, clock)."""
    from servewise.cluster.sim_scenario import load_scenario
    from servewise.cluster.sim_state import state_file
    from servewise.settings import get_settings

    sc = load_scenario(scenario)
    path = state_file(get_settings().home / "sim", sc.name, sc.seed if seed is None else seed)
    existed = path.exists()
    path.unlink(missing_ok=True)
    err_console.print(f"{'removed' if existed else 'no state at'} {path}")


@sim_app.command("serve-metrics")
def serve_metrics(
    scenario: Scenario = "demo",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port for /metrics")] = 9400,
    addr: Annotated[str, typer.Option("--addr", help="listen address")] = "127.0.0.1",
    speed: Annotated[float, typer.Option("--speed", help="twin seconds per real second")] = 1.0,
    step: Annotated[str, typer.Option("--step", help="twin step (finer = smoother counters)")] = "1s",
    duration: Annotated[
        float | None, typer.Option("--duration", help="stop after this many real seconds")
    ] = None,
    seed: Seed = None,
) -> None:
    """Serve the twin's vLLM, DCGM and kube-state-metrics series on /metrics, advancing in real time."""
    import time

    from servewise.cluster.sim import SimCluster
    from servewise.errors import InputError
    from servewise.telemetry.exporter import serve_metrics as serve

    if speed <= 0:
        raise InputError("speed must be positive", field="--speed")
    step_s = _seconds(step, "--step")
    sim = SimCluster.from_scenario(
        scenario, seed, ephemeral=True, step_s=step_s, start=time.time(), warmup_s=60
    )

    def listening(bound: int) -> None:
        err_console.print(
            f"serving the twin of {sim.scenario.name} on http://{addr}:{bound}/metrics (x{speed:g} real time; "
            "scrape it with honor_labels: true; Ctrl-C stops)",
            markup=False,
            soft_wrap=True,
        )

    try:
        serve(sim, port=port, addr=addr, speed=speed, duration_s=duration, on_listening=listening)
    except KeyboardInterrupt:
        err_console.print("stopped")


@sim_app.command("export-history")
def export_history(
    out: Annotated[Path, typer.Option("--out", "-o", help="OpenMetrics file to write")],
    scenario: Scenario = "demo",
    hours: Annotated[float, typer.Option("--hours", help="span of history")] = 2.0,
    step: Annotated[str, typer.Option("--step", help="sample interval, e.g. 15s")] = "15s",
    end: Annotated[
        str | None, typer.Option("--end", help="ISO time the history ends at (default now)")
    ] = None,
    seed: Seed = None,
    json_out: Json = False,
) -> None:
    """Write OpenMetrics history for `promtool tsdb create-blocks-from openmetrics FILE DIR`."""
    from servewise.errors import InputError
    from servewise.telemetry.openmetrics import history_twin, write_history

    step_s = _seconds(step, "--step")
    end_s = None
    if end:
        try:
            end_s = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InputError(f"not an ISO time: {end!r}", field="--end") from None
    output_file(out, "--out")  # refused before the history is made, not after
    sim = history_twin(scenario, hours=hours, step_s=step_s, end_s=end_s, seed=seed)
    with writing(out, "--out"):
        res = write_history(sim, out, hours=hours, step_s=step_s)
    doc = {
        "path": str(res.path),
        "start": datetime.fromtimestamp(res.start_s).astimezone().isoformat(),
        "end": datetime.fromtimestamp(res.end_s).astimezone().isoformat(),
        "start_s": res.start_s,
        "end_s": res.end_s,
        "steps": res.steps,
        "samples": res.samples,
        "families": res.families,
    }
    if json_out:
        print_json(doc)
    else:
        err_console.print(
            f"wrote {res.samples} samples ({res.families} families, {res.steps} steps) to {out}"
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(sim_app, name="sim")
