"""One LLM client for any OpenAI-compatible endpoint, with bounded retries and usage accounting.

Configuration comes from the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``SERVEWISE_MODEL``) over an optional ``$SERVEWISE_HOME/llm.yaml``. With no model configured the
product runs offline (``LLMConfig.load()`` returns ``None``) and agents use the offline policy.

Library errors are translated at this seam: 429, 5xx, timeouts and connection errors become
``BackendUnavailableError`` (retried with exponential backoff, a bounded number of times); other
API errors become ``LLMError``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from servewise.errors import BackendUnavailableError, InputError, LLMError
from servewise.settings import get_settings

log = logging.getLogger(__name__)


class LLMConfig(BaseModel):
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL ending in /v1")
    api_key: str = "not-needed"
    model: str
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=10, description="tries per request, retries included")
    retry_wait_s: float = Field(default=1.0, ge=0, description="first backoff; doubles up to 30 s")
    stream: bool = False
    temperature: float = Field(default=0.0, ge=0, le=2)
    price_input_per_mtok: float = Field(default=0.0, ge=0, description="USD per million prompt tokens")
    price_output_per_mtok: float = Field(default=0.0, ge=0, description="USD per million completion tokens")

    @classmethod
    def load(cls, *, home: Path | None = None) -> LLMConfig | None:
        """Env over ``$SERVEWISE_HOME/llm.yaml``; ``None`` means offline mode (no model set)."""
        path = (home or get_settings().home) / "llm.yaml"
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise InputError(f"not valid YAML: {exc}", source=str(path)) from exc
            if not isinstance(loaded, dict):
                raise InputError("expected a mapping of LLM settings", source=str(path))
            data.update(loaded)
        env = {"base_url": "OPENAI_BASE_URL", "api_key": "OPENAI_API_KEY", "model": "SERVEWISE_MODEL"}
        for key, var in env.items():
            if os.environ.get(var):
                data[key] = os.environ[var]
        if not data.get("model"):
            if data.get("base_url") or os.environ.get("OPENAI_API_KEY"):
                log.info("OPENAI_* is set but SERVEWISE_MODEL is not: running offline")
            return None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InputError(
                f"invalid LLM settings: {exc}", source=str(path) if path.is_file() else "environment"
            ) from exc


@dataclass
class Usage:
    """Tokens and dollars spent by one client (one run)."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclass(frozen=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str  # raw JSON text from the model; validated by the registry


@dataclass(frozen=True)
class Completion:
    content: str | None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    finish_reason: str | None = None

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return msg


@dataclass
class LLMClient:
    config: LLMConfig
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        import openai  # imported on first use: commands that never call a model start faster

        self._client = openai.OpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout_s,
            max_retries=0,  # retries are ours (tenacity), bounded and counted
        )

    @property
    def endpoint(self) -> str:
        return self.config.base_url or "https://api.openai.com/v1"

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """One chat completion (streamed when configured or when ``on_text`` is given)."""
        stream = self.config.stream or on_text is not None
        retrying = Retrying(
            retry=retry_if_exception_type(BackendUnavailableError),
            stop=stop_after_attempt(self.config.max_attempts),
            wait=wait_exponential(multiplier=self.config.retry_wait_s, max=30),
            reraise=True,
            before_sleep=self._count_retry,
        )
        for attempt in retrying:
            with attempt:
                return self._once(messages, tools, stream, on_text)
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: Any) -> None:
        self.usage.retries += 1
        log.warning("LLM request failed (%s); retry %d", state.outcome.exception(), state.attempt_number)

    def _once(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        stream: bool,
        on_text: Callable[[str], None] | None,
    ) -> Completion:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
        }
        if tools:
            kwargs["tools"] = tools
        self.usage.requests += 1
        try:
            if stream:
                return self._streamed(kwargs, on_text)
            resp = self._client.chat.completions.create(**kwargs)
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise BackendUnavailableError(
                f"LLM endpoint {self.endpoint}: {type(exc).__name__}: {exc}"
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise BackendUnavailableError(
                    f"LLM endpoint {self.endpoint} answered {exc.status_code}: {exc.message}"
                ) from exc
            raise LLMError(f"LLM endpoint {self.endpoint} answered {exc.status_code}: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"LLM endpoint {self.endpoint}: {exc}") from exc
        if resp.usage is not None:
            self._account(resp.usage.prompt_tokens, resp.usage.completion_tokens)
        if not resp.choices:
            raise LLMError(f"LLM endpoint {self.endpoint} returned no choices")
        choice = resp.choices[0]
        calls = tuple(
            ToolCallRequest(c.id, c.function.name, c.function.arguments or "")
            for c in (choice.message.tool_calls or [])
            if c.type == "function"
        )
        return Completion(choice.message.content, calls, choice.finish_reason)

    def _streamed(self, kwargs: dict[str, Any], on_text: Callable[[str], None] | None) -> Completion:
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: str | None = None
        events = self._client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        for event in events:
            if event.usage is not None:
                self._account(event.usage.prompt_tokens, event.usage.completion_tokens)
            for choice in event.choices:
                delta = choice.delta
                if delta.content:
                    parts.append(delta.content)
                    if on_text is not None:
                        on_text(delta.content)
                for tc in delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
                finish = choice.finish_reason or finish
        tool_calls = tuple(
            ToolCallRequest(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())
        )
        return Completion("".join(parts) if parts else None, tool_calls, finish)

    def _account(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.cost_usd += (
            prompt_tokens * self.config.price_input_per_mtok
            + completion_tokens * self.config.price_output_per_mtok
        ) / 1e6
