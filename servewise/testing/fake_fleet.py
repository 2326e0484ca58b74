"""A small file-backed fleet for workflow tests: a ClusterBackend, a TelemetrySource and tools.

It is a test double, not the digital twin (``servewise.cluster.sim``): latency follows a toy law,
``ttft_p99 = 150 ms * truth * (load / replicas)^2``, so tests can reason about outcomes exactly.
State lives in one JSON file (default ``$SERVEWISE_HOME/fake-fleet.json``) and every ``apply`` call
is logged there, so a test can check from outside the process that a change was applied once.

Use it as a workflow environment: ``--cluster py:servewise.testing.fake_fleet:environment``.
The optimizer (``optimize_deployment``) proposes dropping one replica where p99 TTFT is under half the SLO; ``truth`` > 1
makes the fleet slower than the optimizer predicts (to trigger verification and rollback).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from servewise.domain import (
    SLO,
    ApplyResult,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    DeploymentTelemetry,
    Evidence,
    Finding,
    Impact,
    InferenceDeployment,
    NodePool,
    Proposal,
    RolloutStatus,
    ServingConfig,
    Severity,
    SignalEvidence,
    TelemetrySnapshot,
    UnparsedWorkload,
    Workload,
)
from servewise.errors import InputError, NotFoundError
from servewise.settings import get_settings
from servewise.tools.context import current_context
from servewise.tools.registry import ToolRegistry

PRICE_PER_GPU_HOUR = 4.0
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeDeployment(BaseModel):
    ref: DeploymentRef
    config: ServingConfig
    load: float = Field(gt=0, description="replicas' worth of work offered")
    slo: SLO
    annotations: dict[str, str] = Field(default_factory=dict)
    fail_rollout: bool = False


class FleetState(BaseModel):
    time_s: float = 0.0
    truth: float = 1.0
    deployments: list[FakeDeployment]
    applied: dict[str, dict[str, Any]] = Field(default_factory=dict)
    apply_calls: list[dict[str, Any]] = Field(default_factory=list)
    rollbacks: list[str] = Field(default_factory=list)


def default_state() -> FleetState:
    def dep(ns: str, name: str, model: str, replicas: int, load: float) -> FakeDeployment:
        cfg = ServingConfig(model=model, gpu="h100-sxm", replicas=replicas)
        return FakeDeployment(
            ref=DeploymentRef(name=name, namespace=ns), config=cfg, load=load, slo=SLO(ttft_p99_ms=1000)
        )

    return FleetState(
        deployments=[
            dep("staging", "chat-8b", "llama-3.1-8b", 4, 1.0),
            dep("production", "chat-70b", "llama-3.1-70b", 2, 1.5),
        ]
    )


def ttft_p99(load: float, replicas: int, truth: float) -> float:
    return 150.0 * truth * (load / max(replicas, 1)) ** 2


def cost_per_hour(cfg: ServingConfig) -> float:
    return cfg.total_gpus * PRICE_PER_GPU_HOUR


class FakeCluster:
    name = "fake"

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            self.save(default_state())

    # -- state ---------------------------------------------------------------------------------
    def load(self) -> FleetState:
        return FleetState.model_validate_json(self.path.read_text())

    def save(self, state: FleetState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        with os.fdopen(fd, "w") as fh:
            fh.write(state.model_dump_json(indent=1))
        os.replace(tmp, self.path)

    def _find(self, state: FleetState, ref: DeploymentRef) -> FakeDeployment:
        for d in state.deployments:
            if d.ref.key == ref.key:
                return d
        raise NotFoundError(f"deployment {ref.key} not found")

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(EPOCH + self.load().time_s, UTC)

    def advance(self, seconds: float) -> None:
        state = self.load()
        state.time_s += seconds
        self.save(state)

    # -- ClusterBackend ------------------------------------------------------------------------
    def list_deployments(self) -> list[InferenceDeployment]:
        state = self.load()
        return [self._view(state, d) for d in state.deployments]

    def _view(self, state: FleetState, d: FakeDeployment) -> InferenceDeployment:
        wl = Workload.fixed(1024, 256, rate=d.load * 10)
        return InferenceDeployment(
            ref=d.ref,
            config=d.config,
            annotations=d.annotations,
            workload=wl,
            slo=d.slo,
            ready_replicas=d.config.replicas,
        )

    def list_unparsed(self) -> list[UnparsedWorkload]:
        return []

    def list_node_pools(self) -> list[NodePool]:
        return [
            NodePool(
                name="h100",
                gpu="h100-sxm",
                nodes=4,
                gpus_per_node=8,
                free_gpus=16,
                price_per_gpu_hour=PRICE_PER_GPU_HOUR,
            )
        ]

    def get_deployment(self, ref: DeploymentRef) -> InferenceDeployment:
        state = self.load()
        return self._view(state, self._find(state, ref))

    def apply(
        self, ref: DeploymentRef, config: ServingConfig, *, proposal_id: str, dry_run: bool = False
    ) -> ApplyResult:
        state = self.load()
        dep = self._find(state, ref)
        patch: list[dict[str, object]] = [
            {"op": "replace", "path": "/spec/replicas", "value": config.replicas}
        ]
        if dry_run:
            state.apply_calls.append({"proposal_id": proposal_id, "dry_run": True, "changed": False})
            self.save(state)
            return ApplyResult(
                ref=ref,
                proposal_id=proposal_id,
                dry_run=True,
                changed=False,
                patch=patch,
                previous=dep.config,
            )
        if proposal_id in state.applied and dep.config == config:  # as the real backends: id and config
            state.apply_calls.append({"proposal_id": proposal_id, "dry_run": False, "changed": False})
            self.save(state)
            return ApplyResult(
                ref=ref, proposal_id=proposal_id, dry_run=False, changed=False, message="already applied"
            )
        state.applied[proposal_id] = {"ref": ref.model_dump(), "previous": dep.config.model_dump(mode="json")}
        previous, dep.config = dep.config, config
        state.apply_calls.append({"proposal_id": proposal_id, "dry_run": False, "changed": True})
        self.save(state)
        return ApplyResult(
            ref=ref, proposal_id=proposal_id, dry_run=False, changed=True, patch=patch, previous=previous
        )

    def rollout_status(self, ref: DeploymentRef) -> RolloutStatus:
        state = self.load()
        d = self._find(state, ref)
        n = d.config.replicas
        if d.fail_rollout:
            return RolloutStatus(
                ref=ref,
                done=False,
                desired_replicas=n,
                updated_replicas=0,
                available_replicas=0,
                failed=True,
                reason="OOMKilled",
                events=["Back-off restarting failed container"],
            )
        return RolloutStatus(ref=ref, done=True, desired_replicas=n, updated_replicas=n, available_replicas=n)

    def wait_for_rollout(self, ref: DeploymentRef, *, timeout_s: float = 600) -> RolloutStatus:
        return self.rollout_status(ref)

    def rollback(self, ref: DeploymentRef, *, proposal_id: str | None = None) -> ApplyResult:
        state = self.load()
        dep = self._find(state, ref)
        if proposal_id is None or proposal_id not in state.applied:
            raise NotFoundError(f"nothing applied to {ref.key} under proposal {proposal_id}")
        dep.config = ServingConfig.model_validate(state.applied[proposal_id]["previous"])
        dep.fail_rollout = False
        state.rollbacks.append(proposal_id)
        self.save(state)
        return ApplyResult(ref=ref, proposal_id=proposal_id, dry_run=False, changed=True, previous=dep.config)

    def run_benchmark(self, request: BenchmarkRequest) -> BenchmarkResult:
        state = self.load()
        d = self._find(state, request.ref)
        cfg = request.config or d.config
        t = ttft_p99(d.load, cfg.replicas, state.truth)
        return BenchmarkResult(
            ref=request.ref,
            config=cfg,
            workload=request.workload,
            completed=request.num_requests,
            throughput_tok_s=1000.0 * cfg.replicas,
            request_throughput_per_s=d.load * 10,
            ttft_p50_ms=t / 2,
            ttft_p99_ms=t,
            tpot_p50_ms=10,
            tpot_p99_ms=20,
            e2e_p99_ms=t + 20 * 256,
            source="fake",
        )


class FakeTelemetry:
    name = "fake"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def snapshot(self, *, window: str = "15m") -> TelemetrySnapshot:
        state = self.cluster.load()
        deps = []
        for d in state.deployments:
            t = ttft_p99(d.load, d.config.replicas, state.truth)
            signals = {"ttft_p99_ms": t, "itl_p99_ms": 20.0, "request_rate_per_s": d.load * 10}
            ev = {k: SignalEvidence(query=f"fake:{k}", window=window) for k in signals}
            deps.append(
                DeploymentTelemetry(
                    deployment=d.ref.name,
                    namespace=d.ref.namespace,
                    replicas=d.config.replicas,
                    signals=signals,
                    evidence=ev,
                )
            )
        return TelemetrySnapshot(source="fake", taken_at=self.cluster.now, window=window, deployments=deps)


class WindowIn(BaseModel):
    window: str = "15m"


class FindingsOut(BaseModel):
    findings: list[Finding]


class OptimizeIn(BaseModel):
    name: str
    namespace: str = "default"
    window: str = "15m"
    benchmark: bool = True


class ScaleIn(BaseModel):
    name: str
    namespace: str = "default"
    replicas: int = Field(ge=0)


class ScaleOut(BaseModel):
    changed: bool


class PlanOut(BaseModel):
    proposal: Proposal | None


class FleetIn(BaseModel):
    namespace: str | None = None


class FleetOut(BaseModel):
    deployments: list[InferenceDeployment]


def make_registry(cluster: FakeCluster, telemetry: FakeTelemetry) -> ToolRegistry:
    reg = ToolRegistry()

    def list_fleet(args: FleetIn) -> FleetOut:
        """Inference deployments with their configs, SLOs and annotations."""
        return FleetOut(
            deployments=[d for d in cluster.list_deployments() if args.namespace in (None, d.ref.namespace)]
        )

    def analyze_fleet(args: WindowIn) -> FindingsOut:
        """Over-provisioned deployments: p99 TTFT under half the SLO."""
        snap = telemetry.snapshot(window=args.window)
        out = []
        for d in cluster.load().deployments:
            t = snap.for_workload(d.ref)
            value = t.get("ttft_p99_ms") if t else None
            if (
                value is not None
                and d.slo.ttft_p99_ms
                and value < d.slo.ttft_p99_ms / 2
                and d.config.replicas > 1
            ):
                out.append(
                    Finding(
                        ref=d.ref,
                        kind="over_provisioned",
                        severity=Severity.WARNING,
                        summary=f"{d.ref.name} p99 TTFT is far under its SLO",
                        evidence=[
                            Evidence(signal="ttft_p99_ms", value=value, threshold=d.slo.ttft_p99_ms / 2)
                        ],
                        suggested_knob="replicas",
                    )
                )
        return FindingsOut(findings=out)

    def optimize_deployment(args: OptimizeIn) -> PlanOut:
        """Drop one replica when p99 TTFT is under half the SLO; benchmark it when asked."""
        state = cluster.load()
        d = cluster._find(state, DeploymentRef(name=args.name, namespace=args.namespace))
        t = ttft_p99(d.load, d.config.replicas, state.truth)
        if not (d.slo.ttft_p99_ms and t < d.slo.ttft_p99_ms / 2 and d.config.replicas > 1):
            return PlanOut(proposal=None)
        new = d.config.with_changes(replicas=d.config.replicas - 1)
        digest = hashlib.sha1(
            json.dumps([d.ref.key, new.model_dump(mode="json")], sort_keys=True).encode()
        ).hexdigest()
        impact = Impact(
            cost_per_hour_before=cost_per_hour(d.config),
            cost_per_hour_after=cost_per_hour(new),
            ttft_p99_ms=ttft_p99(d.load, new.replicas, 1.0),
            tpot_p99_ms=20.0,
            uncertainty_pct=10,
        )
        measured = None
        if args.benchmark:
            wl = cluster.get_deployment(d.ref).workload
            assert wl is not None
            report = current_context().extras.get("on_progress")  # as the real tool reports its runs
            if report is not None:
                report(f"benchmark 1/1: {new.replicas} replicas")
            res = cluster.run_benchmark(BenchmarkRequest(ref=d.ref, config=new, workload=wl))
            measured = impact.model_copy(
                update={
                    "ttft_p99_ms": res.ttft_p99_ms,
                    "tpot_p99_ms": res.tpot_p99_ms,
                    "validated_by": f"benchmark:{res.completed}",
                }
            )
        return PlanOut(
            proposal=Proposal(
                id=f"p-{digest[:10]}",
                ref=d.ref,
                current=d.config,
                proposed=new,
                summary=f"{d.ref.name}: {d.config.replicas} -> {new.replicas} replicas",
                predicted=impact,
                measured=measured,
                risk="low",
            )
        )

    def scale_deployment(args: ScaleIn) -> ScaleOut:
        """Change a deployment's replica count. Mutating: only the workflow's apply node may call it."""
        ref = DeploymentRef(name=args.name, namespace=args.namespace)
        config = cluster.get_deployment(ref).config.with_changes(replicas=args.replicas)
        res = cluster.apply(ref, config, proposal_id=f"manual-{args.name}-{args.replicas}")
        return ScaleOut(changed=res.changed)

    reg.register(list_fleet)
    reg.register(scale_deployment, mutates=True)
    reg.register(analyze_fleet)
    reg.register(optimize_deployment)
    return reg


def environment(
    *, spec: str = "py:servewise.testing.fake_fleet:environment", prometheus: str | None = None
) -> Any:
    """Factory for ``--cluster py:servewise.testing.fake_fleet:environment``."""
    from servewise.workflows.environment import Environment

    if prometheus:
        raise InputError(
            "the fake fleet has its own telemetry; --prometheus is not used", field="--prometheus"
        )
    path = Path(os.environ.get("SERVEWISE_FAKE_FLEET") or get_settings().home / "fake-fleet.json")
    cluster = FakeCluster(path)
    telemetry = FakeTelemetry(cluster)
    return Environment(
        spec=spec, cluster=cluster, telemetry=telemetry, registry=make_registry(cluster, telemetry)
    )
