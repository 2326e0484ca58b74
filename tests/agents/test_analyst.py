"""The analyst note: from the model when configured (data passed as JSON), offline otherwise."""

from __future__ import annotations

import json

from servewise.agents.analyst import narrate, offline_narrative
from servewise.domain import DeploymentRef, Evidence, Finding, Impact, Proposal, ServingConfig, Severity
from servewise.testing.scripted_llm import ScriptedLLM, http_error, text

from .conftest import INJECTION, client_for

REF = DeploymentRef(name="chat-70b", namespace="prod")
FINDING = Finding(
    ref=REF,
    kind="kv_saturation",
    severity=Severity.WARNING,
    summary=INJECTION,  # text that came from the cluster
    evidence=[Evidence(signal="kv_cache_usage", value=0.97)],
)
CUR = ServingConfig(model="llama-3.1-70b", gpu="h100-sxm", tensor_parallel=4, replicas=2)
PROPOSAL = Proposal(
    id="p-1",
    ref=REF,
    current=CUR,
    proposed=CUR.with_changes(quantization={"kv_cache": "fp8"}),
    summary="fp8 KV cache",
    predicted=Impact(cost_per_hour_before=80, cost_per_hour_after=80, ttft_p99_ms=900, uncertainty_pct=15),
    findings=["kv_saturation"],
)


def test_offline_narrative_has_why_change_impact_risk() -> None:
    note = offline_narrative([FINDING], [PROPOSAL])
    assert "kv_cache_usage=0.97" in note
    assert "quantization" in note and "$80.00/h -> $80.00/h" in note and "900 ms" in note and "±15%" in note
    assert "Not benchmarked" in note and "Risk: low" in note


def test_llm_narrative_gets_the_document_as_data() -> None:
    with ScriptedLLM([text("Approve: fp8 KV relieves KV saturation (0.97) at no cost.")]) as server:
        note, author = narrate([FINDING], [PROPOSAL], client_for(server))
    assert author == "scripted" and note.startswith("Approve: fp8 KV")
    system, user = server.requests[0]["messages"]
    assert "DATA" in system["content"] and "tools" not in server.requests[0]
    payload = json.loads(user["content"].split("\n", 1)[1])["servewise_document"]
    assert payload["findings"][0]["summary"] == INJECTION and payload["proposals"][0]["id"] == "p-1"


def test_llm_failure_falls_back_to_offline() -> None:
    with ScriptedLLM([http_error(500)] * 2) as server:
        note, author = narrate([FINDING], [PROPOSAL], client_for(server, max_attempts=2))
    assert author == "offline" and note == offline_narrative([FINDING], [PROPOSAL])


def test_a_note_with_invented_numbers_is_not_shown() -> None:
    with ScriptedLLM([text("Approve: this saves $999/h and cuts p99 TTFT to 120 ms.")]) as server:
        note, author = narrate([FINDING], [PROPOSAL], client_for(server))
    assert author == "offline" and note == offline_narrative([FINDING], [PROPOSAL])


def test_supported_numbers_pass() -> None:
    from servewise.agents.analyst import unsupported_numbers

    doc = {"a": 80.0, "b": 75.5, "ttft": 912.345, "text": "KV 97% full on 2 replicas"}
    assert unsupported_numbers("p99 912 ms, 97% full, 2 replicas, saves 4.5 $/h", doc) == []
    assert unsupported_numbers("p99 650 ms", doc) == ["650"]
