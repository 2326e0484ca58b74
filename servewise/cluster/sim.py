"""The embedded cluster twin: a fleet from a scenario file, driven by the performance model.

``SimCluster`` implements ``ClusterBackend``. Time advances in fixed steps (``advance``); each step
turns every deployment's arrival rate at that moment (daily pattern, bursts, noise) into per-pod
engine and GPU state with the performance model evaluated at the twin's *hidden* efficiencies.
Changes roll out after a delay, can fail (OOMKilled, FailedScheduling), are idempotent per
proposal id and can be rolled back. State persists under ``$SERVEWISE_HOME/sim`` (see sim_state).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from servewise.cluster import sim_ops
from servewise.cluster.sim_engine import TruthModel, power_w, stable_seed
from servewise.cluster.sim_metrics import GAUGES, LAYOUT, History, LatencyDraw, LengthDraw, draw_step
from servewise.cluster.sim_pods import PodRuntime, make_pods, place
from servewise.cluster.sim_scenario import DeploymentSpec, Scenario, load_scenario
from servewise.cluster.sim_state import DeploymentState, TwinState, load_state, save_state, state_file
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
from servewise.errors import NotFoundError

log = logging.getLogger(__name__)
GIB_MIB = 1024.0


class SimCluster:
    """A simulated fleet behind the ``ClusterBackend`` protocol (see the module docstring)."""

    name = "sim"

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        state_path: Path | None = None,
        step_s: float = 15.0,
        history_s: float = 3600.0,
        warmup_s: float = 900.0,
        start: datetime | float | None = None,
        common_random_numbers: bool = False,
    ) -> None:
        self.scenario = scenario
        # With common random numbers, benchmarks draw requests and noise from a seed of the clock and
        # deployment alone: configs compared at one clock step meet the same requests (a
        # variance-reduction technique for the bench's truth: two configs the simulator cannot tell
        # apart then measure alike). Without (the default), every run is a fresh draw, as a new
        # benchmark Job on a cluster is (``sim_ops.run_benchmark``).
        self.common_random_numbers = common_random_numbers
        self.seed = scenario.seed if seed is None else seed
        self.step_s = float(step_s)
        self.state_path = state_path
        self.truth = TruthModel(self.seed, scenario.truth.efficiency_scale)
        self.specs: dict[str, DeploymentSpec] = {f"{d.namespace}/{d.name}": d for d in scenario.deployments}
        self.keys = list(self.specs)
        self.history = History(len(self.keys), max(2, int(history_s / self.step_s) + 1))
        self.totals = np.zeros((len(self.keys), LAYOUT.size))
        self.pods: dict[str, list[PodRuntime]] = {}
        saved = load_state(state_path, scenario.fingerprint) if state_path else None
        if saved is not None and saved.seed == self.seed:
            self.state = saved
        else:
            self.state = self._fresh_state(_start_time(start, scenario, self.step_s))
        end = self.state.time_s
        self.state.time_s = end - warmup_s
        self._rebuild_pods()
        self._advance_to(end)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_scenario(
        cls,
        name_or_path: str | Path,
        seed: int | None = None,
        *,
        state_dir: Path | str | None = None,
        ephemeral: bool = False,
        **kwargs: object,
    ) -> SimCluster:
        """Load a scenario; state persists in ``state_dir`` (default ``$SERVEWISE_HOME/sim``)
        unless ``ephemeral``."""
        scenario = load_scenario(name_or_path)
        path = None
        if not ephemeral:
            if state_dir is None:
                from servewise.settings import get_settings

                state_dir = get_settings().home / "sim"
            path = state_file(Path(state_dir), scenario.name, scenario.seed if seed is None else seed)
        return cls(scenario, seed=seed, state_path=path, **kwargs)  # type: ignore[arg-type]

    def _fresh_state(self, t: float) -> TwinState:
        deps = []
        for key in self.keys:
            spec = self.specs[key]
            config = self.scenario.serving_config(spec)
            deps.append(
                DeploymentState(
                    name=spec.name,
                    namespace=spec.namespace,
                    spec=config,
                    spec_pool=spec.pool,
                    serving=config,
                    serving_pool=spec.pool,
                )
            )
        return TwinState(
            scenario=self.scenario.name,
            fingerprint=self.scenario.fingerprint,
            seed=self.seed,
            time_s=t,
            deployments=deps,
        )

    def save(self) -> None:
        if self.state_path is not None:
            save_state(self.state_path, self.state)

    # -- clock -----------------------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        return self.state.time_s

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.state.time_s, UTC)

    def advance(self, seconds: float, *, persist: bool = True) -> None:
        """Move the twin's clock forward, one step at a time, and persist the result."""
        self._advance_to(self.state.time_s + seconds)
        if persist:
            self.save()

    def _advance_to(self, end_s: float) -> None:
        while self.state.time_s < end_s - 1e-9:
            dt = min(self.step_s, end_s - self.state.time_s)
            self._step(dt)

    def _step(self, dt: float) -> None:
        t = self.state.time_s + dt
        self.state.time_s = t
        if self._settle_rollouts(t):
            self._rebuild_pods()
        noise = self.scenario.truth.noise
        rng = np.random.default_rng(stable_seed("step", self.seed, round(t * 1000)))
        length_rng = np.random.default_rng(stable_seed("lengths", self.seed, round(t * 1000)))
        gauges = np.zeros((len(self.keys), len(GAUGES)))
        for i, key in enumerate(self.keys):
            spec, pods = self.specs[key], self.pods[key]
            if not pods:
                continue
            load = spec.workload
            mean_in, mean_out = load.input_len.mean, load.output_len.mean
            cached_in = mean_in * load.prefix_share if pods[0].config.enable_prefix_caching else 0.0
            # the model is evaluated at the noise-free rate (cached); noise perturbs what is observed
            per_replica = load.rate_at(t) / len(pods)
            st = self.truth.replica_state(pods[0].config, mean_in - cached_in, mean_out, per_replica)
            rate_noise = float(np.exp(rng.normal(0.0, noise)))
            jitter = float(np.exp(rng.normal(0.0, noise)))
            extra_s = self.scenario.pool(pods[0].pool).network_latency_ms / 1000.0
            # latencies: the benchmark's simulator at this rate while its queue is stable (sim_latency);
            # it, not the analytical capacity, decides whether the replica keeps up (as a benchmark would)
            samples = self.truth.latencies(pods[0].config, key, load, per_replica)
            saturated = st.saturated and samples is None
            if samples is not None:
                dist = LatencyDraw.from_samples(samples, scale=jitter, extra_s=extra_s)
            else:
                dist = LatencyDraw.make(
                    ttft_s=st.ttft_ms / 1000.0 * jitter + extra_s,
                    tpot_s=st.tpot_ms / 1000.0 * jitter,
                    e2e_s=st.e2e_ms / 1000.0 * jitter + extra_s,
                    load=per_replica / st.capacity_rate_per_s if st.capacity_rate_per_s > 0 else 1.0,
                    output_cv=load.output_len.std / mean_out if load.output_len.kind != "fixed" else 0.0,
                )
            lengths = LengthDraw.of(load.input_len, load.output_len, length_rng)
            for pod in pods:
                share = float(np.exp(rng.normal(0.0, noise)))  # pod-to-pod imbalance of the load balancer
                offered = per_replica * rate_noise * share
                served = min(offered, st.capacity_rate_per_s) if saturated else offered
                inc = draw_step(
                    rng,
                    dt_s=dt,
                    served_rate=served,
                    input_len=mean_in,
                    output_len=mean_out,
                    preemptions_per_s=st.preemptions_per_s * share,
                    dist=dist,
                    lengths=lengths,
                    prefix_hit_share=load.prefix_share if pod.config.enable_prefix_caching else None,
                )
                pod.counters += inc
                self.totals[i] += inc
                pod.running = max(0.0, st.running * share)
                pod.waiting = max(0.0, st.waiting * share * float(np.exp(rng.normal(0.0, noise))))
                pod.kv_usage = float(np.clip(st.kv_usage * share, 0.0, 1.0))
                n_gpu = max(1, len(pod.gpus))
                g_noise = np.exp(rng.normal(0.0, noise, n_gpu))
                pod.gpu_util = np.clip(st.gpu_utilization * g_noise, 0.0, 1.0)
                pod.fb_used_mib = np.full(n_gpu, st.memory_used_gb * 1e9 / 2**20)
                pod.dram_active = np.clip(st.dram_active * g_noise, 0.0, 1.0)
                pod.power_w = power_w(pod.config.gpu, pod.gpu_util)
            gauges[i] = (
                sum(p.running for p in pods),
                sum(p.waiting for p in pods),
                float(np.mean([p.kv_usage for p in pods])),
                float(np.mean(np.concatenate([p.gpu_util for p in pods]))),
                float(np.mean(np.concatenate([p.fb_used_mib for p in pods]))) * 2**20,
                len(pods),
            )
        self.history.append(t, gauges, self.totals)

    # -- pods and rollouts -----------------------------------------------------------------------
    def _rebuild_pods(self) -> None:
        """Recreate pods whose serving config changed (counters reset, as a new pod's would) and
        re-place every pool."""
        for dep in self.state.deployments:
            current = self.pods.get(dep.key)
            if current is not None and _same_pods(current, dep.serving, dep.serving_pool):
                continue
            self.pods[dep.key] = make_pods(
                dep.namespace, dep.name, dep.serving, dep.serving_pool, self.state.time_s
            )
        for pool in self.scenario.pools:
            place(pool, [p for key in self.keys for p in self.pods[key] if p.pool == pool.name])

    def _settle_rollouts(self, t: float) -> bool:
        changed = False
        for dep in self.state.deployments:
            ro = dep.rollout
            if ro is None or ro.failed or ro.pending or t < ro.ready_at_s:
                continue
            dep.serving, dep.serving_pool, dep.rollout = ro.config, ro.pool, None
            dep.revision += 1
            changed = True
        for dep in self.state.deployments:  # pending pods get the GPUs that finished rollouts freed
            if dep.rollout is not None and dep.rollout.pending:
                sim_ops.retry_pending(self, dep, t)
        return changed

    def deployment_state(self, ref: DeploymentRef | str) -> DeploymentState:
        key = ref if isinstance(ref, str) else ref.key
        if "/" not in key:
            matches = [d for d in self.state.deployments if d.name == key]
            if len(matches) == 1:
                return matches[0]
        for dep in self.state.deployments:
            if dep.key == key:
                return dep
        raise NotFoundError(f"no deployment {key!r} in the twin (scenario {self.scenario.name!r})")

    def pool_usage(self) -> dict[str, int]:
        """GPUs requested per pool: serving pods, plus new pods of rollouts in progress."""
        used = {p.name: 0 for p in self.scenario.pools}
        for dep in self.state.deployments:
            serving = dep.serving.total_gpus
            used[dep.serving_pool] += serving
            ro = dep.rollout
            if ro is not None and not ro.failed and not ro.pending:  # Pending pods hold no GPUs
                if ro.pool == dep.serving_pool:
                    used[ro.pool] += max(0, ro.config.total_gpus - serving)
                else:
                    used[ro.pool] += ro.config.total_gpus
        return used

    def all_pods(self) -> list[PodRuntime]:
        return [p for key in self.keys for p in self.pods[key]]

    def deployment_index(self, key: str) -> int:
        return self.keys.index(key)

    # -- ClusterBackend --------------------------------------------------------------------------
    def list_deployments(self) -> list[InferenceDeployment]:
        return [sim_ops.describe(self, dep) for dep in self.state.deployments]

    def list_unparsed(self) -> list[UnparsedWorkload]:
        return []

    def list_node_pools(self) -> list[NodePool]:
        used = self.pool_usage()
        pools = []
        for p in self.scenario.pools:
            price = p.price_per_gpu_hour
            if price is None:
                from servewise.perf.catalog import get_catalog

                price = get_catalog().gpu(p.gpu).price_per_gpu_hour
            pools.append(
                NodePool(
                    name=p.name,
                    gpu=p.gpu,
                    nodes=p.nodes,
                    gpus_per_node=p.gpus_per_node,
                    free_gpus=max(0, p.total_gpus - used[p.name]),
                    zone=p.zone,
                    location=p.location,
                    price_per_gpu_hour=price,
                    network_latency_ms=p.network_latency_ms,
                )
            )
        return pools

    def get_deployment(self, ref: DeploymentRef) -> InferenceDeployment:
        return sim_ops.describe(self, self.deployment_state(ref))

    def apply(
        self, ref: DeploymentRef, config: ServingConfig, *, proposal_id: str, dry_run: bool = False
    ) -> ApplyResult:
        result = sim_ops.apply(self, self.deployment_state(ref), config, proposal_id, dry_run=dry_run)
        if not dry_run:
            self.save()
        return result

    def rollout_status(self, ref: DeploymentRef) -> RolloutStatus:
        return sim_ops.rollout_status(self, self.deployment_state(ref))

    def wait_for_rollout(self, ref: DeploymentRef, *, timeout_s: float = 600) -> RolloutStatus:
        """Advance the twin's clock until the rollout is done or failed, or ``timeout_s`` passed."""
        deadline = self.state.time_s + timeout_s
        status = self.rollout_status(ref)
        while not (status.done or status.failed) and self.state.time_s < deadline - 1e-9:
            self._advance_to(min(deadline, self.state.time_s + self.step_s))
            status = self.rollout_status(ref)
        self.save()
        return status

    def rollback(self, ref: DeploymentRef, *, proposal_id: str | None = None) -> ApplyResult:
        result = sim_ops.rollback(self, self.deployment_state(ref), proposal_id)
        self.save()
        return result

    def run_benchmark(self, request: BenchmarkRequest) -> BenchmarkResult:
        result = sim_ops.run_benchmark(self, request)
        if not self.common_random_numbers:
            self.save()  # the count of runs, so that a later process draws afresh too
        return result


def _same_pods(pods: list[PodRuntime], config: ServingConfig, pool: str) -> bool:
    if not pods:
        return config.replicas == 0
    return pods[0].config == config and pods[0].pool == pool and len(pods) == config.replicas


def _start_time(start: datetime | float | None, scenario: Scenario, step_s: float) -> float:
    if isinstance(start, datetime):
        t = start.timestamp()
    elif isinstance(start, int | float):
        t = float(start)
    elif scenario.start:
        t = datetime.fromisoformat(scenario.start.replace("Z", "+00:00")).timestamp()
    else:
        t = time.time()
    return float(np.floor(t / step_s) * step_s)
