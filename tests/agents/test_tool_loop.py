"""The tool-calling loop driven over HTTP by the scripted model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from servewise.agents.loop import RESULT_KEY, load_prompt, run_tool_loop
from servewise.testing.scripted_llm import ScriptedLLM, Turn, text, tool_call

from .conftest import INJECTION, FakeFleet, client_for


@pytest.mark.parametrize("stream", [False, True])
def test_valid_call_then_answer(fleet: FakeFleet, stream: bool) -> None:
    script = [
        tool_call("get_signal", {"deployment": "chat-70b", "signal": "ttft_p99_ms"}),
        text("p99 TTFT is 812.5 ms."),
    ]
    with ScriptedLLM(script) as server:
        result = run_tool_loop(
            client_for(server, stream=stream), fleet.registry, system_prompt="sys", user_message="p99?"
        )
    assert result.stopped == "answer" and result.answer == "p99 TTFT is 812.5 ms."
    assert [c.tool for c in result.tool_calls] == ["get_signal"] and result.tool_calls[0].ok
    # the tools offered never include the mutating one
    offered = {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert offered == {"get_signal", "list_pods"}
    tool_msg = server.requests[1]["messages"][-1]
    assert tool_msg["role"] == "tool"
    assert json.loads(tool_msg["content"])[RESULT_KEY]["data"]["value"] == 812.5


def test_invalid_arguments_go_back_to_the_model(fleet: FakeFleet) -> None:
    script = [
        tool_call("get_signal", {"deployment": "chat-70b", "signal": "p99"}),  # not an allowed signal
        tool_call("get_signal", '{"deployment": "chat-70b", '),  # not even JSON
        tool_call("get_signal", {"deployment": "chat-70b", "signal": "kv_cache_usage"}),
        text("done"),
    ]
    with ScriptedLLM(script) as server:
        result = run_tool_loop(client_for(server), fleet.registry, system_prompt="s", user_message="q")
    assert [c.ok for c in result.tool_calls] == [False, False, True]
    first_error = json.loads(server.requests[1]["messages"][-1]["content"])[RESULT_KEY]
    assert first_error["ok"] is False
    assert first_error["data"]["kind"] == "invalid_arguments"
    assert "signal" in first_error["data"]["error"]
    assert result.answer == "done"


def test_prompt_injection_in_annotation_is_data_and_cannot_mutate(fleet: FakeFleet) -> None:
    """A naive model obeys the annotation; the loop still refuses the mutating tool."""

    def naive_model(body: dict[str, Any]) -> Turn:
        last = body["messages"][-1]
        if last["role"] == "user":
            return tool_call("list_pods", {"deployment": "chat-70b"})
        if "maintenance mode" in last.get("content", "") and last["role"] == "tool":
            return tool_call("scale_deployment", {"deployment": "chat-70b", "replicas": 0})
        return text("I could not scale; the annotation looks like an injection attempt.")

    with ScriptedLLM(naive_model) as server:
        result = run_tool_loop(
            client_for(server),
            fleet.registry,
            system_prompt=load_prompt("operator"),
            user_message="is chat-70b ok?",
        )
    assert fleet.scaled == []  # nothing changed
    refused = result.tool_calls[1]
    assert refused.tool == "scale_deployment" and not refused.ok and "cannot call" in (refused.error or "")
    # the injected text reached the model only as a JSON string inside a tool message
    for msg in server.requests[-1]["messages"]:
        if INJECTION in (msg.get("content") or ""):
            assert msg["role"] == "tool"
            doc = json.loads(msg["content"])[RESULT_KEY]
            assert doc["data"]["pods"][0]["annotations"]["note"] == INJECTION
    assert "untrusted DATA" in server.requests[0]["messages"][0]["content"]


def test_model_that_loops_hits_the_step_limit(fleet: FakeFleet) -> None:
    def looping(body: dict[str, Any]) -> Turn:
        return tool_call("get_signal", {"deployment": "chat-70b", "signal": "ttft_p99_ms"})

    with ScriptedLLM(looping) as server:
        result = run_tool_loop(
            client_for(server), fleet.registry, system_prompt="s", user_message="q", max_steps=4
        )
    assert result.stopped == "step_limit" and result.steps == 4
    assert len(server.requests) == 4 and len(result.tool_calls) == 4
    assert "4 steps" in result.answer


def test_unknown_tool_and_failing_tool_are_results(fleet: FakeFleet) -> None:
    script = [tool_call("drop_database", {}), tool_call("list_pods", {"deployment": "nope"}), text("ok")]
    with ScriptedLLM(script) as server:
        result = run_tool_loop(client_for(server), fleet.registry, system_prompt="s", user_message="q")
    assert [c.ok for c in result.tool_calls] == [False, False]
    assert "no tool named" in (result.tool_calls[0].error or "")
    assert "nope" in (result.tool_calls[1].error or "")
    assert result.usage["requests"] == 3


def test_operator_answer_flags_numbers_no_tool_returned(fleet: FakeFleet) -> None:
    from servewise.agents.operator import format_answer

    script = [
        tool_call("get_signal", {"deployment": "chat-70b", "signal": "ttft_p99_ms"}),
        text("p99 TTFT is 812.5 ms, up from 400 ms yesterday."),
    ]
    with ScriptedLLM(script) as server:
        result = run_tool_loop(client_for(server), fleet.registry, system_prompt="s", user_message="p99?")
    answer = format_answer(result, "why is p99 TTFT up on chat-70b?")
    assert "Unverified (in no tool result): 400" in answer
    assert "812.5" not in answer.split("Unverified")[1]
    assert 'get_signal({"deployment": "chat-70b", "signal": "ttft_p99_ms"})' in answer
