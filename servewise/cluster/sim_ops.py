"""Operations of the twin on its deployments: describe, apply, rollout status, rollback, benchmark."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from servewise.cluster.sim_engine import stable_seed
from servewise.cluster.sim_state import AppliedRecord, DeploymentState, RolloutRecord
from servewise.domain import (
    ApplyResult,
    BenchmarkRequest,
    BenchmarkResult,
    DeploymentRef,
    InferenceDeployment,
    RolloutStatus,
    ServingConfig,
)
from servewise.domain.fleet import SITE_LABEL, edge_site, serves_site
from servewise.errors import DoesNotFitError, InputError, NotFoundError, UnknownIdError

if TYPE_CHECKING:
    from servewise.cluster.sim import SimCluster

OOM_FAIL_AFTER_S = 45.0  # a container that cannot load its weights dies within the first minute
# Pods that cannot be scheduled stay Pending and are retried as GPUs free up (other rollouts finish);
# the Deployment reports ProgressDeadlineExceeded after Kubernetes' default progressDeadlineSeconds.
PROGRESS_DEADLINE_S = 600.0


def ref_of(dep: DeploymentState) -> DeploymentRef:
    return DeploymentRef(name=dep.name, namespace=dep.namespace, kind="Deployment")


def describe(sim: SimCluster, dep: DeploymentState) -> InferenceDeployment:
    spec = sim.specs[dep.key]
    load = spec.workload
    peak = max(load.rate_at(sim.now_s - sim.now_s % 86400 + h * 300.0) for h in range(288))
    workload = load.as_workload().model_copy(update={"arrival_rate_per_s": peak})
    failing = dep.rollout is not None and dep.rollout.failed
    return InferenceDeployment(
        ref=ref_of(dep),
        config=dep.spec,
        pool=dep.rollout.pool if dep.rollout and not failing else dep.serving_pool,
        labels={
            "app.kubernetes.io/name": dep.name,
            "servewise.io/engine": dep.spec.engine.value,
            **spec.labels,
        },
        annotations={
            "servewise.io/base-rate-per-s": f"{load.rate_per_s:g}",
            "servewise.io/current-rate-per-s": f"{load.rate_at(sim.now_s):.4g}",
            "servewise.io/peak-rate-per-s": f"{peak:.4g}",
            "servewise.io/serving-config": dep.serving.model_dump_json(),
        },
        workload=workload,
        slo=spec.slo,
        ready_replicas=dep.serving.replicas,
    )


def vllm_args(config: ServingConfig) -> list[str]:
    """The container arguments a vLLM pod of ``config`` would run with."""
    args = [
        "--model", config.model,
        "--tensor-parallel-size", str(config.tensor_parallel),
        "--max-num-seqs", str(config.max_num_seqs),
        "--max-num-batched-tokens", str(config.max_num_batched_tokens),
        "--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}",
        "--kv-cache-dtype", "auto" if config.quantization.kv_cache.value == "bf16" else config.quantization.kv_cache.value,
    ]  # fmt: skip
    if config.pipeline_parallel > 1:
        args += ["--pipeline-parallel-size", str(config.pipeline_parallel)]
    if config.quantization.weights.value != "bf16":
        args += ["--quantization", config.quantization.method or config.quantization.weights.value]
    if config.max_model_len:
        args += ["--max-model-len", str(config.max_model_len)]
    if not config.enable_prefix_caching:
        args.append("--no-enable-prefix-caching")
    return args


def patch_for(sim: SimCluster, config: ServingConfig, pool: str) -> list[dict[str, object]]:
    return [
        {"op": "replace", "path": "/spec/replicas", "value": config.replicas},
        {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": vllm_args(config)},
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
            "value": str(config.gpus_per_replica),
        },
        {"op": "replace", "path": "/spec/template/spec/nodeSelector", "value": {"servewise.io/pool": pool}},
    ]


def _check_ids(config: ServingConfig) -> None:
    from servewise.perf.catalog import get_catalog

    catalog = get_catalog()
    try:
        catalog.resolve_model(config.model)
        catalog.gpu(config.gpu)
    except UnknownIdError as exc:
        raise InputError(str(exc), field="config") from exc


def _choose_pool(sim: SimCluster, dep: DeploymentState, config: ServingConfig) -> tuple[str, str | None]:
    """The pool for ``config`` and, when none can take it, the scheduling failure message."""
    used = sim.pool_usage()
    mine = {dep.serving_pool: dep.serving.total_gpus}
    current = sim.scenario.pool(dep.serving_pool)
    # an edge pool serves its own site's users only, as the optimizer offers it (domain.fleet.serves_site):
    # the deployment's servewise.io/site label, else the edge pool it runs in (sim:edge's Lyon assistant
    # was proposed for edge-lyon and sent to edge-paris, the first L4 pool with room)
    site = sim.specs[dep.key].labels.get(SITE_LABEL) or edge_site(current)
    candidates = [p for p in sim.scenario.pools if p.gpu == config.gpu and serves_site(p, site)]
    if not candidates:
        return dep.serving_pool, f"0/{_nodes(sim)} nodes are available: no node pool has GPU {config.gpu!r}"
    candidates.sort(
        key=lambda p: (p.name != current.name, p.location != current.location, p.zone != current.zone)
    )
    for p in candidates:
        free = p.total_gpus - used[p.name] + mine.get(p.name, 0)
        if free >= config.total_gpus and config.gpus_per_replica <= p.total_gpus:
            return p.name, None
    p = candidates[0]
    free = p.total_gpus - used[p.name] + mine.get(p.name, 0)
    return p.name, (
        f"0/{p.nodes} nodes are available: Insufficient nvidia.com/gpu (pool {p.name} has {free} free "
        f"GPUs, {config.total_gpus} requested)"
    )


def _nodes(sim: SimCluster) -> int:
    return sum(p.nodes for p in sim.scenario.pools)


def _memory_failure(config: ServingConfig) -> str | None:
    from servewise.perf.catalog import get_catalog
    from servewise.perf.memory import plan_memory

    catalog = get_catalog()
    model, _ = catalog.resolve_model(config.model)
    plan = plan_memory(model, catalog.gpu(config.gpu), config)
    return None if plan.fits else (plan.reason or "does not fit in GPU memory")


def apply(
    sim: SimCluster, dep: DeploymentState, config: ServingConfig, proposal_id: str, *, dry_run: bool
) -> ApplyResult:
    _check_ids(config)
    ref = ref_of(dep)
    done = dep.record(proposal_id)
    if done is not None and done.config == config and not done.rolled_back and dep.spec == config:
        return ApplyResult(
            ref=ref, proposal_id=proposal_id, dry_run=dry_run, changed=False, previous=done.previous,
            patch=patch_for(sim, config, done.pool), message="already applied (same proposal id)",
        )  # fmt: skip
    pool, sched_error = _choose_pool(sim, dep, config)
    patch = patch_for(sim, config, pool)
    if dry_run:
        return ApplyResult(
            ref=ref, proposal_id=proposal_id, dry_run=True, changed=config != dep.spec, patch=patch,
            previous=dep.spec, message="dry run: the patch is valid; nothing was changed",
        )  # fmt: skip
    now = sim.now_s
    dep.applied.append(
        AppliedRecord(
            proposal_id=proposal_id,
            previous=dep.spec,
            previous_pool=dep.spec_pool,
            config=config,
            pool=pool,
            at_s=now,
        )  # fmt: skip
    )
    previous = dep.spec
    dep.spec, dep.spec_pool = config, pool
    dep.rollout = _start_rollout(sim, dep, config, pool, proposal_id, sched_error)
    return ApplyResult(
        ref=ref, proposal_id=proposal_id, dry_run=False, changed=True, patch=patch, previous=previous,
        message=f"rollout started at twin time {_iso(now)}",
    )  # fmt: skip


def _start_rollout(
    sim: SimCluster,
    dep: DeploymentState,
    config: ServingConfig,
    pool: str,
    proposal_id: str,
    sched_error: str | None,
) -> RolloutRecord | None:
    now = sim.now_s
    if config == dep.serving and pool == dep.serving_pool:
        return None  # back to what is already running: nothing to roll
    delay = sim.scenario.truth.rollout_delay_s
    record = RolloutRecord(
        config=config, pool=pool, proposal_id=proposal_id, started_at_s=now, ready_at_s=now + delay
    )
    if sched_error:
        record.pending, record.fails_at_s, record.reason = True, now + PROGRESS_DEADLINE_S, "FailedScheduling"
        record.events = [f"Warning FailedScheduling pod/{dep.name}: {sched_error}"]
        return record
    _check_memory(record, dep.name, now, delay)
    return record


def _check_memory(record: RolloutRecord, name: str, now: float, delay: float) -> None:
    oom = _memory_failure(record.config)
    if oom:
        record.failed, record.fails_at_s, record.reason = (
            True,
            now + min(OOM_FAIL_AFTER_S, delay),
            "OOMKilled",
        )
        record.events = [
            f"Warning BackOff pod/{name}: Back-off restarting failed container vllm",
            f"OOMKilled: container vllm of {name} was killed: {oom}",
        ]


def retry_pending(sim: SimCluster, dep: DeploymentState, now: float) -> None:
    """Schedule a pending rollout's pods once a pool has room; past the deadline the rollout fails."""
    ro = dep.rollout
    if ro is None or not ro.pending:
        return
    pool, sched_error = _choose_pool(sim, dep, ro.config)
    if sched_error is None:
        delay = sim.scenario.truth.rollout_delay_s
        ro.pending, ro.pool, ro.reason, ro.fails_at_s = False, pool, None, None
        ro.started_at_s, ro.ready_at_s = now, now + delay
        ro.events.append(f"Normal Scheduled pod/{dep.name}: assigned to pool {pool}")
        _check_memory(ro, dep.name, now, delay)
    elif ro.fails_at_s is not None and now >= ro.fails_at_s:
        ro.pending, ro.failed = False, True
        ro.reason = f"ProgressDeadlineExceeded: FailedScheduling for {PROGRESS_DEADLINE_S:.0f} s"
        ro.events.append(f"Warning FailedScheduling pod/{dep.name}: {sched_error}")


