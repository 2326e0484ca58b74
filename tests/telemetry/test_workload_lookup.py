"""Which snapshot entry describes a workload: its own name's, or a KServe predictor's Deployment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from servewise.domain import DeploymentRef, DeploymentTelemetry, TelemetrySnapshot


def _snapshot(*entries: tuple[str, float]) -> TelemetrySnapshot:
    return TelemetrySnapshot(
        source="test",
        taken_at=datetime(2026, 1, 5, tzinfo=UTC),
        deployments=[
            DeploymentTelemetry(deployment=name, namespace="llm", signals={"request_rate_per_s": rate})
            for name, rate in entries
        ],
    )


ISVC = DeploymentRef(name="llama", namespace="llm", kind="InferenceService")


@pytest.mark.parametrize(
    "predictor", ["llama-predictor", "llama-predictor-00003-deployment", "llama-predictor-default"]
)
def test_an_inference_service_is_read_from_its_predictors_deployment(predictor: str) -> None:
    tel = _snapshot((predictor, 2.0), ("llama-chat-predictor", 9.0)).for_workload(ISVC)
    assert tel is not None and tel.deployment == "llama" and tel.signals["request_rate_per_s"] == 2.0
    assert tel.notes == [f"read from {predictor}, the Deployment KServe runs llama's predictor in"]


def test_of_several_knative_revisions_the_busiest_serves() -> None:
    snap = _snapshot(("llama-predictor-00001-deployment", 0.2), ("llama-predictor-00002-deployment", 3.0))
    tel = snap.for_workload(ISVC)
    assert tel is not None and tel.signals["request_rate_per_s"] == 3.0
    assert "the busiest of 2" in tel.notes[0] and "llama-predictor-00001-deployment" in tel.notes[0]
    assert snap.deployments[1].deployment == "llama-predictor-00002-deployment"  # the snapshot is unchanged


def test_only_an_inference_service_looks_beyond_its_name() -> None:
    snap = _snapshot(("llama-predictor", 2.0))
    assert snap.for_workload(DeploymentRef(name="llama", namespace="llm")) is None
    assert snap.for_workload(DeploymentRef(name="llama", namespace="other", kind="InferenceService")) is None
    own = _snapshot(("llama", 1.0), ("llama-predictor", 2.0)).for_workload(ISVC)
    assert own is not None and own.signals["request_rate_per_s"] == 1.0 and own.notes == []
