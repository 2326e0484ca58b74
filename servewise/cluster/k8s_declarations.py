"""What a workload's owners declare in its annotations: the SLO it is held to and the load it serves.

The cluster knows what a workload runs, not what it must achieve: the optimizer needs an SLO and the
request shape (prompt and output lengths; the rate comes from telemetry when there is any). Both are
JSON annotations on the workload, kept in Git with its manifest:

    servewise.io/slo: '{"ttft_p99_ms": 1500, "tpot_p99_ms": 80}'
    servewise.io/workload: '{"input_len": 1024, "output_len": 256, "arrival_rate_per_s": 4}'

``input_len`` / ``output_len`` are a mean length (a number) or a full ``LengthDistribution``
(``{"kind": "normal", "mean": 2000, "std": 400}``); the rate is the declared peak, used when
Prometheus has none. A malformed annotation makes the workload unparsed, with the reason naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from servewise.domain import SLO, LengthDistribution, Workload

SLO_ANNOTATION = "servewise.io/slo"
WORKLOAD_ANNOTATION = "servewise.io/workload"


class BadDeclaration(ValueError):
    """An annotation that is not the JSON its key promises; the message names the annotation."""


def _json(annotations: Mapping[str, str], key: str) -> dict[str, Any] | None:
    text = annotations.get(key)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadDeclaration(f"annotation {key} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadDeclaration(f"annotation {key} must be a JSON object, got {type(value).__name__}")
    return value


def _known_keys(key: str, data: Mapping[str, Any], model: type[SLO] | type[Workload]) -> None:
    unknown = sorted(set(data) - set(model.model_fields))
    if unknown:
        raise BadDeclaration(
            f"annotation {key}: unknown field(s) {', '.join(unknown)}; known: {', '.join(model.model_fields)}"
        )


def _validation(key: str, exc: ValidationError) -> BadDeclaration:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or key}: {e['msg']}" for e in exc.errors())
    return BadDeclaration(f"annotation {key}: {problems}")


def declared_slo(annotations: Mapping[str, str]) -> SLO | None:
    data = _json(annotations, SLO_ANNOTATION)
    if data is None:
        return None
    _known_keys(SLO_ANNOTATION, data, SLO)
    try:
        slo = SLO.model_validate(data)
    except ValidationError as exc:
        raise _validation(SLO_ANNOTATION, exc) from exc
    if not slo.objectives():
        raise BadDeclaration(f"annotation {SLO_ANNOTATION} sets no objective")
    return slo


def declared_workload(annotations: Mapping[str, str]) -> Workload | None:
    data = _json(annotations, WORKLOAD_ANNOTATION)
    if data is None:
        return None
    _known_keys(WORKLOAD_ANNOTATION, data, Workload)
    for key in ("input_len", "output_len"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            data[key] = LengthDistribution.fixed(int(value)).model_dump()
    try:
        return Workload.model_validate(data)
    except ValidationError as exc:
        raise _validation(WORKLOAD_ANNOTATION, exc) from exc
