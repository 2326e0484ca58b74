from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servewise.cluster.backend import ClusterBackend
from servewise.cluster.factory import open_cluster
from servewise.cluster.sim import SimCluster
from servewise.cluster.sim_metrics import GAUGES
from servewise.domain import BenchmarkRequest, DeploymentRef, Workload
from servewise.errors import DoesNotFitError, InputError, NotFoundError
from servewise.perf.efficiency import default_efficiency

START = 1763899200.0  # the demo fixture's clock (conftest.py)

LEGAL = DeploymentRef(name="legal-summarizer", namespace="legal")


def test_implements_the_backend_and_describes_the_fleet(demo: SimCluster) -> None:
    assert isinstance(demo, ClusterBackend)
    deps = demo.list_deployments()
    assert len(deps) == 8
    for d in deps:
        assert d.workload is not None and d.workload.arrival_rate_per_s and d.slo is not None
        assert d.ready_replicas == d.config.replicas
    pools = {p.name: p for p in demo.list_node_pools()}
    used = sum(d.config.total_gpus for d in deps if d.pool == "h100-pool")
    assert pools["h100-pool"].free_gpus == pools["h100-pool"].total_gpus - used
    assert all(p.price_per_gpu_hour and p.price_per_gpu_hour > 0 for p in pools.values())


def test_open_cluster_spec_reaches_the_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVEWISE_HOME", str(tmp_path))
    cluster = open_cluster("sim:edge")
    assert isinstance(cluster, SimCluster) and cluster.scenario.name == "edge"


def test_same_seed_same_twin_other_seed_other_truth(tmp_path: Path) -> None:
    a = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=120)
    b = SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=120)
    c = SimCluster.from_scenario("demo", 99, ephemeral=True, start=START, warmup_s=120)
    assert np.array_equal(a.history.totals[-1], b.history.totals[-1])
    assert not np.array_equal(a.history.totals[-1], c.history.totals[-1])
    truth = a.truth.efficiency("vllm", "h100-sxm")
    assert truth != default_efficiency("vllm", "h100-sxm")  # hidden ground truth differs from the catalog
    assert truth != c.truth.efficiency("vllm", "h100-sxm")


def test_the_demo_has_its_obvious_problems(demo: SimCluster) -> None:
    g = demo.history.gauges[-1]
    row = {key: dict(zip(GAUGES, g[i], strict=True)) for i, key in enumerate(demo.keys)}
    assert row["support/support-bot"]["waiting"] > 50  # overloaded queue
    assert row["chat/chat-assistant"]["kv_usage"] > 0.8  # KV saturation
    assert row["legal/legal-summarizer"]["gpu_utilization"] < 0.4  # 32 GPUs, little traffic
    healthy = row["docs/doc-extract"]
    assert healthy["waiting"] < 1 and healthy["kv_usage"] < 0.5


def test_apply_rolls_out_after_the_delay_and_replaces_pods(demo: SimCluster) -> None:
    old_pods = {p.name for p in demo.pods["legal/legal-summarizer"]}
    target = demo.get_deployment(LEGAL).config.with_changes(tensor_parallel=4, replicas=1)
    res = demo.apply(LEGAL, target, proposal_id="p-1")
    assert res.changed and res.previous is not None and res.previous.tensor_parallel == 8
    assert any(op["path"] == "/spec/replicas" and op["value"] == 1 for op in res.patch)
    status = demo.rollout_status(LEGAL)
    assert not status.done and status.available_replicas == 4
    assert demo.list_node_pools()[0].free_gpus >= 0
    status = demo.wait_for_rollout(LEGAL, timeout_s=600)
    assert status.done and status.available_replicas == 1
    new_pods = {p.name for p in demo.pods["legal/legal-summarizer"]}
    assert len(new_pods) == 1 and not (new_pods & old_pods)
    assert demo.pods["legal/legal-summarizer"][0].config.tensor_parallel == 4
    again = demo.apply(LEGAL, target, proposal_id="p-1")
    assert not again.changed  # idempotent per proposal id


def test_dry_run_changes_nothing(demo: SimCluster) -> None:
    before = demo.get_deployment(LEGAL).config
    res = demo.apply(LEGAL, before.with_changes(replicas=2), proposal_id="p-dry", dry_run=True)
    assert res.dry_run and res.patch
    assert demo.get_deployment(LEGAL).config == before
    assert demo.rollout_status(LEGAL).done


def test_oom_fails_the_rollout_and_rollback_restores(demo: SimCluster) -> None:
    before = demo.get_deployment(LEGAL).config
    huge = before.with_changes(model="llama-3.1-405b", tensor_parallel=2, replicas=1)
    demo.apply(LEGAL, huge, proposal_id="p-oom")
    status = demo.wait_for_rollout(LEGAL, timeout_s=600)
    assert status.failed and status.reason == "OOMKilled"
    assert any("OOMKilled" in e for e in status.events)
    assert status.available_replicas == before.replicas  # old pods keep serving
    back = demo.rollback(LEGAL, proposal_id="p-oom")
    assert back.changed
    assert demo.get_deployment(LEGAL).config == before
    assert demo.rollout_status(LEGAL).done
    assert not demo.rollback(LEGAL, proposal_id="p-oom").changed


