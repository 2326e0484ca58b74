"""Read an inference server's command line out of a Kubernetes container spec.

Engines are started in three common ways, all handled here:

- ``command: [vllm, serve]`` + ``args: [MODEL, --tensor-parallel-size=4, ...]`` (vLLM docs / Helm chart),
- ``args: ["--model-id", "$(MODEL_ID)", "--num-shard", "2"]`` with Kubernetes ``$(VAR)`` expansion,
- ``command: [sh, -c]`` + ``args: ["python3 -m sglang.launch_server --model-path ... && ..."]``.

``container_argv`` returns the engine's own argument list (after the executable) and where it came
from, so the patcher can write the change back in the same style. Nothing here talks to a cluster.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from servewise.domain import Engine

SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env"}
_SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
_K8S_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")

# Flags that take no value (a following token is a positional or the next flag).
BOOLEAN_FLAGS = {
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--trust-remote-code",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enforce-eager",
    "--enable-lora",
    "--disable-custom-all-reduce",
    "--enable-auto-tool-choice",
    "--disable-radix-cache",
    "--enable-torch-compile",
    "--disable-cuda-graph",
    "--sharded",
    "--disable-custom-kernels",
    "--json-output",
}


@dataclass(frozen=True)
class EngineArgv:
    """The engine's arguments and how to write them back.

    ``source`` is ``"args"`` when the engine arguments are ``container.args[offset:]``, ``"command"``
    when they sit in ``container.command[offset:]``, and ``"shell"`` when they are inside the shell
    script ``container.args[-1]`` (or ``command[-1]``), where ``segment`` is the engine's part of it.
    """

    engine: Engine
    tokens: tuple[str, ...]
    source: Literal["args", "command", "shell"]
    offset: int = 0
    shell_field: Literal["args", "command"] = "args"
    segment: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


def detect_engine(container: Mapping[str, Any]) -> Engine | None:
    """vLLM, TGI or SGLang from the image, command and args; None for anything else."""
    image = str(container.get("image", "")).lower()
    words = " ".join(str(x) for x in [*(container.get("command") or []), *(container.get("args") or [])])
    text = f"{image} {words}".lower()
    if "sglang" in text:
        return Engine.SGLANG
    if "text-generation-launcher" in text or "text-generation-inference" in text:
        return Engine.TGI
    if "vllm" in text:
        return Engine.VLLM
    return None


def expand_k8s_vars(token: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` substitution in command/args; unknown variables stay as written."""
    return _K8S_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), token)


