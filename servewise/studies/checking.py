"""Checks a study against the catalog and its own grid before any point is evaluated."""

from __future__ import annotations

from typing import Any

from servewise.domain import Engine, Quantization
from servewise.domain.quantization import Dtype
from servewise.errors import InputError, UnknownIdError
from servewise.studies.study_file import (
    CONFIG_AXES,
    KNOWN_AXES,
    LOAD_AXES,
    METRICS,
    Constraint,
    Study,
)

_POLICIES = ("single", "shift", "cascade")
_POSITIVE_INTS = {
    "tensor_parallel",
    "max_num_seqs",
    "max_num_batched_tokens",
    "concurrency",
    "input_len",
    "output_len",
    "cascade_threshold",
}
_POSITIVE_NUMBERS = {"arrival_rate_per_s", "gpu_memory_utilization", "quality_floor", "target_utilization"}
_FRACTION_KNOBS = {"gpu_memory_utilization", "target_utilization"}


def check_study(study: Study) -> None:
    """Raise ``InputError`` naming the field for anything that would fail every point or make no sense."""
    spec, src = study.spec, study.source
    cat = study.catalog()
    values = {**{k: [v] for k, v in spec.fixed.items()}, **spec.axes}
    for name in spec.fixed:
        if name not in KNOWN_AXES:
            raise InputError(f"unknown axis {name!r}", source=src, field=f"fixed.{name}")
    for name, vals in values.items():
        where = f"axes.{name}" if name in spec.axes else f"fixed.{name}"
        for i, v in enumerate(vals):
            _check_value(study, name, v, f"{where}[{i}]" if name in spec.axes else where, cat)
    if "model" not in values:
        raise InputError("a study needs a model (axes.model or fixed.model)", source=src, field="axes.model")
    if "gpu" not in values:
        raise InputError("a study needs a gpu (axes.gpu or fixed.gpu)", source=src, field="axes.gpu")
    known_metrics = METRICS[spec.evaluator]
    for field, metric in _metric_refs(study):
        if metric not in known_metrics:
            raise InputError(
                f"unknown metric {metric!r} for the {spec.evaluator} evaluator; known: {', '.join(known_metrics)}",
                source=src,
                field=field,
            )
    _check_metric_ranges(study)
    if spec.report.compare_by and spec.report.compare_by not in values:
        raise InputError(
            f"{spec.report.compare_by!r} is not an axis of this study", source=src, field="report.compare_by"
        )
    if spec.report.split_by and spec.report.split_by not in values:
        raise InputError(
            f"{spec.report.split_by!r} is not an axis of this study", source=src, field="report.split_by"
        )
    if spec.sampling.method in ("random", "sobol", "optuna") and spec.sampling.n is None:
        raise InputError(f"{spec.sampling.method} sampling needs n", source=src, field="sampling.n")
    if spec.sampling.method == "optuna" and spec.objective is None:
        raise InputError("optuna sampling searches for an objective: set one", source=src, field="objective")
    if (
        spec.evaluator == "simulate"
        and "arrival_rate_per_s" not in values
        and not any(w.arrival_rate_per_s or w.concurrency or w.trace for w in spec.workloads.values())
    ):
        raise InputError(
            "the simulate evaluator needs arrival_rate_per_s (axis) or a workload with a rate",
            source=src,
            field="axes.arrival_rate_per_s",
        )
    if spec.evaluator == "policy":
        if spec.policy is None:
            raise InputError("the policy evaluator needs a policy: section", source=src, field="policy")
        if "policy" not in values or "small_model" not in values:
            raise InputError(
                "the policy evaluator needs policy and small_model axes", source=src, field="axes"
            )
    from servewise.studies.sampling import grid_size, make_space

    space = make_space(study)
    if grid_size(space) == 0:
        raise InputError("the grid is empty", source=src, field="axes")
    _check_axis_constraints(study, space)
    _check_size(study, space)


MAX_POINTS_ENV = "SERVEWISE_MAX_STUDY_POINTS"
MAX_POINTS = 1_000_000  # ~1 min and ~1.6 GB on a laptop core; 10x that would not fit in memory


def _check_size(study: Study, space: Any) -> None:
    """Refuse a study with more points than ``MAX_POINTS`` (``SERVEWISE_MAX_STUDY_POINTS``) before
    any work: every point is held in memory, and a 4e8-point grid was killed for memory after a
    minute with no word of why."""
    import math
    import os

    spec = study.spec
    text = os.environ.get(MAX_POINTS_ENV) or str(MAX_POINTS)
    try:
        limit = int(float(text))
    except ValueError as exc:
        raise InputError(f"not a number of points: {text!r}", field=MAX_POINTS_ENV) from exc
    if spec.sampling.method == "grid":  # optuna asks n trials of the space; it never builds the grid
        from servewise.studies.sampling import allowed_values

        points = math.prod(int(a.sum()) for a in allowed_values(study, space))  # Python ints: no overflow
        what = f"its grid has {points:,} points (after axis constraints)"
        field = "axes"
    else:
        points = spec.sampling.n or 1
        what = f"it samples {points:,} points"
        field = "sampling.n"
    if points > limit:
        raise InputError(
            f"{what}, more than {limit:,}: sample it (sampling: {{method: sobol, n: ...}}), narrow the axes,"
            f" or raise {MAX_POINTS_ENV}",
            source=study.source,
            field=field,
        )


