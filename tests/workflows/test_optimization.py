"""The optimization graph in-process on the fake fleet: gate, decisions, policy, verify, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from servewise.errors import InputError
from servewise.testing.fake_fleet import FakeCluster
from servewise.workflows.approval import Decision
from servewise.workflows.environment import Environment
from servewise.workflows.runs import WorkflowService

from .conftest import fleet_state, opts, real_applies


def _actions(svc: WorkflowService, run_id: str) -> list[tuple[str, str | None]]:
    return [(e.action, e.proposal_id) for e in svc.audit.events(run_id)]


def test_run_stops_at_gate_and_changes_nothing(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts())
    assert view.status == "awaiting_approval"
    assert len(view.proposals) == 2 and sorted(view.pending) == sorted(p["id"] for p in view.proposals)
    assert "chat-8b" in view.narrative and "$16.00/h -> $12.00/h" in view.narrative
    state = fleet_state(env)
    assert real_applies(state) == [] and state.apply_calls == []
    assert [a for a, _ in _actions(service, view.run_id)] == ["started", "proposed", "proposed"]
    assert service.audit.get_run(view.run_id).status == "awaiting_approval"  # type: ignore[union-attr]


def test_approve_one_applies_it_once_and_rejects_the_other(
    service: WorkflowService, env: Environment
) -> None:
    view = service.start(opts())
    staging = next(p["id"] for p in view.proposals if p["ref"]["namespace"] == "staging")
    done = service.decide(
        view.run_id, Decision(action="approve", actor="alice", comment="fine", proposal_ids=[staging])
    )
    assert done.status == "completed"
    state = fleet_state(env)
    assert real_applies(state) == [staging]
    assert {d.ref.name: d.config.replicas for d in state.deployments} == {"chat-8b": 3, "chat-70b": 2}
    actions = _actions(service, view.run_id)
    assert (
        actions.index(("approved", staging))
        < actions.index(("dry_run", staging))
        < actions.index(("applied", staging))
    )
    other = next(p["id"] for p in view.proposals if p["id"] != staging)
    assert ("rejected", other) in actions and ("applied", other) not in actions
    approved = next(e for e in service.audit.events(view.run_id) if e.action == "approved")
    assert approved.actor == "alice" and approved.details["comment"] == "fine"
    verified = next(e for e in service.audit.events(view.run_id) if e.action == "verified")
    ttft = verified.details["compared"]["ttft_p99_ms"]
    assert ttft["measured"] == pytest.approx(ttft["predicted"]) and not verified.details["regression"]


def test_reject_applies_nothing(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts())
    done = service.decide(view.run_id, Decision(action="reject", actor="bob", comment="not this week"))
    assert done.status == "rejected"
    assert fleet_state(env).apply_calls == []
    assert [a for a, _ in _actions(service, view.run_id)].count("rejected") == 2


def test_approve_with_edits_applies_the_edited_config(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts())
    pid = next(p["id"] for p in view.proposals if p["ref"]["name"] == "chat-8b")
    done = service.decide(
        view.run_id,
        Decision(action="approve", actor="carol", proposal_ids=[pid], edits={pid: {"replicas": 2}}),
    )
    # the optimizer's latency prediction was for 3 replicas: it is dropped, not compared against
    assert done.status == "completed"
    verified = next(e for e in service.audit.events(view.run_id) if e.action == "verified")
    assert (
        verified.details["compared"]["ttft_p99_ms"]["predicted"] is None
        and not verified.details["regression"]
    )
    chat8b = next(d for d in fleet_state(env).deployments if d.ref.name == "chat-8b")
    assert chat8b.config.replicas == 2
    shown = next(p for p in done.proposals if p["id"] == pid)  # what was applied, not what was proposed
    assert shown["proposed"]["replicas"] == 2 and "(edited: replicas=2; $" in shown["summary"]
    row = next(r for r in done.report["proposals"] if r["proposal_id"] == pid)  # type: ignore[index]
    assert row["summary"] == shown["summary"]
    ev = next(e for e in service.audit.events(view.run_id) if e.action == "approved")
    assert ev.details["edits"] == {"replicas": 2}


def test_a_proposal_id_another_run_applied_is_applied_again(
    service: WorkflowService, env: Environment
) -> None:
    """Proposal ids hash the deployment and target: after an edited apply and a manual revert, the
    next run proposes the same target under the same id, and approving it must apply it, not skip
    it as applied by the earlier run (which then reported it applied and verified)."""
    first = service.start(opts())
    pid = next(p["id"] for p in first.proposals if p["ref"]["name"] == "chat-8b")
    original = fleet_state(env)
    service.decide(
        first.run_id,
        Decision(action="approve", actor="carol", proposal_ids=[pid], edits={pid: {"replicas": 2}}),
    )
    assert isinstance(env.cluster, FakeCluster)
    state = env.cluster.load()
    state.deployments = original.deployments  # an operator puts it back by hand
    env.cluster.save(state)
    second = service.start(opts())
    again = next(p for p in second.proposals if p["ref"]["name"] == "chat-8b")
    assert again["id"] == pid and again["proposed"]["replicas"] != 2
    done = service.decide(second.run_id, Decision(action="approve", actor="carol", proposal_ids=[pid]))
    assert done.status == "completed"
    assert ("applied", pid) in _actions(service, second.run_id)
    assert real_applies(fleet_state(env)).count(pid) == 2
    chat8b = next(d for d in fleet_state(env).deployments if d.ref.name == "chat-8b")
    assert chat8b.config.replicas == again["proposed"]["replicas"]


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"tensor_parallel": 3}, "power of two"),
        ({"replicas": -1}, "replicas"),
        ({"colour": "red"}, "unknown knob"),
        ({"gpu": "l4", "model": "llama-3.1-70b"}, "does not fit in GPU memory: weights need"),
        ({"gpu": "tpu-v9"}, "unknown gpu .tpu-v9."),
    ],
)
def test_invalid_edits_are_refused_and_the_run_keeps_waiting(
    service: WorkflowService, env: Environment, edits: dict[str, object], message: str
) -> None:
    view = service.start(opts())
    pid = view.pending[0]
    with pytest.raises(InputError, match=message):
        service.decide(
            view.run_id, Decision(action="approve", actor="dave", proposal_ids=[pid], edits={pid: edits})
        )
    assert service.view(view.run_id).status == "awaiting_approval"
    assert fleet_state(env).apply_calls == []
    with pytest.raises(InputError, match="no pending proposal"):
        service.decide(view.run_id, Decision(action="approve", actor="dave", proposal_ids=["p-nope"]))


def test_regression_is_rolled_back(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts(benchmark=False))
    assert isinstance(env.cluster, FakeCluster)
    state = env.cluster.load()
    state.truth = 8.0  # the fleet is much slower than the optimizer believes
    env.cluster.save(state)
    pid = next(p["id"] for p in view.proposals if p["ref"]["name"] == "chat-8b")
    done = service.decide(view.run_id, Decision(action="approve", actor="erin", proposal_ids=[pid]))
    assert done.status == "rolled_back"
    after = fleet_state(env)
    assert after.rollbacks == [pid]
    assert next(d for d in after.deployments if d.ref.name == "chat-8b").config.replicas == 4
    verified = next(e for e in service.audit.events(view.run_id) if e.action == "verified")
    assert verified.details["regression"] and "above the prediction" in verified.details["reasons"][0]
    assert ("rolled_back", pid) in _actions(service, view.run_id)


def test_failed_rollout_is_rolled_back(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts(benchmark=False))
    assert isinstance(env.cluster, FakeCluster)
    state = env.cluster.load()
    state.deployments[0].fail_rollout = True
    env.cluster.save(state)
    pid = next(p["id"] for p in view.proposals if p["ref"]["name"] == state.deployments[0].ref.name)
    done = service.decide(view.run_id, Decision(action="approve", actor="erin", proposal_ids=[pid]))
    assert done.status == "rolled_back"
    verified = next(e for e in service.audit.events(view.run_id) if e.action == "verified")
    assert "OOMKilled" in verified.details["reasons"][0]


def test_dry_run_option_stops_after_proposing(service: WorkflowService, env: Environment) -> None:
    view = service.start(opts(stop_after_propose=True))
    assert view.status == "proposed" and view.pending == [] and len(view.proposals) == 2
    assert fleet_state(env).apply_calls == []


POLICY = """
name: staging-small
namespaces: [staging, production]
max_relative_change: {replicas: 0.3}
max_added_cost_per_hour: 0
"""


def test_auto_approve_policy_is_bounded(service: WorkflowService, env: Environment, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    view = service.start(opts(policy_path=str(policy)))
    # chat-8b: 4 -> 3 (25%) in staging is auto-approved; chat-70b is production and 50%: waits
    assert view.status == "awaiting_approval"
    prod = next(p["id"] for p in view.proposals if p["ref"]["namespace"] == "production")
    staging = next(p["id"] for p in view.proposals if p["ref"]["namespace"] == "staging")
    assert view.pending == [prod] and view.auto_approved == [staging]  # the approver sees both
    assert fleet_state(env).apply_calls == []  # nothing is applied before the whole gate is decided
    done = service.decide(view.run_id, Decision(action="approve", actor="frank", proposal_ids=[prod]))
    assert done.status == "completed"
    assert sorted(real_applies(fleet_state(env))) == sorted([staging, prod])
    ev = [e for e in service.audit.events(view.run_id) if e.proposal_id == staging and e.action == "approved"]
    assert ev[0].actor == "policy:staging-small"


def test_rejecting_the_run_withdraws_its_auto_approvals(
    service: WorkflowService, env: Environment, tmp_path: Path
) -> None:
    """An approver who rejects a run (a change freeze) expects nothing of it to go out."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    view = service.start(opts(policy_path=str(policy)))
    staging = view.auto_approved[0]
    done = service.decide(view.run_id, Decision(action="reject", actor="frank", comment="change freeze"))
    assert done.status == "rejected" and real_applies(fleet_state(env)) == []
    [withdrawn] = [
        e for e in service.audit.events(view.run_id) if e.proposal_id == staging and e.action == "rejected"
    ]
    assert withdrawn.actor == "frank" and "withdrawn" in withdrawn.details
    assert not service.audit.has("approved", staging, run_id=view.run_id)