def rollout_status(sim: SimCluster, dep: DeploymentState) -> RolloutStatus:
    ref, ro, now = ref_of(dep), dep.rollout, sim.now_s
    desired = dep.spec.replicas
    if ro is None:
        n = dep.serving.replicas
        return RolloutStatus(
            ref=ref, done=True, desired_replicas=desired, updated_replicas=n, available_replicas=n
        )
    if ro.failed and ro.fails_at_s is not None and now >= ro.fails_at_s:
        return RolloutStatus(
            ref=ref, done=False, desired_replicas=desired, updated_replicas=0,
            available_replicas=dep.serving.replicas, events=list(ro.events), failed=True, reason=ro.reason,
        )  # fmt: skip
    if ro.pending:
        progress = f"Progressing: {desired} new replicas Pending (no pool has the GPUs yet)"
        events = [progress, *ro.events]
    else:
        events = [f"Progressing: waiting for {desired} new replicas (ready at {_iso(ro.ready_at_s)})"]
    return RolloutStatus(
        ref=ref, done=False, desired_replicas=desired, updated_replicas=0,
        available_replicas=dep.serving.replicas, events=events,
    )  # fmt: skip


def rollback(sim: SimCluster, dep: DeploymentState, proposal_id: str | None) -> ApplyResult:
    if proposal_id is None:
        live = [r for r in dep.applied if not r.rolled_back]
        if not live:
            raise NotFoundError(f"{dep.key}: nothing to roll back (no applied proposal)")
        record = live[-1]
    else:
        found = dep.record(proposal_id)
        if found is None:
            raise NotFoundError(f"{dep.key}: proposal {proposal_id!r} was never applied here")
        record = found
        if record.rolled_back:
            return ApplyResult(
                ref=ref_of(dep), proposal_id=proposal_id, dry_run=False, changed=False,
                previous=record.config, message="already rolled back",
            )  # fmt: skip
    record.rolled_back = True
    current = dep.spec
    dep.spec, dep.spec_pool = record.previous, record.previous_pool
    dep.rollout = _start_rollout(
        sim, dep, record.previous, record.previous_pool, f"rollback-{record.proposal_id}", None
    )
    return ApplyResult(
        ref=ref_of(dep), proposal_id=record.proposal_id, dry_run=False, changed=True, previous=current,
        patch=patch_for(sim, record.previous, record.previous_pool),
        message=f"restored the config recorded before proposal {record.proposal_id}",
    )  # fmt: skip


