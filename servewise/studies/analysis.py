"""Findings computed from a study's rows: feasibility, the top pick, Pareto fronts, sensitivity."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servewise.studies.evaluating import Row
from servewise.studies.searching import feasible
from servewise.studies.study_file import HIGHER_IS_BETTER, KNOWN_AXES, Objective, Study

DEFAULT_OBJECTIVE = {
    "analytical": "cost_per_1m_output_tokens",
    "simulate": "cost_per_1m_output_tokens",
    "policy": "cost_per_day",
}
DEFAULT_PARETO = {
    "analytical": ("tpot_ms", "cost_per_1m_output_tokens"),
    "simulate": ("tpot_p99_ms", "cost_per_1m_output_tokens"),
    "policy": ("cost_per_day", "mean_quality"),
}


def objective_of(study: Study) -> Objective:
    return study.spec.objective or Objective(metric=DEFAULT_OBJECTIVE[study.spec.evaluator])


def sign(metric: str) -> float:
    return -1.0 if metric in HIGHER_IS_BETTER else 1.0


def axis_names(study: Study) -> list[str]:
    return [n for n in study.spec.axes if n in KNOWN_AXES]


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def pareto_front(rows: list[Row], x: str, y: str) -> list[Row]:
    """Rows not dominated on (x, y), each metric in its better direction; sorted by x."""
    pts = [
        (sign(x) * vx, sign(y) * vy, r)
        for r in rows
        if (vx := _num(r.get(x))) is not None and (vy := _num(r.get(y))) is not None
    ]
    pts.sort(key=lambda p: (p[0], p[1]))
    front, best_y = [], math.inf
    for _px, py, r in pts:
        if py < best_y:
            front.append(r)
            best_y = py
    return front


@dataclass
class Findings:
    total: int
    failed: int
    feasible: int
    failure_reasons: list[tuple[str, int]]
    objective: Objective
    top: Row | None
    runner_up: Row | None
    best_by: dict[str, dict[Any, Row]] = field(default_factory=dict)
    front: list[Row] = field(default_factory=list)
    pareto: tuple[str, str] = ("", "")
    sensitivity: list[tuple[str, float, float, Any, Any]] = field(default_factory=list)


def analyze(study: Study, rows: list[Row]) -> Findings:
    ok = [r for r in rows if feasible(study, r)]
    obj = objective_of(study)
    key = obj.metric
    ranked = sorted((r for r in ok if _num(r.get(key)) is not None), key=lambda r: obj.sign * float(r[key]))
    reasons = Counter(_reason(r["error"]) for r in rows if r.get("error"))
    pareto = study.spec.report.pareto or DEFAULT_PARETO[study.spec.evaluator]
    findings = Findings(
        total=len(rows),
        failed=sum(1 for r in rows if r.get("error")),
        feasible=len(ok),
        failure_reasons=reasons.most_common(5),
        objective=obj,
        top=ranked[0] if ranked else None,
        runner_up=ranked[1] if len(ranked) > 1 else None,
        front=pareto_front(ok, *pareto),
        pareto=(pareto[0], pareto[1]),
    )
    compare = study.spec.report.compare_by or ("gpu" if "gpu" in study.spec.axes else None)
    split = study.spec.report.split_by
    if compare is not None:
        for part in sorted({r.get(split) for r in ranked}, key=str) if split else [None]:
            best: dict[Any, Row] = {}
            for r in ranked:  # ranked best first, so the first row seen per value is its best
                if split is None or r.get(split) == part:
                    best.setdefault(r[compare], r)
            title = f"`{compare}`" + (f" for {split}={part}" if split else "")
            findings.best_by[title] = best
    if findings.top is not None:
        findings.sensitivity = sensitivity(study, [r for r in rows if not r.get("error")], findings.top, key)
    return findings


def sensitivity(
    study: Study, rows: list[Row], top: Row, metric: str
) -> list[tuple[str, float, float, Any, Any]]:
    """Per axis: the objective's range over rows equal to the top pick on every other axis.

    Returns ``(axis, lowest, highest, value at lowest, value at highest)``, widest range first.
    """
    axes = axis_names(study)
    out = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        same = [
            r for r in rows if all(r.get(a) == top.get(a) for a in others) and _num(r.get(metric)) is not None
        ]
        if len(same) < 2:
            continue
        vals = np.array([float(r[metric]) for r in same])
        lo, hi = int(vals.argmin()), int(vals.argmax())
        out.append((axis, float(vals[lo]), float(vals[hi]), same[lo][axis], same[hi][axis]))
    out.sort(key=lambda t: -(t[2] - t[1]) / max(abs(t[1]), 1e-12))
    return out


def _reason(error: str) -> str:
    """The kind of failure without the per-point numbers."""
    kind, _, detail = error.partition(":")
    detail = re.sub(r"(?<![A-Za-z0-9_.\-])\d+(?:\.\d+)?", "#", detail.split(";")[0]).strip()
    head = f"{kind}: {detail}" if detail else kind
    return head if len(head) < 110 else head[:107] + "..."