def test_analyst_model_writes_the_note_and_usage_is_counted(home: Path, env: Environment) -> None:
    from servewise.agents.llm import LLMClient, LLMConfig
    from servewise.testing.scripted_llm import ScriptedLLM, text

    with ScriptedLLM([text("Both changes drop an idle replica; approve chat-8b first.")]) as server:
        cfg = LLMConfig(base_url=server.base_url, api_key="k", model="scripted", price_input_per_mtok=2.0)
        with WorkflowService(home=home, environment=env, llm=LLMClient(cfg)) as svc:
            view = svc.start(opts())
    assert view.narrative == "Both changes drop an idle replica; approve chat-8b first."
    assert view.llm_usage["requests"] == 1 and view.llm_usage["prompt_tokens"] > 0
    assert view.llm_usage["cost_usd"] == pytest.approx(view.llm_usage["prompt_tokens"] * 2.0 / 1e6, abs=1e-6)
    document = server.requests[0]["messages"][1]["content"]
    assert all(p["id"] in document for p in view.proposals)


def test_each_benchmark_run_is_reported_while_the_optimize_step_runs(home: Path, env: Environment) -> None:
    lines: list[tuple[str, str]] = []
    with WorkflowService(
        home=home, environment=env, llm=None, on_progress=lambda run, line: lines.append((run, line))
    ) as svc:
        view = svc.start(opts(stop_after_propose=True))
    assert lines and {run for run, _ in lines} == {view.run_id}
    keys = {p["ref"]["namespace"] + "/" + p["ref"]["name"] for p in view.proposals}
    assert all(any(line.startswith(f"{k}: benchmark 1/") for _, line in lines) for k in keys), lines


