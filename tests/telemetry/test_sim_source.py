from __future__ import annotations

import pytest

from servewise.cluster.sim import SimCluster
from servewise.domain import POD_PREFIX, SIGNALS, DeploymentRef
from servewise.errors import InputError
from servewise.telemetry.sim import SimTelemetrySource

START = 1763899200.0


@pytest.fixture
def twin() -> SimCluster:
    return SimCluster.from_scenario("demo", ephemeral=True, start=START, warmup_s=600)


def test_every_signal_of_every_deployment(twin: SimCluster) -> None:
    snap = SimTelemetrySource(twin).snapshot(window="5m")
    assert snap.source == "sim:demo" and snap.queries == 1 and snap.taken_at == twin.now
    assert len(snap.deployments) == 8
    for d in snap.deployments:
        pods = {k for k in d.signals if k.startswith(POD_PREFIX)}
        assert d.missing == [] and set(d.signals) - pods == set(SIGNALS) and d.notes == []
        assert len(pods) == twin.deployment_state(f"{d.namespace}/{d.deployment}").spec.replicas
        assert all(k.endswith("/requests_running") and d.signals[k] >= 0 for k in pods)
        assert d.signals["ttft_p99_ms"] >= d.signals["ttft_p50_ms"] > 0
        assert 0 <= d.signals["kv_cache_usage"] <= 1 and 0 <= d.signals["gpu_utilization"] <= 1
    support = snap.for_deployment("support-bot", "support")
    legal = snap.for_deployment("legal-summarizer", "legal")
    assert support is not None and legal is not None
    assert support.signals["requests_waiting"] > legal.signals["requests_waiting"]


def test_a_window_longer_than_the_history_says_so(twin: SimCluster) -> None:
    snap = SimTelemetrySource(twin).snapshot(window="1h")
    assert all("covers" in d.notes[0] for d in snap.deployments)
    with pytest.raises(InputError, match="--window"):
        SimTelemetrySource(twin).snapshot(window="an hour")


def test_a_deployment_scaled_to_zero_reports_missing_not_zero(twin: SimCluster) -> None:
    ref = DeploymentRef(name="translate", namespace="i18n")
    twin.apply(ref, twin.get_deployment(ref).config.with_changes(replicas=0), proposal_id="p-zero")
    assert twin.wait_for_rollout(ref).done
    twin.advance(300, persist=False)
    d = SimTelemetrySource(twin).snapshot(window="2m").for_deployment("translate", "i18n")
    assert d is not None and d.replicas == 0
    assert set(d.missing) == set(SIGNALS) and d.signals == {}
