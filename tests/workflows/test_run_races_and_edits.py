"""Runs driven from several places at once, killed after the gate, and edited at approval (each
a defect a review reproduced): the run lock, the run list, re-proposed ids on the twin, edits' patch
and cost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from servewise.errors import InputError
from servewise.workflows import runs as runs_mod
from servewise.workflows.approval import Decision
from servewise.workflows.environment import Environment
from servewise.workflows.runs import WorkflowService

from .conftest import opts


def test_twin_reproposed_id_is_applied_not_skipped(home: Path) -> None:
    """A -> X (p1), X -> Y (p2), Y -> X again (the same id p1: ids hash deployment and target): the
    twin applies it, as the deployment does not run X, instead of answering 'already applied'."""
    from servewise.cluster.sim import SimCluster

    sim = SimCluster.from_scenario("demo", ephemeral=True)
    dep = sim.list_deployments()[0]
    a = dep.config
    x = a.with_changes(replicas=a.replicas + 1)
    y = a.with_changes(replicas=a.replicas + 2)
    assert sim.apply(dep.ref, x, proposal_id="p1").changed
    sim.advance(900)
    assert sim.apply(dep.ref, y, proposal_id="p2").changed
    sim.advance(900)
    again = sim.apply(dep.ref, x, proposal_id="p1")
    assert sim.get_deployment(dep.ref).config == x, again.message  # stays at y: 'already applied'


def test_executing_probe_refuses_a_legitimate_executor(
    service: WorkflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``executing()`` looks by taking the lock for an instant: a real decision meanwhile waits for
    it (up to ``LOCK_WAIT_S``) instead of being refused as if another process executed the run."""
    view = service.start(opts())
    run_id = view.run_id
    lock = service._lock_path(run_id)
    assert lock.exists()
    real_flock = runs_mod.fcntl.flock
    in_probe, release = threading.Event(), threading.Event()

    def slow_flock(fh: object, op: int) -> None:
        real_flock(fh, op)
        if threading.current_thread().name == "probe" and op & runs_mod.fcntl.LOCK_EX:
            in_probe.set()
            release.wait(5)  # the reader is between its LOCK_EX and its LOCK_UN

    monkeypatch.setattr(runs_mod.fcntl, "flock", slow_flock)
    probe = threading.Thread(target=service.executing, args=(run_id,), name="probe")
    probe.start()
    assert in_probe.wait(5)
    threading.Timer(0.3, release.set).start()  # a look holds the lock for an instant, not seconds
    try:
        # nobody executes the run: a decision must not be refused
        service.decide(run_id, Decision(action="reject", actor="bob", comment="x"))
    finally:
        release.set()
        probe.join()


def test_edited_proposal_in_run_view_keeps_the_unedited_manifest_patch(home: Path) -> None:
    """The run view shows an edited proposal with its dry run's patch, not the unedited config's."""
    from servewise.workflows.state import RunOptions

    o = RunOptions(cluster="sim:demo", benchmark=False, verify_window_s=600)
    with WorkflowService(home=home, llm=None) as svc:
        view = svc.start(o)
        p = view.proposals[0]
        n = p["proposed"]["replicas"] + 1
        done = svc.decide(
            view.run_id,
            Decision(
                action="approve", actor="carol", proposal_ids=[p["id"]], edits={p["id"]: {"replicas": n}}
            ),
        )
    shown = next(q for q in done.proposals if q["id"] == p["id"])
    assert shown["proposed"]["replicas"] == n
    values = [op["value"] for op in shown["manifest_patch"] if str(op.get("path", "")).endswith("/replicas")]
    assert values == [n], shown["manifest_patch"]


def test_workflow_module_imports_without_fcntl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``fcntl`` (Windows) the workflow module imports; runs are then not kept apart."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.delitem(sys.modules, "servewise.workflows.runs")
    importlib.import_module("servewise.workflows.runs")


def test_two_deciders_of_one_run_are_kept_apart_and_the_second_is_told(home: Path, env: Environment) -> None:
    """A decision's check and its run happen under the run's lock: a decider meeting another
    process executing the run is refused, and one meeting a run decided meanwhile is told it is no
    longer waiting (before, its check could pass first and its decision silently count for nothing)."""
    with (
        WorkflowService(home=home, environment=env, llm=None) as a,
        WorkflowService(home=home, environment=env, llm=None) as b,
    ):
        view = a.start(opts())
        with b._executing(view.run_id), pytest.raises(InputError, match="being executed by another process"):
            a.decide(view.run_id, Decision(action="reject", actor="bob", comment="freeze"))
        assert (
            a.decide(view.run_id, Decision(action="reject", actor="bob", comment="freeze")).status
            == "rejected"
        )
        with pytest.raises(InputError, match="is rejected, not awaiting approval"):
            b.decide(view.run_id, Decision(action="approve", actor="alice"))


def test_gpu_edit_is_costed_at_pool_not_catalog_price(home: Path) -> None:
    """An edit is costed at the price per GPU-hour the proposal implies for its GPU (the pool's: $0.55
    for sim:edge's L4s, catalog $0.805), and a GPU it does not price at the catalog's (L40S $1.861)."""
    from servewise.domain import Proposal
    from servewise.workflows.approval import edit_proposal
    from servewise.workflows.state import RunOptions

    with WorkflowService(home=home, llm=None) as svc:
        view = svc.start(RunOptions(cluster="sim:edge", benchmark=False, verify_window_s=600))
    p = Proposal.model_validate(next(q for q in view.proposals if q["proposed"]["gpu"] == "l4"))
    assert p.proposed.total_gpus * 0.55 == pytest.approx(p.predicted.cost_per_hour_after)
    edited = edit_proposal(p, {"gpu": "l40s"})
    assert edited.predicted.cost_per_hour_after == pytest.approx(1.861 * edited.proposed.total_gpus)


@pytest.mark.parametrize("node", ["gate:after_decision", "verify"])
def test_a_run_killed_after_the_gate_is_listed_interrupted(home: Path, node: str) -> None:
    """A run killed after its decision (in the gate, or in verify) is listed as its checkpoint says,
    interrupted, not as the run list's last word (awaiting_approval, applied)."""
    from .test_crash_resume import CRASH_EXIT, cli

    with WorkflowService(home=home, llm=None) as svc:
        view = svc.start(opts(benchmark=False))
    crashed = cli(home, "approve", view.run_id, "--as", "alice", "--json", crash_at=node)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr[-2000:]
    with WorkflowService(home=home, llm=None) as svc:
        assert svc.view(view.run_id).status == "interrupted"
        assert [r.status for r in svc.runs()] == ["interrupted"]