def _windowed(tmp_path: Path, start: str, end: str) -> str:
    policy = tmp_path / "windowed.yaml"
    days = "[mon, tue, wed, thu, fri, sat, sun]"
    policy.write_text(
        POLICY + f'change_windows:\n  - {{days: {days}, start: "{start}", end: "{end}", timezone: UTC}}\n'
    )
    return str(policy)


def test_a_change_window_that_closes_while_a_person_decides_lapses_the_auto_approval(
    service: WorkflowService, env: Environment, tmp_path: Path
) -> None:
    view = service.start(opts(policy_path=_windowed(tmp_path, "00:00", "01:00")))  # the twin starts at 00:00
    prod = view.pending[0]
    [staging] = view.auto_approved
    env.cluster.advance(2 * 3600)  # type: ignore[attr-defined]
    service.decide(view.run_id, Decision(action="approve", actor="frank", proposal_ids=[prod]))
    assert real_applies(fleet_state(env)) == [prod]
    decided = [
        e for e in service.audit.events(view.run_id) if e.proposal_id == staging and e.action != "proposed"
    ]
    assert [e.action for e in decided] == ["rejected"] and "no longer allows" in decided[0].details["comment"]


def test_a_change_window_that_opens_while_a_person_decides_takes_nothing_from_them(
    service: WorkflowService, env: Environment, tmp_path: Path
) -> None:
    view = service.start(opts(policy_path=_windowed(tmp_path, "03:00", "04:00")))
    assert view.auto_approved == [] and len(view.pending) == 2
    staging = next(p["id"] for p in view.proposals if p["ref"]["namespace"] == "staging")
    prod = next(p for p in view.pending if p != staging)
    env.cluster.advance(3.5 * 3600)  # type: ignore[attr-defined]
    service.decide(view.run_id, Decision(action="approve", actor="frank", proposal_ids=[prod]))
    assert real_applies(fleet_state(env)) == [prod]  # frank left staging out; the policy does not add it
    actions = [(e.action, e.actor) for e in service.audit.events(view.run_id) if e.proposal_id == staging]
    assert ("rejected", "frank") in actions and not any(a == "auto_approved" for a, _ in actions)


