"""The simulator and the analytical model against public measurements, row by row.

Run: ``.venv/bin/python bench/sim_validate.py [FILE] [--max-concurrency N] [--metric M]``
(FILE defaults to data/published/measurements.csv). Each measurement row fixes a replica config,
prompt/output lengths and the number of requests in flight; the simulator runs that closed loop
(every client re-sends when its request completes, as AIPerf / benchmark_serving do; a concurrency
of 2000 or more is an offline run with all requests queued at once; online runs send 8 requests per
client and drop the first wave from the statistics) and the analytical model predicts
the same point (``predict``). Printed: a markdown table per row and the MAPE of each predictor per
metric. Rows are grouped so each (config, lengths, concurrency) point is simulated once.

TTFT and TPOT are compared with the simulated per-request means (benchmarks report averages unless
the row says otherwise); throughput is output tokens/s of all the row's GPUs.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from servewise.domain import SimulationResult, Workload
from servewise.errors import ServewiseError
from servewise.perf.analytical import predict
from servewise.perf.measurements import MeasurementRow, read_measurements
from servewise.perf.simulator import simulate_config

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "data" / "published" / "measurements.csv"
OFFLINE_CONCURRENCY = 2000
WAVES = 8  # requests per client in an online run


def simulate_row(row: MeasurementRow) -> SimulationResult:
    assert row.config is not None
    c = row.concurrency
    workload = Workload.fixed(row.input_len, row.output_len, concurrency=c)
    if c >= OFFLINE_CONCURRENCY:  # offline: every request queued at t = 0, all of them measured
        return simulate_config(row.config, workload, num_requests=c)
    # online: drop the first wave (all clients start together), as a benchmark's warm-up would
    return simulate_config(row.config, workload, num_requests=max(WAVES * c, 60), warmup_fraction=1.0 / WAVES)


def sim_value(res: SimulationResult, row: MeasurementRow) -> float:
    if row.metric == "ttft_ms":
        return res.ttft_ms.mean
    if row.metric == "tpot_ms":
        return res.tpot_ms.mean
    return res.throughput_tok_s * row.replicas


def model_value(row: MeasurementRow) -> float:
    assert row.config is not None
    p = predict(row.config, input_len=row.input_len, output_len=row.output_len, concurrency=row.concurrency)
    if row.metric == "ttft_ms":
        return p.ttft_ms
    if row.metric == "tpot_ms":
        return p.tpot_ms
    return p.throughput_tok_s * row.replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    parser.add_argument("--max-concurrency", type=int, default=1024, help="skip rows above (offline runs)")
    parser.add_argument("--metric", choices=["ttft_ms", "tpot_ms", "throughput_tok_s"], action="append")
    args = parser.parse_args()
    metrics = set(args.metric or ["ttft_ms", "tpot_ms", "throughput_tok_s"])
    rows = [
        r
        for r in read_measurements(args.file)
        if r.error is None and r.metric in metrics and r.concurrency <= args.max_concurrency
    ]
    groups: dict[str, list[MeasurementRow]] = defaultdict(list)
    for r in rows:
        assert r.config is not None
        groups[f"{r.config.model_dump_json()}|{r.input_len}|{r.output_len}|{r.concurrency}"].append(r)
    errors: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"sim": [], "model": []})
    print("| line | model | gpu x tp | in/out | conc | metric | measured | simulated | analytical |")
    print("|" + "---|" * 9)
    for members in groups.values():
        try:
            res = simulate_row(members[0])
        except ServewiseError as exc:
            for r in members:
                print(
                    f"| {r.line} | {r.raw.get('model')} | - | - | - | {r.metric} | {r.measured} | error: {exc} | - |"
                )
            continue
        for r in members:
            assert r.config is not None and r.measured is not None and r.metric is not None
            sim = sim_value(res, r)
            try:
                model = model_value(r)
            except ServewiseError:
                model = float("nan")
            for key in (r.metric, f"{r.metric} | {_short(r.source)}"):
                errors[key]["sim"].append(abs(sim - r.measured) / r.measured)
                if not np.isnan(model):
                    errors[key]["model"].append(abs(model - r.measured) / r.measured)
            print(
                f"| {r.line} | {r.config.model} | {r.config.gpu} x{r.config.tensor_parallel} | "
                f"{r.input_len}/{r.output_len} | {r.concurrency} | {r.metric} | {r.measured:,.1f} | "
                f"{sim:,.1f} | {model:,.1f} |"
            )
    print("\n| metric | source | rows | simulator MAPE % | analytical MAPE % |")
    print("|---|---|---|---|---|")
    for key in sorted(errors, key=lambda k: (k.split(" | ")[0], " | " in k, k)):
        e = errors[key]
        metric, _, source = key.partition(" | ")
        sim_mape = 100 * float(np.mean(e["sim"]))
        model_mape = 100 * float(np.mean(e["model"])) if e["model"] else float("nan")
        print(f"| {metric} | {source or 'all'} | {len(e['sim'])} | {sim_mape:.1f} | {model_mape:.1f} |")


def _short(source: str) -> str:
    """A source cell without its revision note, short enough for a table."""
    return source.split(" (")[0].split("@")[0][:60]


if __name__ == "__main__":
    main()
