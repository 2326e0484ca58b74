"""Fleet placement (``optimize_fleet``): capacity, partial plans, ties and edge sites."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from servewise.cluster.factory import open_cluster
from servewise.domain import SLO, DeploymentRef, InferenceDeployment, NodePool, ServingConfig, Workload
from servewise.domain.fleet import SITE_LABEL
from servewise.perf.catalog import get_catalog
from servewise.telemetry.sim import SimTelemetrySource
from servewise.tools.calibrating import Calibration
from servewise.tools.choosing import search
from servewise.tools.placing import FleetPlan, optimize_fleet
from servewise.tools.search_space import SearchPolicy, shapes
from servewise.tools.sizing import load_for

H100_PRICE = get_catalog().gpu("h100-sxm").price_per_gpu_hour
BIG = NodePool(name="big", gpu="h100-sxm", nodes=1, gpus_per_node=8, free_gpus=0)
L4 = NodePool(name="l4", gpu="l4", nodes=1, gpus_per_node=4, free_gpus=4)


def dep(
    name: str, rate: float, reps: int = 1, pool: str | None = "big", slo: bool = True
) -> InferenceDeployment:
    return InferenceDeployment(
        ref=DeploymentRef(name=name),
        pool=pool,
        config=ServingConfig(model="llama-3.1-8b", gpu="h100-sxm", replicas=reps),
        workload=Workload.fixed(1000, 200, rate=rate),
        slo=SLO(ttft_p99_ms=2000, tpot_p99_ms=80) if slo else None,
    )


def gpus_in(plan: FleetPlan, pool: str, fleet: list[InferenceDeployment]) -> int:
    """GPUs the plan uses in ``pool``: its placements there and the deployments it leaves as they run."""
    placed = sum(p.config.total_gpus for p in plan.placements if p.pool == pool)
    left = {u.deployment for u in plan.unplaced}
    return placed + sum(d.config.total_gpus for d in fleet if d.ref.name in left and d.pool == pool)


def test_gpus_of_a_deployment_left_as_it_runs_are_not_handed_to_others() -> None:
    fleet = [dep("legacy", 3, reps=6, slo=False), dep("svc", 160, reps=2)]
    plan = optimize_fleet(fleet, [BIG])
    assert gpus_in(plan, "big", fleet) <= 8  # legacy keeps its 6: svc has its own 2 and nothing more
    legacy = next(u for u in plan.unplaced if u.deployment == "legacy")
    assert "SLO" in legacy.reason
    # both costs cover the whole fleet: legacy's 6 GPUs are in each, so no saving is made up
    kept = sum(d.config.total_gpus for d in fleet if d.ref.name in {u.deployment for u in plan.unplaced})
    assert plan.total_cost_per_hour == pytest.approx(
        kept * H100_PRICE + sum(p.cost_per_hour for p in plan.placements), abs=1e-3
    )
    assert plan.current_cost_per_hour == pytest.approx(8 * H100_PRICE)


def test_a_deployment_that_does_not_fit_leaves_the_others_placed() -> None:
    fleet = [dep("a", 3), dep("b", 160, reps=3), dep("c", 160, reps=4)]
    plan = optimize_fleet(fleet, [BIG, L4])
    assert plan.status == "partial"
    placed = {p.deployment for p in plan.placements}
    unplaced = {u.deployment: u.reason for u in plan.unplaced}
    assert placed and unplaced and placed | set(unplaced) == {"a", "b", "c"}
    assert all("insufficient pool capacity" in r for r in unplaced.values()), unplaced
    # a deployment left unplaced keeps its GPUs: they are not free for the others
    assert gpus_in(plan, "big", fleet) <= 8 and gpus_in(plan, "l4", fleet) <= 4


def test_a_free_pool_is_filled_with_its_smallest_options() -> None:
    onprem = NodePool(
        name="onprem", gpu="h100-sxm", nodes=1, gpus_per_node=8, free_gpus=8, price_per_gpu_hour=0.0
    )
    cloud = NodePool(name="cloud", gpu="h100-sxm", nodes=4, gpus_per_node=8, free_gpus=32)
    plan = optimize_fleet([dep("a", 3, pool=None), dep("b", 3, pool=None)], [onprem, cloud])
    assert plan.status == "optimal" and plan.total_cost_per_hour == 0.0
    assert {p.pool for p in plan.placements} == {"onprem"}


def test_a_pool_price_is_not_negative() -> None:
    with pytest.raises(ValidationError, match="price_per_gpu_hour"):
        NodePool(name="x", gpu="h100-sxm", nodes=1, gpus_per_node=8, free_gpus=8, price_per_gpu_hour=-3)


EDGE_PARIS = NodePool(
    name="edge-paris", gpu="l4", nodes=1, gpus_per_node=2, free_gpus=2, zone="paris", location="edge"
)
EDGE_LYON = EDGE_PARIS.model_copy(update={"name": "edge-lyon", "zone": "lyon"})
CLOUD = NodePool(name="cloud", gpu="l40s", nodes=1, gpus_per_node=4, free_gpus=4, network_latency_ms=45)


def pools_offered(d: InferenceDeployment) -> set[str]:
    seq_len = 1400
    return {
        s.pool.name for s in shapes(d, [EDGE_PARIS, EDGE_LYON, CLOUD], SearchPolicy(), get_catalog(), seq_len)
    }


def test_an_edge_pool_is_offered_only_to_the_users_of_its_site() -> None:
    in_paris = dep("shelf", 1, pool="edge-paris").model_copy(
        update={"config": ServingConfig(model="llama-3.2-3b", gpu="l4")}
    )
    assert pools_offered(in_paris) == {"edge-paris", "cloud"}
    in_cloud = in_paris.model_copy(update={"pool": "cloud"})
    assert pools_offered(in_cloud) == {"cloud"}  # where its users are is not known: no store rack
    for site in ("lyon", "edge-lyon"):  # a site is an edge pool's zone, or its name
        declared = in_cloud.model_copy(update={"labels": {SITE_LABEL: site}})
        assert pools_offered(declared) == {"edge-lyon", "cloud"}


def test_edge_deployments_are_placed_at_their_users_site_on_sim_edge() -> None:
    """sim:edge's shelf assistants serve the Paris and the Lyon store (lyon's runs in the cloud now):
    each is offered its own store's rack only, by the fleet placement and by the per-deployment search."""
    cluster = open_cluster("sim:edge")
    deps, pools = cluster.list_deployments(), cluster.list_node_pools()
    plan = optimize_fleet(deps, pools, snapshot=SimTelemetrySource(cluster).snapshot(window="15m"))
    placed = {p.deployment: p.pool for p in plan.placements}
    assert (placed["shelf-assistant-paris"], placed["shelf-assistant-lyon"]) == ("edge-paris", "edge-lyon")
    assert placed["receipt-ocr-text"].startswith("cloud-") and placed["product-qa"].startswith("cloud-")
    policy = SearchPolicy()
    for d in deps[:2]:
        site = d.ref.name.removeprefix("shelf-assistant-")
        found = search(d, pools, load_for(d, None, policy), Calibration(), policy, get_catalog())
        assert found[0].shape.pool.name == f"edge-{site}"
        assert {c.shape.pool.name for c in found} == {f"edge-{site}", "cloud-h100", "cloud-l40s"}


