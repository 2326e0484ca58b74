"""Confirming runs near the SLO's edge: what one more run would have told.

Run: `.venv/bin/python bench/confirm_band.py BENCH.json [BENCH.json ...]` with the JSON of
`servewise bench optimizer --json` (about 5 seconds per candidate on one core). For every
confirming run (10 000 requests) servewise made whose worst p99 / objective read in
(``LOW``, ``HIGH``], it re-measures that candidate at the twin's hidden truth: the bench's truth
(mean p99 of its 3 independent 10 000-request runs) and ``DRAWS`` further single runs no method
has seen. Prints, per candidate, servewise's reading, the truth, the single runs' mean, spread and
range; then, for the runs that failed inside the objective (the guard band), how often pooling
the reading with a second run would have passed the guard band and which of them truly break the
SLO (pooled as the mean of the two runs' worst ratios, which is at least the worst ratio of the
two runs' mean p99s: it leans strict where the binding metric changes between runs). This says
whether an edge optimum can be confirmed, or only guessed.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from servewise.cluster.sim import SimCluster
from servewise.domain import BenchmarkRequest, Dtype, ServingConfig
from servewise.errors import ServewiseError
from servewise.tools.choosing import share_of
from servewise.tools.judging import measured_values, requests_ok, worst_ratio
from servewise.tools.optimizer_bench import (
    TRUTH_REPEATS,
    TRUTH_REQUESTS,
    Judge,
    generate_scenario,
    truth_backends,
)
from servewise.tools.search_space import WEIGHT_VARIANTS, SearchPolicy
from servewise.tools.sizing import load_for

LOW, HIGH = 0.88, 1.0  # confirming readings re-measured
DRAWS = 6  # further single runs per candidate
GUARD = SearchPolicy().confirm_margin
# optimizing.describe(): "1x qwen2.5-32b bf16+kv-fp8 on 2xl40s seqs=64 tokens=16384"
DESCRIPTION = re.compile(r"(\d+)x (\S+) (\S+) on (\d+)x(\S+) seqs=(\d+) tokens=(\d+)$")


@dataclass(frozen=True)
class Candidate:
    scenario: str
    deployment: str
    description: str
    pool: str
    reading: float  # servewise's confirming run: worst p99 / objective
    passed: bool
    cost: float
    optimum_cost: float


def parse(base: ServingConfig, description: str) -> ServingConfig:
    match = DESCRIPTION.match(description)
    if match is None:
        raise ValueError(f"not a bench config description: {description!r}")
    replicas, model, quant, tp, gpu, seqs, tokens = match.groups()
    weights, _, kv = quant.partition("+kv-")
    quantization = WEIGHT_VARIANTS[weights].model_copy(update={"kv_cache": Dtype.parse(kv or "bf16")})
    return base.with_changes(
        replicas=int(replicas), model=model, quantization=quantization, tensor_parallel=int(tp), gpu=gpu,
        max_num_seqs=int(seqs), max_num_batched_tokens=int(tokens),
    )  # fmt: skip


def candidates(paths: list[str]) -> list[Candidate]:
    out: dict[tuple[str, str, str], Candidate] = {}
    for path in paths:
        for dep in json.loads(Path(path).read_text())["deployments"]:
            for trial in dep["servewise_trials"]:
                values = trial["measured"]
                reading = max((values[k] / v for k, v in dep["slo"].items() if k in values), default=0.0)
                if trial["confirming"] and LOW < reading <= HIGH:
                    key = (dep["scenario"], dep["deployment"], trial["config"], trial["pool"])
                    out[key] = Candidate(
                        *key, reading, trial["passed"], trial["cost_per_hour"],
                        dep["optimum_cost_per_hour"],
                    )  # fmt: skip
    return sorted(out.values(), key=lambda c: c.reading)


def remeasure(cand: Candidate) -> tuple[float, list[float]]:
    """The bench's truth for ``cand`` and ``DRAWS`` single runs on twins no method has seen."""
    scenario = generate_scenario(int(cand.scenario.rsplit("-", 1)[1]))
    sim = SimCluster(scenario, warmup_s=60.0, history_s=300.0)
    dep = next(d for d in sim.list_deployments() if d.ref.name == cand.deployment)
    network_ms = next(p for p in sim.list_node_pools() if p.name == cand.pool).network_latency_ms
    load = load_for(dep, None, SearchPolicy())
    config = parse(dep.config, cand.description)
    truth = Judge(truth_backends(scenario), dep, load).worst(config, network_ms)
    singles = []
    for twin in truth_backends(scenario, TRUTH_REPEATS + DRAWS)[TRUTH_REPEATS:]:
        request = BenchmarkRequest(
            ref=dep.ref, config=config, workload=share_of(load, dep, config), num_requests=TRUTH_REQUESTS
        )
        try:
            res = twin.run_benchmark(request)
        except ServewiseError:
            singles.append(math.inf)
            continue
        ok = requests_ok(res)
        singles.append(worst_ratio(dep.slo, measured_values(res, network_ms)) if ok else math.inf)
    return truth, singles


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: confirm_band.py BENCH.json [BENCH.json ...]")
    table = Table(title=f"confirming runs read in ({LOW}, {HIGH}] of the objective, re-measured")
    for col in ("scenario", "deployment", "config", "$/h (optimum)", "read", "verdict", "truth",
                f"{DRAWS} runs: mean", "cv", "min-max"):  # fmt: skip
        table.add_column(col)
    band: list[tuple[Candidate, float, list[float]]] = []
    for cand in candidates(sys.argv[1:]):
        truth, singles = remeasure(cand)
        finite = [s for s in singles if math.isfinite(s)]
        mean = statistics.fmean(finite) if finite else math.inf
        cv = statistics.stdev(finite) / mean if len(finite) > 1 else math.nan
        table.add_row(
            cand.scenario, cand.deployment, cand.description, f"{cand.cost} ({cand.optimum_cost})",
            f"{cand.reading:.3f}", "pass" if cand.passed else "fail", f"{truth:.3f}", f"{mean:.3f}",
            f"{cv:.3f}", f"{min(singles):.3f}-{max(singles):.3f}",
        )  # fmt: skip
        if not cand.passed and cand.reading > GUARD:
            band.append((cand, truth, singles))
    console = Console()
    console.print(table)
    if not band:
        console.print(f"no confirming run failed inside the objective above the {GUARD} guard band")
        return
    breaking = [b for b in band if b[1] > 1.0]
    pooled = {
        id(c): sum((c.reading + s) / 2 <= GUARD for s in singles) / len(singles) for c, _, singles in band
    }
    cheaper = [b for b in band if b[1] <= 1.0 and b[0].cost <= b[0].optimum_cost]
    console.print(
        f"{len(band)} failed inside the objective above the {GUARD} guard band: {len(breaking)} truly break"
        f" the SLO (truth > 1). Pooled with one more run, the mean reading passes the guard band with"
        f" probability {statistics.fmean(pooled.values()):.2f} on average;"
        f" {sum(pooled[id(c)] for c, _, _ in cheaper):.2f} expected passes among the {len(cheaper)}"
        f" that truly pass at or below the optimum's cost, {sum(pooled[id(c)] for c, _, _ in breaking):.2f}"
        f" among those that break it."
    )


if __name__ == "__main__":
    main()
