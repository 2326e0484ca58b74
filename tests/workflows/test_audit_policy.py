"""The audit log is append-only and idempotent; the auto-approve policy is bounded."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from servewise.domain import DeploymentRef, Impact, Proposal, ServingConfig
from servewise.errors import InputError
from servewise.perf.catalog import get_catalog
from servewise.workflows.approval import AutoApprovePolicy, edit_proposal, parse_edits
from servewise.workflows.audit import AuditLog


def test_audit_is_append_only_and_once_is_idempotent(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    assert log.record("r1", "proposed", "servewise", proposal_id="p1", once=True)
    assert not log.record("r1", "proposed", "servewise", proposal_id="p1", once=True)  # node re-ran
    assert log.record("r1", "approved", "alice", proposal_id="p1", once=True, details={"comment": "ok"})
    assert [e.action for e in log.events("r1")] == ["proposed", "approved"]
    assert log.has("approved", "p1") and not log.has("applied", "p1")
    with pytest.raises(ValueError, match="unknown audit action"):
        log.record("r1", "deleted", "mallory")
    raw = sqlite3.connect(tmp_path / "audit.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM events")
    buf = io.StringIO()
    assert log.export_jsonl(buf) == 2
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[1]["action"] == "approved" and lines[1]["actor"] == "alice" and lines[1]["comment"] == "ok"
    assert {"ts", "run_id", "action", "actor"} <= set(lines[0])


def proposal(
    ns: str = "staging", replicas: tuple[int, int] = (4, 3), cost: tuple[float, float] = (16, 12)
) -> Proposal:
    cur = ServingConfig(model="llama-3.1-8b", gpu="l4", replicas=replicas[0])
    return Proposal(
        id="p1",
        ref=DeploymentRef(name="chat", namespace=ns),
        current=cur,
        proposed=cur.with_changes(replicas=replicas[1]),
        summary="s",
        predicted=Impact(cost_per_hour_before=cost[0], cost_per_hour_after=cost[1]),
    )


NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday


def test_policy_bounds() -> None:
    policy = AutoApprovePolicy(namespaces=["staging", "production"], max_relative_change={"replicas": 0.3})
    assert policy.reasons_to_refuse(proposal(), NOON) == []
    assert "above the limit 30%" in policy.reasons_to_refuse(proposal(replicas=(4, 2)), NOON)[0]
    assert "production" in policy.reasons_to_refuse(proposal(ns="production"), NOON)[0]
    assert (
        AutoApprovePolicy(
            namespaces=["production"], allow_production=True, max_relative_change={"replicas": 0.3}
        ).reasons_to_refuse(proposal(ns="production"), NOON)
        == []
    )
    assert "not in" in policy.reasons_to_refuse(proposal(ns="dev"), NOON)[0]
    assert "adds $4.00/hour" in policy.reasons_to_refuse(proposal(replicas=(4, 5), cost=(16, 20)), NOON)[0]
    gpu_change = proposal().model_copy(update={"proposed": proposal().proposed.with_changes(gpu="l40s")})
    assert "knob gpu changes" in policy.reasons_to_refuse(gpu_change, NOON)[0]
    # a change servewise itself calls high risk (a dry run refused it, unbenchmarked, unconfirmed)
    refused = proposal().model_copy(
        update={"risk": "high: the dry run refused it (storageUri); applying it will fail"}
    )
    assert policy.reasons_to_refuse(refused, NOON) == [
        "its risk is high: the dry run refused it: a person decides"
    ]


def test_change_windows() -> None:
    policy = AutoApprovePolicy.model_validate(
        {
            "namespaces": ["staging"],
            "max_relative_change": {"replicas": 0.5},
            "change_windows": [
                {"days": ["sat", "sun"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}
            ],
        }
    )
    assert "outside every change window" in policy.reasons_to_refuse(proposal(), NOON)[0]
    sat_night = datetime(2026, 3, 7, 22, 30, tzinfo=UTC)  # 23:30 in Berlin, a Saturday
    assert policy.reasons_to_refuse(proposal(), sat_night) == []


def test_policy_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("namespaces: [staging]\nmax_relative_change: {replicaz: 0.5}\n")
    with pytest.raises(InputError, match=r"policy.yaml.*replicaz"):
        AutoApprovePolicy.load(bad)
    bad.write_text("namespaces: []\n")
    with pytest.raises(InputError, match="namespaces"):
        AutoApprovePolicy.load(bad)
    with pytest.raises(InputError, match="cannot read"):
        AutoApprovePolicy.load(tmp_path / "missing.yaml")


def test_parse_edits() -> None:
    assert parse_edits(["replicas=2", "gpu=l40s"], "p1") == {"p1": {"replicas": 2, "gpu": "l40s"}}
    assert parse_edits(["p2:max_num_seqs=128"], None) == {"p2": {"max_num_seqs": 128}}
    with pytest.raises(InputError, match="several proposals"):
        parse_edits(["replicas=2"], None)
    with pytest.raises(InputError, match="knob=value"):
        parse_edits(["replicas"], "p1")


def test_an_edit_is_costed_by_its_gpus_and_must_fit_them() -> None:
    catalog = get_catalog()
    base = proposal()  # 3 x l4 at $12/h; 8k contexts (a 128k one does not fit an L4's KV cache)
    base = base.model_copy(update={"proposed": base.proposed.with_changes(max_model_len=8192)})
    with pytest.raises(InputError, match="fewer than one sequence of 131072 tokens"):
        edit_proposal(base, {"max_model_len": None})  # as vLLM refuses to start
    fewer = edit_proposal(base, {"replicas": 2})
    assert fewer.predicted.cost_per_hour_after == pytest.approx(8.0)
    assert fewer.summary == "s (edited: replicas=2; $8.00/h after)" and fewer.predicted.ttft_p99_ms is None
    other = edit_proposal(base, {"gpu": "l40s", "replicas": 1})  # no price in the proposal: the catalog's
    assert other.predicted.cost_per_hour_after == pytest.approx(catalog.gpu("l40s").price_per_gpu_hour)
    assert other.manifest_patch == []  # the proposed config's patch is not the edited one's
    with pytest.raises(InputError, match="p1: the edited config does not fit in GPU memory"):
        edit_proposal(base, {"model": "llama-3.1-70b"})