def test_applying_an_edge_change_keeps_it_at_its_users_site(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The optimizer proposes edge-lyon for the Lyon assistant; the twin's apply chose the first L4
    pool with room, edge-paris, by GPU type alone."""
    monkeypatch.setenv("SERVEWISE_HOME", str(tmp_path))
    cluster = open_cluster("sim:edge")
    lyon = next(d for d in cluster.list_deployments() if d.ref.name == "shelf-assistant-lyon")
    config = lyon.config.with_changes(gpu="l4", tensor_parallel=1, replicas=1)
    result = cluster.apply(lyon.ref, config, proposal_id="p-lyon", dry_run=True)
    selectors = [op["value"] for op in result.patch if op["path"].endswith("/nodeSelector")]
    assert selectors == [{"servewise.io/pool": "edge-lyon"}], result.patch


def test_a_plan_that_cuts_a_deployment_to_one_replica_says_it_loses_redundancy() -> None:
    """A light load on 3 replicas fits one: the plan's $/h is right, and it says what that costs."""
    plan = optimize_fleet([dep("light", 1, reps=3)], [BIG])
    assert [p.config.replicas for p in plan.placements] == [1]
    assert len(plan.notes) == 1 and "default/light (3 -> 1)" in plan.notes[0]
    assert "no redundancy" in plan.notes[0]
    assert optimize_fleet([dep("light", 1, reps=1)], [BIG]).notes == []  # one replica already
