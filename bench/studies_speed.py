"""Study runner speed: points/s per worker, serial vs process pool vs Ray, peak memory, projection.

Run: `.venv/bin/python bench/studies_speed.py` (prints a table and the projection; about 10 minutes on
2 cores). `--quick` runs 10,000 analytical and 200 simulated points instead.

Each (study, backend) runs in a fresh subprocess so peak memory is its own: the driver's max RSS plus
the largest pool worker's (``RUSAGE_CHILDREN``). Ray's workers are children of the raylet, not of the
driver, so for Ray only the driver is counted. Reports are not written (sweep speed only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

GPUS = ["a10g", "l4", "l40s", "a100-40gb", "a100-80gb", "h100-pcie", "h100-sxm", "h200", "mi300x", "b200"]
MODELS = ["llama-3.1-8b", "qwen2.5-7b", "qwen2.5-32b", "llama-3.1-70b", "mixtral-8x7b"]


def analytical_study(n: int) -> dict[str, Any]:
    seqs = [8 * (k + 1) for k in range(25)]
    conc = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    axes: dict[str, list[Any]] = {
        "gpu": GPUS,
        "model": MODELS,
        "weights": ["bf16", "fp8"],
        "tensor_parallel": [1, 2, 4, 8],
        "max_num_seqs": seqs,
        "concurrency": conc,
    }
    sampling = {"method": "grid"} if n == 100_000 else {"method": "random", "n": n}
    return {
        "name": f"bench-analytical-{n}",
        "question": "speed",
        "seed": 1,
        "evaluator": "analytical",
        "axes": axes,
        "workloads": {"w": {"input_len": {"mean": 1024}, "output_len": {"mean": 256}, "concurrency": 32}},
        "sampling": sampling,
    }


def simulated_study(n: int) -> dict[str, Any]:
    return {
        "name": f"bench-simulate-{n}",
        "question": "speed",
        "seed": 1,
        "evaluator": "simulate",
        "axes": {
            "gpu": ["l4", "l40s", "a100-80gb", "h100-sxm", "h200"],
            "model": ["llama-3.1-8b", "qwen2.5-7b"],
            "max_num_seqs": [16, 64, 256],
            "arrival_rate_per_s": [0.5, 1, 2, 4, 8],
        },
        "workloads": {
            "w": {
                "input_len": {"kind": "lognormal", "mean": 800, "std": 600, "max": 8192},
                "output_len": {"kind": "lognormal", "mean": 200, "std": 150, "max": 2048},
                "arrival_rate_per_s": 1,
            }
        },
        "num_requests": 200,
        "slo": {"ttft_p99_ms": 2000},
        "sampling": {"method": "random", "n": n},
    }


def one(kind: str, n: int, backend: str) -> dict[str, Any]:
    """Run one (study, backend) in this process and return its measurements."""
    from servewise.studies.running import run_study
    from servewise.studies.study_file import study_from_dict

    study = study_from_dict(
        analytical_study(n) if kind == "analytical" else simulated_study(n), source="bench"
    )
    with tempfile.TemporaryDirectory() as tmp:
        kwargs: dict[str, Any] = (
            {"serial": True}
            if backend == "serial"
            else ({"workers": 2} if backend == "pool" else {"ray_address": "local", "workers": 2})
        )
        started = time.perf_counter()
        summary = run_study(study, Path(tmp) / "out", progress=False, report=False, **kwargs)
        seconds = time.perf_counter() - started
        parquet = sum(p.stat().st_size for p in (Path(tmp) / "out").glob("results.parquet"))
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "study": kind,
        "points": summary.points,
        "failed": summary.failed,
        "backend": backend,
        "workers": summary.workers,
        "seconds": seconds,
        "points_per_s": summary.points / seconds,
        "startup_s": summary.startup_seconds,
        "steady_points_per_s": summary.points / max(seconds - summary.startup_seconds, 1e-9),
        "peak_mib": (self_kb + (child_kb if backend == "pool" else 0)) / 1024,
        "parquet_bytes_per_point": parquet / summary.points,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("KIND", "N", "BACKEND"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--from-json", metavar="FILE", help="print the table and projection of a saved --json run"
    )
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2])))
        return
    if args.from_json:
        text = Path(args.from_json).read_text()
        table(json.loads(text[: text.index("\n]") + 2]))
        return
    n_an, n_sim = (10_000, 200) if args.quick else (100_000, 2_000)
    results = []
    for kind, n in (("analytical", n_an), ("simulate", n_sim)):
        for backend in ("serial", "pool", "ray"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", kind, str(n), backend],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"done: {kind} {backend}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    table(results)


def table(results: list[dict[str, Any]]) -> None:
    print(
        "| study | points | failed | backend | workers | seconds (start-up) | points/s | "
        "points/s after start-up | per worker | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['study']} | {r['points']:,} | {r['failed']:,} | {r['backend']} | {r['workers']} | "
            f"{r['seconds']:.1f} ({r['startup_s']:.1f}) | {r['points_per_s']:,.0f} | {r['steady_points_per_s']:,.0f} | "
            f"{r['steady_points_per_s'] / r['workers']:,.0f} | "
            f"{r['peak_mib']:,.0f} |"
        )
    projection(results)


def driver_ingest_rate(n_chunks: int = 20) -> tuple[float, float]:
    """Rows/s the driver can take in (unpickle a 2,000-row chunk + write its Parquet part), bytes/row."""
    import pickle

    from servewise.studies.evaluating import evaluate_chunk
    from servewise.studies.sampling import make_space, sample_codes
    from servewise.studies.storing import ResultStore
    from servewise.studies.study_file import study_from_dict

    study = study_from_dict(analytical_study(10_000), source="bench")
    space, codes = make_space(study), sample_codes(study)
    rows = evaluate_chunk(study, [(i, space.point(codes[i])) for i in range(2000)])
    blob = pickle.dumps(rows)
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(tmp, "bench", "bench")
        started = time.perf_counter()
        for k in range(n_chunks):
            chunk = pickle.loads(blob)
            store.write([{**r, "index": r["index"] + 2000 * k} for r in chunk])
        seconds = time.perf_counter() - started
    return 2000 * n_chunks / seconds, len(blob) / 2000


def projection(results: list[dict[str, Any]]) -> None:
    """10 million points on a Ray cluster of N nodes, from the measured per-worker rates."""
    cores, total = 16, 10_000_000
    ingest, row_bytes = driver_ingest_rate()
    print(
        f"\nDriver ingest (unpickle + write a Parquet part, one core): {ingest:,.0f} rows/s; "
        f"{row_bytes:.0f} bytes/row on the wire. Every row passes through the driver, so a study can not "
        f"finish faster than {total:,} / {ingest:,.0f} = {total / ingest:,.0f} s whatever the cluster size."
    )
    print(f"\nProjection: {total:,} points on a Ray cluster of N nodes with {cores} worker cores each")
    for kind in ("analytical", "simulate"):
        serial = next(r for r in results if r["study"] == kind and r["backend"] == "serial")
        ray = next(r for r in results if r["study"] == kind and r["backend"] == "ray")
        rate = serial["steady_points_per_s"]  # one core
        eff = min(1.0, ray["steady_points_per_s"] / (ray["workers"] * rate))  # Ray scaling measured here
        size = serial["parquet_bytes_per_point"] * total / 1e9
        print(
            f"- {kind}: {rate:,.0f} points/s on one core; Ray on {ray['workers']} local workers ran "
            f"{ray['steady_points_per_s']:,.0f} points/s after a {ray['startup_s']:.0f} s start = {eff:.0%} of "
            f"{ray['workers']} x one core (both cores are shared with the driver and other work here). "
            f"Results: {serial['parquet_bytes_per_point']:.0f} bytes/point -> {size:.2f} GB of Parquet."
        )
        for nodes in (1, 4, 16, 64):
            workers_rate = nodes * cores * rate * eff
            secs = total / min(workers_rate, ingest)
            bound = "the workers" if workers_rate < ingest else "the driver's ingest"
            print(
                f"  N={nodes:>2}: {total:,} / min({nodes} x {cores} x {rate:,.0f} x {eff:.2f}, {ingest:,.0f}) = "
                f"{secs:,.0f} s ({secs / 3600:.2f} h) + start-up; bound by {bound}"
            )


if __name__ == "__main__":
    main()
