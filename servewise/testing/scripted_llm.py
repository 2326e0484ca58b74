"""A scripted OpenAI-compatible chat server: the model double for agent tests.

It is a real HTTP server on 127.0.0.1 speaking ``POST /v1/chat/completions`` (JSON and SSE
streaming, tool calls, usage) so the agents' real wire path (the ``openai`` client, retries,
stream assembly) is what tests exercise. Each request consumes the next scripted turn::

    with ScriptedLLM([tool_call("list_fleet", {}), text("two deployments")]) as llm:
        client = LLMClient(LLMConfig(base_url=llm.base_url, api_key="x", model="scripted"))

A turn is ``text(...)``, ``tool_call(...)`` / ``tool_calls(...)`` or ``http_error(429)``; a
callable ``responder(request_json) -> Turn`` answers every request instead (a model that loops).
Received request bodies are kept in ``requests`` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    arguments: str  # raw JSON text, possibly invalid on purpose


@dataclass(frozen=True)
class Turn:
    """One scripted reply: a message (text and/or tool calls) or an HTTP error."""

    content: str | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    status: int = 200
    error_message: str = ""
    delay_s: float = 0.0


def text(content: str) -> Turn:
    return Turn(content=content)


def tool_call(name: str, arguments: dict[str, Any] | str) -> Turn:
    return tool_calls((name, arguments))


def tool_calls(*calls: tuple[str, dict[str, Any] | str]) -> Turn:
    return Turn(
        tool_calls=tuple(
            ScriptedToolCall(name, args if isinstance(args, str) else json.dumps(args))
            for name, args in calls
        )
    )


def http_error(status: int, message: str = "scripted failure") -> Turn:
    return Turn(status=status, error_message=message)


Responder = Callable[[dict[str, Any]], Turn]


@dataclass
class ScriptedLLM:
    """The server. Use as a context manager, or ``start()`` / ``stop()``."""

    turns: Iterable[Turn] | Responder = ()
    model: str = "scripted"
    chunk_chars: int = 7  # streaming splits content and arguments into pieces this long
    requests: list[dict[str, Any]] = field(default_factory=list)
    _queue: list[Turn] = field(default_factory=list)
    _responder: Responder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _ids: int = 0

    def __post_init__(self) -> None:
        if callable(self.turns):
            self._responder = self.turns
        else:
            self._queue = list(self.turns)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ScriptedLLM:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-llm",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("ScriptedLLM is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def push(self, *turns: Turn) -> None:
        with self._lock:
            self._queue.extend(turns)

    # -- scripting ------------------------------------------------------------------------------
    def _next(self, body: dict[str, Any]) -> Turn:
        with self._lock:
            self.requests.append(body)
            if self._responder is not None:
                return self._responder(body)
            if not self._queue:
                return http_error(400, "scripted model: script exhausted (more requests than turns)")
            return self._queue.pop(0)

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}-{self._ids}"


def _count_tokens(obj: Any) -> int:
    """A rough but deterministic token count (4 characters per token)."""
    return max(1, len(json.dumps(obj)) // 4)


def _make_handler(server: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(
                    400, {"error": {"message": "request body is not JSON", "type": "invalid_request"}}
                )
                return
            turn = server._next(body)
            if turn.delay_s:
                time.sleep(turn.delay_s)
            if turn.status != 200:
                self._send_json(
                    turn.status,
                    {"error": {"message": turn.error_message, "type": "scripted", "code": turn.status}},
                )
                return
            calls = [
                {
                    "id": server._new_id("call"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in turn.tool_calls
            ]
            usage = {
                "prompt_tokens": _count_tokens(body.get("messages", [])),
                "completion_tokens": _count_tokens([turn.content, [c.arguments for c in turn.tool_calls]]),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            finish = "tool_calls" if calls else "stop"
            cid = server._new_id("chatcmpl")
            if body.get("stream"):
                self._stream(
                    cid,
                    turn,
                    calls,
                    finish,
                    usage,
                    bool((body.get("stream_options") or {}).get("include_usage")),
                )
                return
            message: dict[str, Any] = {"role": "assistant", "content": turn.content}
            if calls:
                message["tool_calls"] = calls
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                },
            )

        def _send_json(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def _stream(
            self,
            cid: str,
            turn: Turn,
            calls: list[dict[str, Any]],
            finish: str,
            usage: dict[str, int],
            include_usage: bool,
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> None:
                doc = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": server.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }
                self.wfile.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
                self.wfile.flush()

            n = server.chunk_chars
            chunk({"role": "assistant", "content": ""})
            for i in range(0, len(turn.content or ""), n):
                chunk({"content": (turn.content or "")[i : i + n]})
            for index, call in enumerate(calls):
                fn = call["function"]
                head = {
                    "index": index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": ""},
                }
                chunk({"tool_calls": [head]})
                for i in range(0, len(fn["arguments"]), n):
                    chunk(
                        {
                            "tool_calls": [
                                {"index": index, "function": {"arguments": fn["arguments"][i : i + n]}}
                            ]
                        }
                    )
            chunk({}, finish)
            if include_usage:
                self.wfile.write(
                    b"data: "
                    + json.dumps(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": server.model,
                            "choices": [],
                            "usage": usage,
                        }
                    ).encode()
                    + b"\n\n"
                )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler
