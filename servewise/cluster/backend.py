"""The seam between servewise and a cluster: one protocol, a real and a simulated implementation.

``servewise.cluster.kubernetes`` talks to a real API server; ``servewise.cluster.sim`` is the
embedded digital twin. Everything above this layer (tools, agents, workflows) sees only this
protocol, so it cannot tell which one it runs on.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from servewise.domain import (
    ApplyResult,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    InferenceDeployment,
    NodePool,
    RolloutStatus,
    ServingConfig,
    UnparsedWorkload,
)


@runtime_checkable
class ClusterBackend(Protocol):
    """Operations servewise needs from a cluster. Errors come from ``servewise.errors``."""

    name: str

    def list_deployments(self) -> list[InferenceDeployment]:
        """Inference servers that could be parsed into a ServingConfig."""
        ...

    def list_unparsed(self) -> list[UnparsedWorkload]:
        """Inference servers whose arguments could not be parsed (never half-guessed)."""
        ...

    def list_node_pools(self) -> list[NodePool]: ...

    def get_deployment(self, ref: DeploymentRef) -> InferenceDeployment: ...

    def apply(
        self, ref: DeploymentRef, config: ServingConfig, *, proposal_id: str, dry_run: bool = False
    ) -> ApplyResult:
        """Change ``ref`` to ``config``. Idempotent per ``proposal_id``; records the previous spec."""
        ...

    def rollout_status(self, ref: DeploymentRef) -> RolloutStatus: ...

    def wait_for_rollout(self, ref: DeploymentRef, *, timeout_s: float = 600) -> RolloutStatus: ...

    def rollback(self, ref: DeploymentRef, *, proposal_id: str | None = None) -> ApplyResult:
        """Restore the spec recorded before ``proposal_id`` (or the last applied proposal)."""
        ...

    def run_benchmark(self, request: BenchmarkRequest) -> BenchmarkResult: ...