def test_a_proposal_the_approver_named_is_decided_as_they_said(
    home: Path, env: Environment, tmp_path: Path
) -> None:
    """The policy file changed between the gate and the decision (read again by a new process): a
    proposal that the person saw pending and named is theirs, not the policy's."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("namespaces: [staging, production]", "namespaces: [production]"))
    with WorkflowService(home=home, environment=env, llm=None) as svc:
        view = svc.start(opts(policy_path=str(policy)))
    staging = next(p["id"] for p in view.proposals if p["ref"]["namespace"] == "staging")
    assert staging in view.pending
    policy.write_text(POLICY)  # now the policy would allow staging's change
    with WorkflowService(home=home, environment=env, llm=None) as svc:
        done = svc.decide(view.run_id, Decision(action="reject", actor="frank", proposal_ids=[staging]))
        actions = [(e.action, e.actor) for e in svc.audit.events(view.run_id) if e.proposal_id == staging]
    assert done.status in ("rejected", "completed") and staging not in real_applies(fleet_state(env))
    assert ("rejected", "frank") in actions and ("approved", "policy:staging-small") not in actions


def test_a_step_that_raises_leaves_the_run_failed_with_the_error_and_resumable(
    home: Path, env: Environment
) -> None:
    """Prometheus down in the middle of a run: the run list says failed and why (not 'running'
    forever), and the checkpoint lets `resume` finish it once Prometheus is back."""
    import dataclasses

    from servewise.errors import BackendUnavailableError

    class Down:
        name = "prometheus:http://127.0.0.1:1"

        def snapshot(self, *, window: str = "15m", at: object = None) -> None:
            raise BackendUnavailableError("Prometheus at http://127.0.0.1:1 unreachable")

    with WorkflowService(home=home, environment=dataclasses.replace(env, telemetry=Down()), llm=None) as svc:  # type: ignore[arg-type]
        with pytest.raises(BackendUnavailableError):
            svc.start(opts())
        [record] = svc.audit.runs()
    assert record.status == "failed" and "unreachable" in record.summary
    assert f"servewise resume {record.run_id}" in record.summary
    with WorkflowService(home=home, environment=env, llm=None) as svc:
        assert svc.view(record.run_id).status == "interrupted"  # resumable, as after a crash
    with WorkflowService(home=home, environment=env, llm=None) as svc:
        assert svc.resume(record.run_id).status == "awaiting_approval"
        [after] = svc.audit.runs()
        assert after.status != "failed" and "unreachable" not in after.summary  # the old error is gone
