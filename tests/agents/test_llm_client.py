"""The LLM client over the real wire protocol (scripted OpenAI-compatible server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servewise.agents.llm import LLMConfig
from servewise.errors import BackendUnavailableError, InputError, LLMError
from servewise.testing.scripted_llm import ScriptedLLM, http_error, text, tool_calls

from .conftest import client_for


@pytest.mark.parametrize("stream", [False, True])
def test_text_and_usage(stream: bool) -> None:
    with ScriptedLLM([text("p99 TTFT rose because the KV cache is full.")]) as server:
        client = client_for(server, stream=stream, price_input_per_mtok=3.0, price_output_per_mtok=15.0)
        out = client.complete([{"role": "user", "content": "why?"}])
    assert out.content == "p99 TTFT rose because the KV cache is full."
    assert out.tool_calls == ()
    assert server.requests[0]["stream"] is True if stream else "stream" not in server.requests[0]
    u = client.usage
    assert u.requests == 1 and u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.cost_usd == pytest.approx((u.prompt_tokens * 3.0 + u.completion_tokens * 15.0) / 1e6)


def test_streamed_tool_calls_are_reassembled_from_chunks() -> None:
    args = {"deployment": "chat-70b", "signal": "ttft_p99_ms", "note": "x" * 40}
    streamed: list[str] = []
    with ScriptedLLM([tool_calls(("get_signal", args), ("list_pods", {"deployment": "chat-70b"}))]) as server:
        server.chunk_chars = 5  # arguments arrive in many pieces
        out = client_for(server).complete([{"role": "user", "content": "go"}], on_text=streamed.append)
    assert [c.name for c in out.tool_calls] == ["get_signal", "list_pods"]
    assert json.loads(out.tool_calls[0].arguments) == args
    assert out.tool_calls[0].id != out.tool_calls[1].id
    assert out.finish_reason == "tool_calls"


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("stream", [False, True])
def test_retryable_statuses_are_retried(status: int, stream: bool) -> None:
    with ScriptedLLM([http_error(status), http_error(status), text("ok")]) as server:
        client = client_for(server, stream=stream)
        out = client.complete([{"role": "user", "content": "hi"}])
    assert out.content == "ok"
    assert len(server.requests) == 3
    assert client.usage.retries == 2


def test_retries_are_bounded() -> None:
    with ScriptedLLM([http_error(500)] * 5) as server:
        client = client_for(server, max_attempts=3)
        with pytest.raises(BackendUnavailableError, match="500"):
            client.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3
    assert server.remaining == 2


def test_permanent_error_is_not_retried() -> None:
    with ScriptedLLM([http_error(401, "bad key"), text("never")]) as server:
        client = client_for(server)
        with pytest.raises(LLMError, match="401"):
            client.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


def test_timeout_is_retried_then_reported() -> None:
    from servewise.testing.scripted_llm import Turn

    with ScriptedLLM([Turn(content="late", delay_s=0.6), Turn(content="late", delay_s=0.6)]) as server:
        client = client_for(server, timeout_s=0.2, max_attempts=2)
        with pytest.raises(BackendUnavailableError, match="Timeout"):
            client.complete([{"role": "user", "content": "hi"}])
    assert client.usage.retries == 1


def test_config_offline_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "SERVEWISE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert LLMConfig.load(home=tmp_path) is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert LLMConfig.load(home=tmp_path) is None  # no model: still offline
    monkeypatch.setenv("SERVEWISE_MODEL", "m1")
    cfg = LLMConfig.load(home=tmp_path)
    assert cfg is not None and cfg.model == "m1" and cfg.base_url == "http://127.0.0.1:9/v1"
    (tmp_path / "llm.yaml").write_text("timeout_s: -3\n")
    with pytest.raises(InputError, match="timeout_s"):
        LLMConfig.load(home=tmp_path)
