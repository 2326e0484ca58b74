"""The benchmark tool: run a load test of a (candidate) configuration on the cluster."""

from __future__ import annotations

from pydantic import BaseModel, Field

from servewise.domain import BenchmarkRequest, BenchmarkResult, ServingConfig, Workload
from servewise.tools.analyzing import find_deployment
from servewise.tools.context import current_context
from servewise.tools.registry import registry


class RunBenchmarkInput(BaseModel):
    name: str = Field(description="deployment whose load and namespace the benchmark uses")
    namespace: str = "default"
    config: ServingConfig | None = Field(default=None, description="candidate config (None = as deployed)")
    workload: Workload | None = Field(
        default=None, description="load for ONE replica (None = declared share)"
    )
    num_requests: int = Field(
        default=1000, ge=1, le=100_000, description="measured requests (a p99 needs ~1000)"
    )


@registry.tool()
def run_benchmark(args: RunBenchmarkInput) -> BenchmarkResult:
    """Benchmark one replica of a configuration (a Job on the cluster, or the twin); measures p50/p99."""
    cluster = current_context().cluster
    dep = find_deployment(cluster, args.name, args.namespace)
    config = args.config or dep.config
    workload = args.workload
    if workload is None:
        if dep.workload is None or dep.workload.arrival_rate_per_s is None:
            raise ValueError(f"deployment {dep.ref.key} has no declared load; pass a workload")
        share = dep.workload.arrival_rate_per_s / max(config.replicas, 1)
        workload = dep.workload.model_copy(update={"arrival_rate_per_s": share})
    return cluster.run_benchmark(
        BenchmarkRequest(ref=dep.ref, config=config, workload=workload, num_requests=args.num_requests)
    )
