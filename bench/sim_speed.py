"""Speed of the discrete-event simulator: simulated requests per wall-clock second on one core.

Run: ``.venv/bin/python bench/sim_speed.py`` (``--requests N``, ``--repeat R``). Prints a markdown
table: each row simulates N requests of one scenario with the analytical step cost of the catalog
replica (``simulate_config``) and reports the best wall time of R runs.

The public ``vidur`` simulator (0.0.26) is the natural peer, but its execution-time predictor
downloads profiling data (``project-vajra/...`` datasets) from the Hugging Face hub at run time
(``huggingface_hub.snapshot_download`` in ``sklearn_execution_time_predictor.py``), so it cannot run
on a machine without outside network; the table says so instead of inventing a number.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: no BLAS threads (numpy ops here are tiny anyway)

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from servewise.domain import LengthDistribution, ServingConfig, Workload  # noqa: E402
from servewise.perf.simulator import replica_setup, simulate_config, simulate_trace  # noqa: E402

H100_8B = ServingConfig(model="llama-3.1-8b", gpu="h100-sxm")
SHAREGPT_LIKE = Workload(
    input_len=LengthDistribution(kind="lognormal", mean=1024, std=900, max=16000),
    output_len=LengthDistribution(kind="lognormal", mean=256, std=250, max=4000),
    arrival_rate_per_s=8.0,
    prefix_share=0.3,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    config: ServingConfig
    workload: Workload


SCENARIOS = [
    Scenario(
        "8b/h100, 1k in/256 out, Poisson 5 req/s (half load)", H100_8B, Workload.fixed(1024, 256, rate=5.0)
    ),
    Scenario(
        "8b/h100, 1k/256, Poisson 10 req/s (near capacity)", H100_8B, Workload.fixed(1024, 256, rate=10.0)
    ),
    Scenario("8b/h100, 1k/256, Poisson 20 req/s (overload)", H100_8B, Workload.fixed(1024, 256, rate=20.0)),
    Scenario("8b/h100, 1k/256, closed loop, 64 clients", H100_8B, Workload.fixed(1024, 256, concurrency=64)),
    Scenario("8b/h100, lognormal lengths, 8 req/s, prefix 0.3", H100_8B, SHAREGPT_LIKE),
    Scenario(
        "8b/h100 at 30% memory (KV-bound, preempts), 1k/256, 11 req/s",
        H100_8B.with_changes(gpu_memory_utilization=0.30),
        Workload.fixed(1024, 256, rate=11.0),
    ),
    Scenario(
        "70b/4xh100, 1k/256, Poisson 4 req/s",
        ServingConfig(model="llama-3.1-70b", gpu="h100-sxm", tensor_parallel=4),
        Workload.fixed(1024, 256, rate=4.0),
    ),
]


def measure(s: Scenario, requests: int, repeat: int) -> dict[str, object]:
    """Best-of-``repeat`` times of ``simulate_trace`` (request sampling + event loop; catalog setup excluded)."""
    setup = replica_setup(s.config, s.workload)
    best = best_cpu = float("inf")
    trace = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        trace = simulate_trace(
            s.config,
            s.workload,
            cost=setup.cost,
            kv_capacity_tokens=setup.kv_capacity_tokens,
            num_requests=requests,
        )
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    assert trace is not None
    res = simulate_config(s.config, s.workload, num_requests=requests)
    return {
        "scenario": s.name,
        "requests": requests,
        "wall_s": best,
        "cpu_s": best_cpu,
        "sim_req_per_s": requests / best,
        "sim_req_per_cpu_s": requests / best_cpu,
        "engine_steps": trace.steps,
        "loop_events": trace.events,
        "preemptions": trace.preemptions,
        "ttft_p99_ms": res.ttft_ms.p99,
        "tpot_p50_ms": res.tpot_ms.p50,
    }


def compare_with_analytical(requests: int) -> None:
    """Simulated vs analytical steady state of the same replica (open loop, then closed loop)."""
    from servewise.perf.analytical import predict, predict_load

    print(
        "\n| load | sim TTFT p50 ms | model TTFT ms | sim TPOT p50 ms | model TPOT ms | sim tok/s | model tok/s |"
    )
    print("|" + "---|" * 7)
    for rate in (2.0, 5.0, 8.0, 10.0):
        res = simulate_config(
            H100_8B, Workload.fixed(1024, 256, rate=rate), num_requests=requests, warmup_fraction=0.1
        )
        lp = predict_load(H100_8B, input_len=1024, output_len=256, arrival_rate_per_s=rate)
        print(
            f"| Poisson {rate:g} req/s | {res.ttft_ms.p50:.0f} | {lp.ttft_ms:.0f} | {res.tpot_ms.p50:.1f} | "
            f"{lp.tpot_ms:.1f} | {res.throughput_tok_s:,.0f} | {lp.throughput_tok_s:,.0f} |"
        )
    for conc in (1, 16, 64, 256):
        wl = Workload.fixed(1024, 256, concurrency=conc)
        res = simulate_config(H100_8B, wl, num_requests=max(requests, 8 * conc), warmup_fraction=0.2)
        pp = predict(H100_8B, input_len=1024, output_len=256, concurrency=conc)
        print(
            f"| {conc} clients | {res.ttft_ms.p50:.0f} | {pp.ttft_ms:.0f} | {res.tpot_ms.p50:.1f} | "
            f"{pp.tpot_ms:.1f} | {res.throughput_tok_s:,.0f} | {pp.throughput_tok_s:,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", action="store_true", help="also print simulator vs analytical model")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"host: {os.cpu_count()} CPUs, 1-minute load average {load:.1f} before the run\n")
    header = (
        "| scenario | requests | wall s | simulated req/s | CPU s | req per CPU s | engine steps | loop events "
        "| preemptions | TTFT p99 ms | TPOT p50 ms |"
    )
    print(header)
    print("|" + "---|" * 11)
    for s in SCENARIOS:
        r = measure(s, args.requests, args.repeat)
        print(
            f"| {r['scenario']} | {r['requests']} | {r['wall_s']:.3f} | {r['sim_req_per_s']:,.0f} | "
            f"{r['cpu_s']:.3f} | {r['sim_req_per_cpu_s']:,.0f} | "
            f"{r['engine_steps']:,} | {r['loop_events']:,} | {r['preemptions']} | {r['ttft_p99_ms']:,.0f} | "
            f"{r['tpot_p50_ms']:.1f} |"
        )
    print(
        "| vidur 0.0.26 (same 8b/h100 1k/256 run) | - | - | not run: fetches profiling data from the "
        "Hugging Face hub at run time | - | - | - | - | - | - | - |"
    )
    if args.compare:
        compare_with_analytical(min(args.requests, 3000))


if __name__ == "__main__":
    main()