def _metric_refs(study: Study) -> list[tuple[str, str]]:
    spec = study.spec
    refs = [(f"metrics[{i}]", m) for i, m in enumerate(spec.metrics)]
    if spec.objective:
        refs.append(("objective.metric", spec.objective.metric))
    for i, text in enumerate(spec.constraints):
        try:
            c = Constraint.parse(text)
        except ValueError as exc:
            raise InputError(str(exc), source=study.source, field=f"constraints[{i}]") from exc
        if c.field not in KNOWN_AXES:
            refs.append((f"constraints[{i}]", c.field))
    if spec.report.pareto:
        refs += [(f"report.pareto[{i}]", m) for i, m in enumerate(spec.report.pareto)]
    refs += [(f"report.table_metrics[{i}]", m) for i, m in enumerate(spec.report.table_metrics)]
    return refs


_FRACTIONS = {"slo_attainment", "kv_usage_peak", "share_small"}


def _check_metric_ranges(study: Study) -> None:
    """A metric constraint outside the metric's range (every metric >= 0; fractions <= 1) admits nothing."""
    for i, text in enumerate(study.spec.constraints):
        c = Constraint.parse(text)
        if c.field in KNOWN_AXES or not isinstance(c.value, float):
            continue
        hi = 1.0 if c.field in _FRACTIONS else float("inf")
        empty = (c.op in ("<", "<=") and (c.value < 0 or (c.value == 0 and c.op == "<"))) or (
            c.op in (">", ">=") and (c.value > hi or (c.value == hi and c.op == ">"))
        )
        if empty:
            raise InputError(
                f"no point can satisfy '{c}': {c.field} is never below 0"
                + (" or above 1" if c.field in _FRACTIONS else ""),
                source=study.source,
                field=f"constraints[{i}]",
            )


def _check_axis_constraints(study: Study, space: Any) -> None:
    """Each axis constraint alone, then all together, must leave at least one grid point."""
    import numpy as np

    from servewise.studies.sampling import axis_mask

    masks = []
    for i, text in enumerate(study.spec.constraints):
        c = Constraint.parse(text)
        if c.field not in KNOWN_AXES:
            continue
        if c.field not in space.names:
            raise InputError(
                f"{c.field!r} is not an axis of this study", source=study.source, field=f"constraints[{i}]"
            )
        mask = axis_mask(space, c)
        if not mask.any():
            raise InputError(
                f"no value of {c.field} satisfies '{c}' (values: {space.values[space.names.index(c.field)]})",
                source=study.source,
                field=f"constraints[{i}]",
            )
        masks.append((space.names.index(c.field), mask))
    by_axis: dict[int, np.ndarray] = {}
    for axis, mask in masks:
        by_axis[axis] = by_axis.get(axis, np.ones_like(mask)) & mask
    for axis, mask in by_axis.items():
        if not mask.any():
            raise InputError(
                f"the constraints on {space.names[axis]} together exclude every value",
                source=study.source,
                field="constraints",
            )


def _check_value(study: Study, name: str, value: Any, field: str, cat: Any) -> None:
    src = study.source
    try:
        if name == "model":
            cat.resolve_model(str(value))
        elif name == "small_model":
            model, _, weights = str(value).partition(":")
            cat.resolve_model(model)
            if weights:
                Quantization(weights=weights)
        elif name == "gpu":
            cat.gpu(str(value))
        elif name in ("weights", "kv_cache"):
            Dtype.parse(str(value))
        elif name == "engine":
            Engine(str(value).lower())
        elif name == "workload":
            if str(value) not in study.spec.workloads:
                known = ", ".join(study.spec.workloads) or "none defined"
                raise InputError(f"unknown workload {value!r} (workloads: {known})", source=src, field=field)
        elif name == "policy":
            if value not in _POLICIES:
                raise InputError(
                    f"unknown policy {value!r}; expected one of {_POLICIES}", source=src, field=field
                )
        elif name in _POSITIVE_INTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"must be a positive integer, got {value!r}", source=src, field=field)
        elif name in _POSITIVE_NUMBERS and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise InputError(f"must be a positive number, got {value!r}", source=src, field=field)
        elif name in _FRACTION_KNOBS and value > 1:
            raise InputError(f"must be a fraction in (0, 1], got {value!r}", source=src, field=field)
    except UnknownIdError as exc:
        raise UnknownIdError(str(exc), source=src, field=field) from exc
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc), source=src, field=field) from exc
    if name not in CONFIG_AXES and name not in LOAD_AXES and study.spec.evaluator != "policy":
        raise InputError(f"axis {name!r} only applies to the policy evaluator", source=src, field=field)
