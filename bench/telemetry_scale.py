"""Telemetry at fleet scale: one fleet snapshot from a real Prometheus, and the twin's memory.

For the `large` scenario (2,096 GPUs) and a 50-deployment slice of it: backfill history into a
local Prometheus (Debian's prometheus/promtool), then time `PrometheusSource.snapshot()` and
count its PromQL queries (it must not grow with the fleet). Then measure the twin's memory with
tracemalloc after one hour of simulated history.

    .venv/bin/python bench/telemetry_scale.py [--minutes 12] [--step 30] [--window 10m]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_scenario import Scenario, load_scenario
from servewise.telemetry.openmetrics import write_history
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer


def fleet(scenario: Scenario, n: int | None) -> Scenario:
    if n is None:
        return scenario
    return scenario.model_copy(
        update={"deployments": scenario.deployments[:n], "name": f"{scenario.name}-{n}"}
    )


def snapshot_bench(
    scenario: Scenario, minutes: float, step_s: float, window: str, workdir: Path
) -> dict[str, float]:
    end = time.time() - 300
    end -= end % step_s
    hours = minutes / 60
    sim = SimCluster(
        scenario, step_s=step_s, start=end - hours * 3600, warmup_s=0, history_s=hours * 3600 + step_s
    )
    out = workdir / f"{scenario.name}.om"
    t0 = time.perf_counter()
    export = write_history(sim, out, hours=hours, step_s=step_s)
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    with PrometheusServer(backfill=[out]) as prom:
        t_backfill = time.perf_counter() - t0
        source = PrometheusSource(prom.url, timeout_s=60)
        at = datetime.fromtimestamp(export.end_s, UTC)
        times, snap = [], None
        for _ in range(5):
            t0 = time.perf_counter()
            snap = source.snapshot(window=window, at=at)
            times.append(time.perf_counter() - t0)
    assert snap is not None
    out.unlink()
    complete = sum(1 for d in snap.deployments if not d.missing)
    return {
        "deployments": len(scenario.deployments),
        "gpus": sum(scenario.serving_config(d).total_gpus for d in scenario.deployments),
        "pods": len(sim.all_pods()),
        "samples": export.samples,
        "export_s": t_export,
        "backfill_start_s": t_backfill,
        "snapshot_median_s": statistics.median(times),
        "snapshot_max_s": max(times),
        "queries": snap.queries,
        "read_back": len(snap.deployments),
        "complete": complete,
    }


def memory_bench(scenario: Scenario) -> dict[str, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    sim = SimCluster(scenario, warmup_s=3600, history_s=3600)  # one hour of 15 s steps in the ring
    elapsed = time.perf_counter() - t0
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "gpus_in_pools": sum(p.total_gpus for p in scenario.pools),
        "gpus_serving": sum(d.serving.total_gpus for d in sim.state.deployments),
        "pods": len(sim.all_pods()),
        "history_mib": sim.history.nbytes() / 2**20,
        "current_mib": current / 2**20,
        "peak_mib": peak / 2**20,
        "simulate_1h_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="history to backfill")
    parser.add_argument("--step", type=float, default=30.0, help="sample interval, seconds")
    parser.add_argument("--window", default="10m", help="snapshot window")
    args = parser.parse_args()
    large = load_scenario("large")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (50, None):
            rows.append(snapshot_bench(fleet(large, n), args.minutes, args.step, args.window, Path(tmp)))
    print(
        f"\nSnapshot from Prometheus ({args.minutes:g} min backfilled at {args.step:g} s, window {args.window})\n"
    )
    print(
        "| deployments | GPUs | pods | samples backfilled | PromQL queries | snapshot median (s) | max (s) | deployments read | complete |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['deployments']:.0f} | {r['gpus']:.0f} | {r['pods']:.0f} | {r['samples']:,.0f} | {r['queries']:.0f} "
            f"| {r['snapshot_median_s']:.3f} | {r['snapshot_max_s']:.3f} | {r['read_back']:.0f} | {r['complete']:.0f} |"
        )
    print(
        "\nexport + backfill time: "
        + ", ".join(
            f"{r['deployments']:.0f} deployments: export {r['export_s']:.1f} s, promtool+start {r['backfill_start_s']:.1f} s"
            for r in rows
        )
    )
    mem = memory_bench(large)
    print("\nTwin memory (tracemalloc) for `large`\n")
    print(
        "| GPUs in pools | GPUs serving | pods | history ring (MiB) | traced now (MiB) | traced peak (MiB) | build + simulate 1 h (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {mem['gpus_in_pools']:.0f} | {mem['gpus_serving']:.0f} | {mem['pods']:.0f} | {mem['history_mib']:.1f} "
        f"| {mem['current_mib']:.1f} | {mem['peak_mib']:.1f} | {mem['simulate_1h_s']:.1f} |"
    )


if __name__ == "__main__":
    main()
