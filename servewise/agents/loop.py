"""The tool-calling loop: a model, the read-only tools of a registry, and a step limit.

- Only tools with ``mutates=False`` are offered, and a call to any other tool is refused
  (``kind="not_allowed"``) even if the model names one: agents read and propose, never apply.
- Arguments are validated by the registry (pydantic); an invalid call goes back to the model as
  a structured ``ToolError`` so it can correct itself.
- Tool results go back as one JSON document under ``servewise_tool_result``: text from the
  cluster (annotations, logs, events) stays a JSON string value, never a message of its own, and
  the system prompt says it is data. The tool calls made are kept as the evidence of the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from servewise.agents.llm import LLMClient, ToolCallRequest
from servewise.errors import InputError
from servewise.tools.registry import ToolError, ToolRegistry

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
RESULT_KEY = "servewise_tool_result"
MAX_RESULT_CHARS = 24_000


def load_prompt(name: str, *, directory: Path | None = None) -> str:
    """A system prompt from ``prompts/NAME.md``."""
    path = (directory or PROMPTS_DIR) / f"{name}.md"
    try:
        return path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read system prompt: {exc}", source=str(path)) from exc


class ToolCallRecord(BaseModel):
    """One tool call the agent made: the evidence an answer rests on."""

    tool: str
    arguments: str
    ok: bool
    error: str | None = None
    result_excerpt: str = ""
    result: dict[str, Any] | None = Field(default=None, exclude=True, description="full result, for checks")


class AgentResult(BaseModel):
    answer: str
    stopped: Literal["answer", "step_limit"]
    steps: int
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: dict[str, float] = Field(default_factory=dict)

    def evidence_lines(self) -> list[str]:
        return [
            f"{c.tool}({c.arguments or '{}'})" + ("" if c.ok else f" -> error: {c.error}")
            for c in self.tool_calls
        ]


def tool_result_message(call_id: str, tool: str, result: BaseModel) -> dict[str, Any]:
    """The ``role=tool`` message carrying a result as delimited, escaped JSON data."""
    ok = not isinstance(result, ToolError)
    payload = {RESULT_KEY: {"tool": tool, "ok": ok, "data": result.model_dump(mode="json")}}
    content = json.dumps(payload, ensure_ascii=False)
    if len(content) > MAX_RESULT_CHARS:
        truncated = {
            RESULT_KEY: {"tool": tool, "ok": ok, "truncated": True, "data_prefix": content[:MAX_RESULT_CHARS]}
        }
        content = json.dumps(truncated, ensure_ascii=False)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def run_tool_loop(
    llm: LLMClient,
    registry: ToolRegistry,
    *,
    system_prompt: str,
    user_message: str,
    max_steps: int = 8,
    history: list[dict[str, Any]] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> AgentResult:
    """Ask, call tools until the model answers in text or ``max_steps`` model turns are used."""
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}", field="max_steps")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}, *(history or [])]
    messages.append({"role": "user", "content": user_message})
    tools = registry.openai_schemas(include_mutating=False)
    records: list[ToolCallRecord] = []
    for step in range(1, max_steps + 1):
        completion = llm.complete(messages, tools=tools or None, on_text=on_text)
        messages.append(completion.as_message())
        if not completion.tool_calls:
            if history is not None:
                history[:] = messages[1:]
            return AgentResult(
                answer=(completion.content or "").strip(),
                stopped="answer",
                steps=step,
                tool_calls=records,
                usage=llm.usage.as_dict(),
            )
        for call in completion.tool_calls:
            result = _run_one(registry, call)
            records.append(_record(call, result))
            messages.append(tool_result_message(call.id, call.name, result))
    log.warning("agent stopped at the step limit (%d) without an answer", max_steps)
    if history is not None:
        history[:] = messages[1:]
    return AgentResult(
        answer=f"I stopped after {max_steps} steps without reaching an answer; the tool calls made so far are listed.",
        stopped="step_limit",
        steps=max_steps,
        tool_calls=records,
        usage=llm.usage.as_dict(),
    )


def _run_one(registry: ToolRegistry, call: ToolCallRequest) -> BaseModel:
    tool = registry.get(call.name)
    if tool is not None and tool.mutates:
        log.warning("model asked for mutating tool %s: refused", call.name)
        return ToolError(
            tool=call.name,
            kind="not_allowed",
            error=f"{call.name} changes the cluster; agents cannot call it. Changes go through the approval workflow.",
        )
    try:
        return registry.call(call.name, call.arguments)
    except Exception as exc:  # a failing tool is a result for the model, never a crashed agent
        log.exception("tool %s failed", call.name)
        return ToolError(tool=call.name, error=f"{type(exc).__name__}: {exc}")


def _record(call: ToolCallRequest, result: BaseModel) -> ToolCallRecord:
    if isinstance(result, ToolError):
        return ToolCallRecord(tool=call.name, arguments=call.arguments, ok=False, error=result.error)
    data = result.model_dump(mode="json")
    excerpt = result.model_dump_json()[:300]
    return ToolCallRecord(
        tool=call.name, arguments=call.arguments, ok=True, result_excerpt=excerpt, result=data
    )
