"""The operator agent: answers questions about the fleet by calling read-only tools.

With an LLM it runs the tool loop with ``prompts/operator.md`` and keeps the conversation; the
evidence printed under an answer is the list of tool calls actually made, never the model's own
claim. Offline, ``parse_command`` recognises the fixed commands the chat answers without a model.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from servewise.agents.analyst import unsupported_numbers
from servewise.agents.llm import LLMClient
from servewise.agents.loop import AgentResult, load_prompt, run_tool_loop
from servewise.tools.registry import ToolRegistry

COMMANDS: dict[str, str] = {
    "status": "fleet, telemetry and runs at a glance",
    "analyze": "run the bottleneck analysis and list findings",
    "propose": "start an optimization run; stops at the approval gate",
    "explain": "explain RUN (default: the latest run): findings, proposals, predicted impact",
    "approve": "approve RUN [PROPOSAL...]; asks for your name with --as NAME",
    "reject": "reject RUN with a reason",
    "runs": "list optimization runs",
    "help": "this list",
}


@dataclass(frozen=True)
class ChatCommand:
    name: str
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


def parse_command(line: str) -> ChatCommand | None:
    """A fixed command (``approve run-1 --as alice``), or None for free text."""
    try:
        words = shlex.split(line.strip())
    except ValueError:
        return None
    if not words or words[0].lower().lstrip("/") not in COMMANDS:
        return None
    name, args, opts = words[0].lower().lstrip("/"), [], {}
    i = 1
    while i < len(words):
        if words[i].startswith("--") and i + 1 < len(words):
            opts[words[i][2:]] = words[i + 1]
            i += 2
        else:
            args.append(words[i])
            i += 1
    return ChatCommand(name, tuple(args), opts)


def help_text() -> str:
    return "\n".join(f"  {name:<8} {desc}" for name, desc in COMMANDS.items())


@dataclass
class OperatorAgent:
    llm: LLMClient
    registry: ToolRegistry
    max_steps: int = 8
    history: list[dict[str, Any]] = field(default_factory=list)

    def ask(self, question: str, *, on_text: Callable[[str], None] | None = None) -> AgentResult:
        return run_tool_loop(
            self.llm,
            self.registry,
            system_prompt=load_prompt("operator"),
            user_message=question,
            max_steps=self.max_steps,
            history=self.history,
            on_text=on_text,
        )


def format_answer(result: AgentResult, question: str = "") -> str:
    """The answer, the evidence (tool calls actually made) and any number no tool result supports."""
    lines = [result.answer]
    sources = [question, *[(c.arguments, c.result) for c in result.tool_calls]]
    unsupported = unsupported_numbers(result.answer, sources)
    if unsupported:
        lines.append(f"Unverified (in no tool result): {', '.join(unsupported)}")
    if result.tool_calls:
        lines.append("Evidence (tool calls made):")
        lines += [f"  - {e}" for e in result.evidence_lines()]
    else:
        lines.append("Evidence: none (no tool was called; treat numbers above with caution).")
    return "\n".join(lines)
