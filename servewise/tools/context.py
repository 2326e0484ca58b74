"""The runtime a tool call sees: which cluster, which telemetry, which catalog.

Tools take exactly one pydantic argument (what the model or caller chose); the environment they
act on is set once per run with ``use_context(...)`` and read with ``current_context()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from servewise.cluster.backend import ClusterBackend
from servewise.telemetry.source import TelemetrySource


@dataclass
class ToolContext:
    cluster: ClusterBackend
    telemetry: TelemetrySource
    extras: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[ToolContext | None] = ContextVar("servewise_tool_context", default=None)


@contextmanager
def use_context(ctx: ToolContext) -> Iterator[ToolContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def current_context() -> ToolContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no ToolContext: wrap tool calls in servewise.tools.context.use_context(...)")
    return ctx
