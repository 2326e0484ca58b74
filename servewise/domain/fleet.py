"""Cluster-side types shared by the twin and the Kubernetes backend."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, Field, model_validator

from servewise.domain.config import ServingConfig
from servewise.domain.workload import SLO, Workload


class DeploymentRef(BaseModel):
    name: str
    namespace: str = "default"
    kind: Literal["Deployment", "StatefulSet", "InferenceService", "Sim"] = "Deployment"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class NodePool(BaseModel):
    """GPUs of one type in one place; ``free_gpus`` is what is not requested by pods."""

    name: str
    gpu: str
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(ge=0)
    free_gpus: int = Field(ge=0)
    zone: str = ""
    location: Literal["cloud", "edge"] = "cloud"
    price_per_gpu_hour: float | None = Field(default=None, ge=0, description="None: the catalog's price")
    network_latency_ms: float = Field(default=0.0, ge=0, description="added to TTFT for users of this pool")

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


# Where a deployment's users are (a label): an edge pool's zone, or its name when it has none.
SITE_LABEL = "servewise.io/site"


class _Located(Protocol):
    """A pool as NodePool and the twin's scenario pools describe one."""

    @property
    def name(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def location(self) -> Literal["cloud", "edge"]: ...


def edge_site(pool: _Located) -> str | None:
    """The site an edge pool serves (its zone, else its name); None for a cloud pool."""
    return (pool.zone or pool.name) if pool.location == "edge" else None


def serves_site(pool: _Located, site: str | None) -> bool:
    """Whether ``pool`` may serve users at ``site``: a cloud pool any, an edge pool its own site's
    (named by its zone, or by its name)."""
    return pool.location != "edge" or (site is not None and site in (pool.zone or pool.name, pool.name))


class InferenceDeployment(BaseModel):
    """An inference server as discovered: where it is, what it runs, and the load and SLO declared
    for it (the twin's scenario; on a cluster, the workload's servewise.io annotations)."""

    ref: DeploymentRef
    config: ServingConfig
    pool: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    workload: Workload | None = None
    slo: SLO | None = None
    ready_replicas: int | None = None


class UnparsedWorkload(BaseModel):
    name: str
    namespace: str
    reason: str


class ApplyResult(BaseModel):
    ref: DeploymentRef
    proposal_id: str
    dry_run: bool
    changed: bool = Field(description="False when the same proposal was already applied (idempotent)")
    patch: list[dict[str, object]] = Field(default_factory=list, description="RFC 6902 operations")
    previous: ServingConfig | None = None
    message: str = ""


class RolloutStatus(BaseModel):
    ref: DeploymentRef
    done: bool
    desired_replicas: int
    updated_replicas: int
    available_replicas: int
    events: list[str] = Field(default_factory=list)
    failed: bool = False
    reason: str | None = None
    unschedulable: str | None = Field(
        default=None,
        description="a pod that cannot start for want of a node (none coming) or of a volume another node holds",
    )


class BenchmarkRequest(BaseModel):
    ref: DeploymentRef
    config: ServingConfig | None = Field(default=None, description="candidate to test; None = as deployed")
    workload: Workload
    num_requests: int = Field(default=200, ge=1, le=100_000)
    deadline_s: float = Field(
        default=1800,
        gt=0,
        description="seconds the run may take; unset, at least 1.5 x the open loop's sending time + 10 min",
    )

    @model_validator(mode="after")
    def _deadline_fits_the_run(self) -> BenchmarkRequest:
        """A run of 10 000 requests at 0.5 req/s sends for 5.6 h: an unset deadline must not cut it at
        the default 30 minutes (warm-up requests and the tail included in the 1.5 x)."""
        rate = self.workload.arrival_rate_per_s
        if "deadline_s" not in self.model_fields_set and rate:
            self.deadline_s = max(self.deadline_s, 600.0 + 1.5 * self.num_requests / rate)
        return self


class BenchmarkResult(BaseModel):
    ref: DeploymentRef
    config: ServingConfig
    workload: Workload
    completed: int
    failed: int = 0
    throughput_tok_s: float
    request_throughput_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    e2e_p99_ms: float
    started_at: datetime | None = None
    duration_s: float = 0.0
    source: str = Field(default="", description="'sim' or the Job name that produced it")
