"""How a benchmark's p99 strays run to run with its length: why a confirming run is 10 000 requests.

Run: `.venv/bin/python bench/confirm_length.py [SEED DEPLOYMENT [REPLICAS SEQS TOKENS]]` (about
2 minutes on 2 cores). Takes the optimizer bench's scenario SEED (default 1003) and its DEPLOYMENT
(default svc-0), and simulates its model in bf16 + fp8 KV on one L40S (edit ``CANDIDATE`` for
another GPU), one of REPLICAS (default 1) at SEQS x TOKENS (default 128 x 16384), at the twin's
hidden true efficiency, at its share of the peak + headroom load, 24 runs per length (the
simulator alone: the twin adds 3 % per-run noise on top, which does not shrink with length).
Prints, per run length, the TPOT and TTFT p99s' mean over the runs and their coefficient of
variation, and how many runs left requests undone.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from servewise.cluster.sim import SimCluster
from servewise.domain import Quantization
from servewise.tools.choosing import share_of
from servewise.tools.optimizer_bench import generate_scenario
from servewise.tools.search_space import SearchPolicy
from servewise.tools.sizing import load_for
from servewise.tools.verifying import _runs

CANDIDATE = {"gpu": "l40s", "tensor_parallel": 1}
QUANT = Quantization(weights="bf16", kv_cache="fp8")
LENGTHS = (1000, 2000, 6000, 10_000, 20_000)
RUNS = 24


def main() -> None:
    if len(sys.argv) not in (1, 3, 6):
        sys.exit("usage: confirm_length.py [SEED DEPLOYMENT [REPLICAS SEQS TOKENS]]")
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1003
    name = sys.argv[2] if len(sys.argv) > 2 else "svc-0"
    sim = SimCluster(generate_scenario(seed), warmup_s=60.0, history_s=300.0)
    dep = next(d for d in sim.list_deployments() if d.ref.name == name)
    load = load_for(dep, None, SearchPolicy())
    replicas, seqs, tokens = (int(a) for a in sys.argv[3:6]) if len(sys.argv) == 6 else (1, 128, 16384)
    knobs = {"replicas": replicas, "max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    cfg = dep.config.with_changes(**knobs, **CANDIDATE).model_copy(update={"quantization": QUANT})
    eff = sim.truth.efficiency(cfg.engine.value, cfg.gpu)
    slo = dep.slo.objectives() if dep.slo else {}
    title = (
        f"bench seed {seed} {name}: 1 of {replicas} x {cfg.model} on {cfg.gpu}, {seqs} x {tokens}, SLO {slo}"
    )
    table = Table(title=title)
    for col in (
        "requests",
        "TPOT p99 mean ms",
        "TPOT cv",
        "TTFT p99 mean ms",
        "TTFT cv",
        "incomplete",
        "seconds",
    ):
        table.add_column(col, justify="right")
    for n in LENGTHS:
        t0 = time.perf_counter()
        done = list(_runs(cfg, share_of(load, dep, cfg), eff, n, 0.0, tuple(range(700, 700 + RUNS))))
        runs = [v for v, _ in done]
        tpot, ttft = (np.array([r[k] for r in runs]) for k in ("tpot_p99_ms", "ttft_p99_ms"))
        table.add_row(
            str(n),
            f"{tpot.mean():.1f}",
            f"{tpot.std(ddof=1) / tpot.mean():.1%}",
            f"{ttft.mean():.0f}",
            f"{ttft.std(ddof=1) / ttft.mean():.1%}",
            str(sum(not complete for _, complete in done)),
            f"{time.perf_counter() - t0:.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
