"""One registry of typed agent tools.

A tool is a plain function taking one pydantic model and returning one pydantic model. The
registry validates arguments (JSON from an LLM or a dict from code), runs the tool, and turns
failures into a structured ``ToolError`` result instead of raising, so an agent loop can hand the
error back to the model. ``openai_schemas()`` exports every tool as an OpenAI function schema.
``mutates=True`` declares a tool that changes a cluster: agents never get those; only the
workflow's apply node calls them, after a recorded approval.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from servewise.errors import ServewiseError

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class ToolError(BaseModel):
    """What a failing tool returns to its caller (and to the model)."""

    tool: str
    error: str
    kind: str = "error"  # 'invalid_arguments' | 'unknown_tool' | 'error'
    details: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    func: Callable[[Any], BaseModel]
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    mutates: bool = False

    def openai_schema(self) -> dict[str, Any]:
        params = self.input_model.model_json_schema()
        params.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        func: Callable[[In], Out],
        *,
        name: str | None = None,
        description: str | None = None,
        mutates: bool = False,
    ) -> Tool:
        hints = func.__annotations__
        params = [v for k, v in hints.items() if k != "return"]
        if len(params) != 1:
            raise TypeError(f"tool {func.__name__} must take exactly one pydantic argument")
        input_model, output_model = _resolve(func, params[0]), _resolve(func, hints["return"])
        tool = Tool(
            name=name or func.__name__,
            description=(description or func.__doc__ or "").strip(),
            func=func,
            input_model=input_model,
            output_model=output_model,
            mutates=mutates,
        )
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name} registered twice")
        self._tools[tool.name] = tool
        return tool

    def tool(
        self, *, name: str | None = None, mutates: bool = False
    ) -> Callable[[Callable[[In], Out]], Callable[[In], Out]]:
        """Decorator form: ``@registry.tool()``."""

        def wrap(func: Callable[[In], Out]) -> Callable[[In], Out]:
            self.register(func, name=name, mutates=mutates)
            return func

        return wrap

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self, *, include_mutating: bool = False) -> list[str]:
        return sorted(n for n, t in self._tools.items() if include_mutating or not t.mutates)

    def openai_schemas(self, *, include_mutating: bool = False) -> list[dict[str, Any]]:
        return [self._tools[n].openai_schema() for n in self.names(include_mutating=include_mutating)]

    def call(self, name: str, arguments: str | dict[str, Any] | BaseModel) -> BaseModel:
        """Run a tool; never raises for bad arguments or tool failures (returns ``ToolError``)."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolError(
                tool=name, kind="unknown_tool", error=f"no tool named {name!r}; known: {self.names()}"
            )
        try:
            if isinstance(arguments, BaseModel):
                args = tool.input_model.model_validate(arguments.model_dump())
            elif isinstance(arguments, str):
                args = tool.input_model.model_validate_json(arguments or "{}")
            else:
                args = tool.input_model.model_validate(arguments)
        except ValidationError as exc:
            details = json.loads(exc.json(include_url=False))
            return ToolError(tool=name, kind="invalid_arguments", error=_summarize(exc), details=details)
        try:
            return tool.func(args)
        except (ServewiseError, ValueError) as exc:
            return ToolError(tool=name, error=f"{type(exc).__name__}: {exc}")


def _summarize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


def _resolve(func: Callable[..., Any], hint: Any) -> type[BaseModel]:
    if isinstance(hint, str):
        hint = eval(
            hint, func.__globals__
        )  # annotations are strings under `from __future__ import annotations`
    if not (isinstance(hint, type) and issubclass(hint, BaseModel)):
        raise TypeError(f"tool {func.__name__}: arguments and result must be pydantic models, got {hint!r}")
    return hint


# The product's default registry; tool modules register into it on import.
registry = ToolRegistry()