def run_benchmark(sim: SimCluster, request: BenchmarkRequest) -> BenchmarkResult:
    """A benchmark Job on the twin: the discrete-event simulator at the twin's true efficiency
    (the analytical model when the simulator is unavailable), plus measurement noise."""
    dep = sim.deployment_state(request.ref)
    config = request.config or dep.serving
    _check_ids(config)
    oom = _memory_failure(config)
    if oom:
        raise DoesNotFitError(f"benchmark pod for {dep.key} was OOMKilled: {oom}")
    eff = sim.truth.efficiency(config.engine.value, config.gpu)
    if sim.common_random_numbers:
        draw: tuple[object, ...] = ("",)  # the seed this twin always had: the bench's truth unchanged
    else:
        # A fresh draw per run, as a new benchmark Job on a cluster is: the same config run twice,
        # or a confirming run after a short one, must not repeat the first run's requests and noise.
        draw = (config.model_dump_json(), request.num_requests, dep.benchmark_runs)
        dep.benchmark_runs += 1
    rng = np.random.default_rng(stable_seed("bench", sim.seed, dep.key, *draw, sim.now_s))
    from servewise.cluster.sim_bench import measure

    m = measure(config, request.workload, request.num_requests, eff, rng)
    noise = sim.scenario.truth.noise

    def jitter(x: float) -> float:
        return float(x * np.exp(rng.normal(0.0, noise)))

    # The Job's load generator runs next to the replica (as a Kubernetes benchmark Job does), so the
    # result is the server-side latency of the candidate: users' network latency to the candidate's
    # pool is the caller's to add (the optimizer adds it per candidate pool).
    return BenchmarkResult(
        ref=ref_of(dep),
        config=config,
        workload=request.workload,
        completed=m.completed,
        failed=request.num_requests - m.completed,
        throughput_tok_s=jitter(m.throughput_tok_s),
        request_throughput_per_s=jitter(m.request_throughput_per_s),
        ttft_p50_ms=jitter(m.ttft_p50_ms),
        ttft_p99_ms=jitter(m.ttft_p99_ms),
        tpot_p50_ms=jitter(m.tpot_p50_ms),
        tpot_p99_ms=jitter(m.tpot_p99_ms),
        e2e_p99_ms=jitter(m.e2e_p99_ms),
        started_at=sim.now,
        duration_s=m.duration_s,
        source=f"sim:{sim.scenario.name}:{m.method}",
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