def _expand_shell_vars(token: str, env: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        return m.group(0)

    return _SHELL_VAR.sub(repl, token)


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """Literal ``env`` values (valueFrom references are not readable here and are left out)."""
    out: dict[str, str] = {}
    for item in container.get("env") or []:
        if isinstance(item, Mapping) and "value" in item and item.get("name"):
            out[str(item["name"])] = str(item["value"])
    return out


def _engine_start(tokens: Sequence[str], engine: Engine) -> int | None:
    """Index of the first engine argument in ``tokens`` (after the executable), or None."""
    for i, tok in enumerate(tokens):
        low = tok.lower()
        base = low.rsplit("/", 1)[-1]
        if engine == Engine.VLLM:
            if base == "vllm" and i + 1 < len(tokens) and tokens[i + 1] == "serve":
                return i + 2
            if low in ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server"):
                return i + 1
        elif engine == Engine.TGI:
            if base == "text-generation-launcher":
                return i + 1
        elif engine == Engine.SGLANG:
            if low in ("sglang.launch_server", "sglang.launch_server.py") or base == "sglang.launch_server":
                return i + 1
            if base == "sglang" and i + 1 < len(tokens) and tokens[i + 1] == "serve":
                return i + 2
    return None


def _shell_segment(script: str, engine: Engine) -> tuple[str, list[str]] | None:
    """The part of a shell script that starts the engine, as text and as tokens."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    tokens = list(lexer)
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _SHELL_SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(tok)
    for seg in segments:
        start = _engine_start(seg, engine)
        if start is None:
            continue
        # Leading 'exec' and VAR=value assignments are not engine arguments; neither is the executable.
        text = _find_segment_text(script, seg)
        return text, seg
    return None


def _find_segment_text(script: str, seg: Sequence[str]) -> str:
    """Best-effort original text of a segment (used to write an edited segment back in place)."""
    parts = re.split(r"\s*(?:&&|\|\||;|\|)\s*", script.strip())
    for part in parts:
        try:
            if shlex.split(part) == list(seg):
                return part
        except ValueError:
            continue
    return shlex.join(seg)


def container_argv(container: Mapping[str, Any], engine: Engine) -> EngineArgv | None:
    """Engine arguments of ``container`` or None when the engine invocation cannot be located.

    When ``command`` is unset (the image entrypoint starts the engine, e.g. ``vllm/vllm-openai``),
    all of ``args`` are engine arguments.
    """
    env = container_env(container)
    command = [expand_k8s_vars(str(x), env) for x in container.get("command") or []]
    args = [expand_k8s_vars(str(x), env) for x in container.get("args") or []]

    # Shell form: [sh, -c, SCRIPT] split across command/args in any way.
    full = [*command, *args]
    if len(full) >= 3 and full[0] in SHELLS and "-c" in full[1:3]:
        script = full[-1]
        found = _shell_segment(_expand_shell_vars(script, env), engine)
        if found is None:
            return None
        text, seg = found
        start = _engine_start(seg, engine)
        assert start is not None
        shell_field: Literal["args", "command"] = "args" if args else "command"
        return EngineArgv(engine, tuple(seg[start:]), "shell", 0, shell_field, text, env)

    if command:
        start = _engine_start(command, engine)
        if start is not None:
            if start < len(command):
                return EngineArgv(engine, tuple(command[start:] + args), "command", start, env=env)
            return EngineArgv(engine, tuple(args), "args", 0, env=env)
        # e.g. command: [python3, -m, vllm.entrypoints.openai.api_server] matched above; a wrapper
        # script we do not know cannot be read safely.
        start = _engine_start(args, engine)
        if start is None:
            return None
        return EngineArgv(engine, tuple(args[start:]), "args", start, env=env)

    start = _engine_start(args, engine)
    if start is not None:
        return EngineArgv(engine, tuple(args[start:]), "args", start, env=env)
    return EngineArgv(engine, tuple(args), "args", 0, env=env)


@dataclass(frozen=True)
class ParsedFlags:
    positional: tuple[str, ...]
    positional_at: tuple[int, ...]
    values: Mapping[str, str | bool]
    # Flag -> (index of the flag token, inline '=' form) for the patcher.
    where: Mapping[str, tuple[int, bool]]


def parse_flags(tokens: Sequence[str]) -> ParsedFlags:
    """``--flag=value``, ``--flag value``, ``-tp 4`` and boolean flags; later repeats win."""
    positional: list[str] = []
    positional_at: list[int] = []
    values: dict[str, str | bool] = {}
    where: dict[str, tuple[int, bool]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") and len(tok) > 1 and not _is_number(tok):
            if "=" in tok:
                raw, _, value = tok.partition("=")
                name = normalize_flag(raw)
                values[name] = value
                where[name] = (i, True)
            elif normalize_flag(tok) in BOOLEAN_FLAGS:
                values[normalize_flag(tok)] = True
                where[normalize_flag(tok)] = (i, False)
            elif i + 1 < len(tokens) and not _looks_like_flag(tokens[i + 1]):
                values[normalize_flag(tok)] = tokens[i + 1]
                where[normalize_flag(tok)] = (i, False)
                i += 1
            else:
                values[normalize_flag(tok)] = True
                where[normalize_flag(tok)] = (i, False)
        else:
            positional.append(tok)
            positional_at.append(i)
        i += 1
    return ParsedFlags(tuple(positional), tuple(positional_at), values, where)


def normalize_flag(flag: str) -> str:
    """``--max_num_seqs`` and ``--max-num-seqs`` are the same flag (vLLM accepts both)."""
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _looks_like_flag(tok: str) -> bool:
    return tok.startswith("-") and len(tok) > 1 and not _is_number(tok)