def test_capacity_limits_fail_scheduling(demo: SimCluster) -> None:
    """Pods that no pool can take stay Pending (as on Kubernetes) until the progress deadline."""
    ref = DeploymentRef(name="translate", namespace="i18n")
    too_many = demo.get_deployment(ref).config.with_changes(replicas=64)
    demo.apply(ref, too_many, proposal_id="p-big")
    status = demo.rollout_status(ref)
    assert not status.done and not status.failed
    assert any("FailedScheduling" in e and "Insufficient nvidia.com/gpu" in e for e in status.events)
    status = demo.wait_for_rollout(ref, timeout_s=900)
    assert status.failed and "FailedScheduling" in (status.reason or "")
    assert "ProgressDeadlineExceeded" in (status.reason or "")
    assert demo.get_deployment(ref).ready_replicas == 3  # the old pods kept serving


def test_pending_pods_start_when_another_rollout_frees_the_gpus(demo: SimCluster) -> None:
    """Changes applied together: one shrinks a pool's user, the next needs those GPUs. The second
    rollout waits (Pending) instead of failing, and finishes after the first one freed its GPUs."""
    legal = DeploymentRef(name="legal-summarizer", namespace="legal")
    code = DeploymentRef(name="code-review", namespace="dev-tools")
    h100 = next(p for p in demo.list_node_pools() if p.name == "h100-pool")
    smaller = demo.get_deployment(legal).config.with_changes(replicas=1)
    # code-review moves to H100 with more GPUs than are free until legal-summarizer has shrunk
    bigger = demo.get_deployment(code).config.with_changes(gpu="h100-sxm", tensor_parallel=8, replicas=2)
    assert h100.free_gpus < bigger.total_gpus <= h100.free_gpus + 24
    demo.apply(legal, smaller, proposal_id="p-shrink")
    demo.apply(code, bigger, proposal_id="p-grow")
    assert any("FailedScheduling" in e for e in demo.rollout_status(code).events)
    status = demo.wait_for_rollout(code, timeout_s=900)
    assert status.done and not status.failed
    assert demo.get_deployment(code).pool == "h100-pool"


def test_moving_to_another_gpu_picks_a_matching_pool(demo: SimCluster) -> None:
    ref = DeploymentRef(name="rag-search", namespace="search")
    cfg = demo.get_deployment(ref).config.with_changes(gpu="l40s", tensor_parallel=1, replicas=2)
    demo.apply(ref, cfg, proposal_id="p-move")
    assert demo.wait_for_rollout(ref).done
    assert demo.get_deployment(ref).pool == "l40s-pool"


def test_state_survives_a_new_process(tmp_path: Path) -> None:
    first = SimCluster.from_scenario("demo", state_dir=tmp_path, start=START, warmup_s=60)
    target = first.get_deployment(LEGAL).config.with_changes(replicas=2)
    first.apply(LEGAL, target, proposal_id="p-2")
    second = SimCluster.from_scenario("demo", state_dir=tmp_path, warmup_s=60)
    assert second.now_s == first.now_s
    assert second.get_deployment(LEGAL).config.replicas == 2
    assert not second.rollout_status(LEGAL).done
    assert second.wait_for_rollout(LEGAL).done
    third = SimCluster.from_scenario("demo", state_dir=tmp_path, warmup_s=60)
    assert len(third.pods["legal/legal-summarizer"]) == 2
    assert third.deployment_state(LEGAL).record("p-2") is not None


def test_errors_name_what_is_wrong(demo: SimCluster) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        demo.get_deployment(DeploymentRef(name="nope"))
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        demo.rollback(LEGAL)
    bad = demo.get_deployment(LEGAL).config.with_changes(model="not-a-model")
    with pytest.raises(InputError, match="not-a-model"):
        demo.apply(LEGAL, bad, proposal_id="p-x")


def test_benchmark_measures_the_true_efficiency_with_noise(demo: SimCluster) -> None:
    ref = DeploymentRef(name="rag-search", namespace="search")
    req = BenchmarkRequest(ref=ref, workload=Workload.fixed(1000, 100, concurrency=8), num_requests=60)
    res = demo.run_benchmark(req)
    assert res.completed == 60 and res.throughput_tok_s > 0 and res.ttft_p99_ms >= res.ttft_p50_ms * 0.9
    assert "simulator" in res.source
    other = SimCluster.from_scenario("demo", 1234, ephemeral=True, start=START, warmup_s=60).run_benchmark(
        req
    )
    assert other.throughput_tok_s != pytest.approx(res.throughput_tok_s, rel=1e-3)
    big = req.model_copy(
        update={"config": res.config.with_changes(model="llama-3.1-405b", tensor_parallel=1)}
    )
    with pytest.raises(DoesNotFitError, match="OOMKilled"):
        demo.run_benchmark(big)
