"""The analyst: findings and proposals in, a short note for approvers out.

With an LLM, the model writes the note from a JSON document of the findings and proposals (data,
never instructions; no tools: every number it may use is in the document). Offline, or when the
endpoint fails, ``offline_narrative`` writes the same sections from a template, deterministically.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from servewise.agents.llm import LLMClient
from servewise.agents.loop import load_prompt
from servewise.domain import Finding, Proposal, ServingConfig
from servewise.errors import LLMError, RetryableError

log = logging.getLogger(__name__)


def changed_knobs(before: ServingConfig, after: ServingConfig) -> list[str]:
    """``["replicas 3 -> 2", "quantization.weights bf16 -> fp8", ...]``: one entry per changed knob."""
    b, a = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    return [f"{k} {b.get(k)} -> {a.get(k)}" for k in {**b, **a} if b.get(k) != a.get(k)]


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def describe_proposal(p: Proposal, findings: list[Finding]) -> str:
    """One paragraph: why, what changes, predicted impact, validation, risk."""
    related = [f for f in findings if f.ref.key == p.ref.key and (not p.findings or f.kind in p.findings)]
    why = (
        "; ".join(
            f.summary
            + (
                " (" + ", ".join(f"{e.signal}={e.value:g}" for e in f.evidence if e.value is not None) + ")"
                if f.evidence
                else ""
            )
            for f in related
        )
        or p.summary
    )
    pr = p.predicted
    delta = pr.cost_per_hour_after - pr.cost_per_hour_before
    parts = [
        f"[{p.id}] {p.ref.key}: {p.summary}.",
        f"Why: {why}.",
        f"Change: {', '.join(changed_knobs(p.current, p.proposed)) or 'no knob changes'}.",
        f"Predicted: ${pr.cost_per_hour_before:.2f}/h -> ${pr.cost_per_hour_after:.2f}/h ({delta:+.2f}), "
        f"p99 TTFT {_ms(pr.ttft_p99_ms)}, p99 TPOT {_ms(pr.tpot_p99_ms)} (±{pr.uncertainty_pct:.0f}%).",
    ]
    if p.measured is not None:
        m = p.measured
        parts.append(
            f"Measured by a {m.validated_by}: p99 TTFT {_ms(m.ttft_p99_ms)}, p99 TPOT {_ms(m.tpot_p99_ms)}."
        )
    else:
        parts.append("Not benchmarked: the prediction is the performance model's.")
    parts.append(
        f"Risk: {p.risk}; rollback: {p.rollback or 'restore the previous spec (recorded at apply)'}."
    )
    return " ".join(parts)


def offline_narrative(findings: list[Finding], proposals: list[Proposal]) -> str:
    if not proposals:
        crit = sum(1 for f in findings if f.severity.value == "critical")
        return f"No change proposed. {len(findings)} finding(s), {crit} critical."
    return "\n".join(describe_proposal(p, findings) for p in proposals)


def narrate(findings: list[Finding], proposals: list[Proposal], llm: LLMClient | None) -> tuple[str, str]:
    """(narrative, author) where author is the model name or 'offline'."""
    if llm is None or not proposals:
        return offline_narrative(findings, proposals), "offline"
    document = {
        "findings": [f.model_dump(mode="json") for f in findings],
        "proposals": [p.model_dump(mode="json", exclude={"manifest_patch"}) for p in proposals],
    }
    messages = [
        {"role": "system", "content": load_prompt("analyst")},
        {
            "role": "user",
            "content": "Write the approver note for this document (JSON data):\n"
            + json.dumps({"servewise_document": document}, ensure_ascii=False),
        },
    ]
    try:
        out = llm.complete(messages)
    except (LLMError, RetryableError) as exc:
        log.warning("analyst LLM failed, using the offline narrative: %s", exc)
        return offline_narrative(findings, proposals), "offline"
    text = (out.content or "").strip()
    if not text:
        return offline_narrative(findings, proposals), "offline"
    invented = unsupported_numbers(text, document)
    if invented:
        log.warning("analyst note cites numbers not in its document %s: using the offline note", invented)
        return offline_narrative(findings, proposals), "offline"
    return text, llm.config.model


_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def _values(obj: Any) -> Iterator[float]:
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield float(obj)
    elif isinstance(obj, str):
        yield from _numbers(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(str(key))
            yield from _values(value)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _values(item)


def unsupported_numbers(text: str, document: Any) -> list[str]:
    """Numbers in ``text`` that no value of ``document`` supports (rounding allowed: 1 %, or 0.5 absolute).

    Differences of two document values (``saves $4.00/h``) count as supported. The analyst's note
    may only cite numbers its tools computed: a note that cites others is not shown.
    """
    values = sorted(set(_values(document)))
    derived = set(values) | {
        round(abs(a - b), 6) for i, a in enumerate(values) for b in values[i + 1 : i + 60]
    }
    out = []
    for x in _numbers(text):
        if not any(abs(abs(x) - v) <= max(0.5, 0.01 * abs(v)) for v in derived):
            out.append(f"{x:g}")
    return out
