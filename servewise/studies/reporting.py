"""A study's self-contained report folder: report.md, PNG plots, data, the study file, versions.

Every sentence under "Findings" is filled from the rows (``analysis.analyze``); nothing in it is
written by hand. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from servewise.studies.analysis import Findings, analyze, axis_names, pareto_front
from servewise.studies.evaluating import Row, study_catalog
from servewise.studies.study_file import Study

METHOD = {
    "analytical": "the calibrated analytical model (closed-loop steady state of one replica, vectorized)",
    "simulate": "the discrete-event simulator of continuous batching (one replica per point)",
    "policy": "a diurnal day of autoscaled pools, each slot simulated with the discrete-event simulator",
}
MODEL_LIMITS = [
    "Predictions come from servewise's performance model, calibrated on public measurements; they are "
    "estimates to rank options, to be confirmed with a benchmark before a fleet change.",
    "Prices are list prices from the hardware catalog (see docs/catalogs.md); negotiated prices move "
    "cost rankings.",
]


def versions(study: Study) -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    from servewise.perf.efficiency import CALIBRATION_FILE

    calibration = (
        hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest()[:12] if CALIBRATION_FILE.exists() else None
    )
    return {
        "servewise": ver("servewise"),
        "catalog": study_catalog(study).version,
        "calibration": calibration,
        "study_fingerprint": study.fingerprint,
        "python": platform.python_version(),
        **{pkg: ver(pkg) for pkg in ("numpy", "pyarrow", "optuna", "ray", "matplotlib")},
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _describe(study: Study, row: Row) -> str:
    return ", ".join(f"{a}={_fmt(row[a])}" for a in axis_names(study))


def _quality_stand_ins(study: Study, rows: list[Row]) -> list[str]:
    """Weights variants whose quality (``quality``, or a policy study's ``mean_quality`` of its
    large and small models) is another variant's published score (none was published for them: an
    FP8 or AWQ point scored as BF16 makes quantization look free)."""
    from servewise.perf.catalog import quality_score
    from servewise.studies.evaluating import serving_config

    first = rows[0] if rows else {}
    if "quality" not in first and "mean_quality" not in first:
        return []
    keys = ["model", "small_model"] if "mean_quality" in first else ["model"]
    cat, seen, notes = study_catalog(study), set(), []
    tried: set[tuple[Any, ...]] = set()
    for row in rows:
        for model_key in keys:
            key = (model_key, row.get(model_key), row.get("weights"))
            if key in tried or row.get(model_key) is None:  # a million-point study has few pairs
                continue
            tried.add(key)
            try:
                cfg = serving_config(row, cat, model_key=model_key)
            except Exception:  # noqa: BLE001 - a point that could not be configured has its own error
                continue
            asked = cfg.quantization.label.split("+", 1)[0]
            if (cfg.model, asked) in seen:
                continue
            seen.add((cfg.model, asked))
            score, label = quality_score(cat.model(cfg.model), cfg.quantization)
            if score is not None and label != asked:
                notes.append(
                    f"`quality` of {cfg.model} {asked} is its published {label} score ({score:g}): none was published for {asked}."
                )
    return notes


def write_report(study: Study, out: Path, rows: list[Row], *, backend: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(study.text)
    vers = versions(study)
    (out / "versions.json").write_text(json.dumps(vers, indent=2) + "\n")
    f = analyze(study, rows)
    plots = _plots(study, out, rows, f)
    (out / "report.md").write_text(_markdown(study, rows, f, vers, plots, backend))
    return out / "report.md"


def _markdown(
    study: Study, rows: list[Row], f: Findings, vers: dict[str, Any], plots: list[str], backend: str
) -> str:
    spec = study.spec
    obj = f.objective
    lines = [f"# Study: {spec.name}", "", "## Question", "", spec.question.strip(), "", "## Method", ""]
    lines.append(
        f"{f.total} points ({spec.sampling.method} sampling, seed {spec.seed}) evaluated with "
        f"{METHOD[spec.evaluator]}; backend: {backend}. Axes: "
        + "; ".join(f"`{k}` = {', '.join(_fmt(v) for v in vals)}" for k, vals in spec.axes.items())
        + "."
    )
    if spec.fixed:
        lines.append("Held fixed: " + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in spec.fixed.items()) + ".")
    direction = "lowest" if obj.sign > 0 else "highest"
    lines.append(f"The top pick is the feasible point with the {direction} `{obj.metric}`.")
    if spec.constraints:
        lines.append("Feasible means no error and: " + ", ".join(f"`{c}`" for c in spec.constraints) + ".")
    lines += ["", "## Assumptions", ""]
    lines += [f"- {a}" for a in spec.assumptions] or ["- None beyond the performance model's own."]
    if spec.evaluator == "analytical" and "arrival_rate_per_s" in spec.axes:
        lines.append(
            "- The analytical evaluator predicts each replica at its concurrency (`max_num_seqs` unless"
            " `concurrency` is set), not at the offered rate: `arrival_rate_per_s` only sizes the fleet"
            " (`replicas`, `fleet_cost_per_hour`), so per-token cost and latencies do not move with it."
            " For latency at a rate, use `evaluator: simulate`."
        )
    lines += [f"- {note}" for note in _quality_stand_ins(study, rows)]
    slo = spec.slo.objectives()
    if slo:
        lines.append("- SLO: " + ", ".join(f"{k} <= {v:g}" for k, v in slo.items()))
    lines += ["", "## Findings", ""]
    lines.append(f"- {f.total} points: {f.feasible} feasible, {f.failed} could not run.")
    for reason, count in f.failure_reasons:
        lines.append(f"  - {count} x {reason}")
    if f.top is None:
        lines.append("- No point satisfies the constraints: no recommendation.")
    else:
        lines.append(
            f"- Top pick: {_describe(study, f.top)} with `{obj.metric}` = {_fmt(f.top[obj.metric])}."
        )
        if f.runner_up is not None:
            a, b = float(f.top[obj.metric]), float(f.runner_up[obj.metric])
            gap = abs(b - a) / max(abs(a), 1e-12)
            lines.append(f"- Runner-up: {_describe(study, f.runner_up)} ({_fmt(b)}, {gap:.1%} behind).")
    for title, best in f.best_by.items():
        if not best:  # nothing feasible for this split: no empty table
            continue
        axis = title.split("`")[1]
        lines += ["", f"Best point per {title} (by `{obj.metric}`):", ""]
        metrics = spec.report.table_metrics or [obj.metric, *f.pareto]
        metrics = list(dict.fromkeys(metrics))
        others = [a for a in axis_names(study) if a != axis and f"for {a}=" not in title]
        lines.append("| " + " | ".join([axis, *metrics, *others]) + " |")
        lines.append("|" + "---|" * (1 + len(metrics) + len(others)))
        for value, row in sorted(best.items(), key=lambda kv: obj.sign * float(kv[1][obj.metric])):
            cells = [_fmt(value), *(_fmt(row.get(m)) for m in metrics), *(_fmt(row.get(a)) for a in others)]
            lines.append("| " + " | ".join(cells) + " |")
    if len(f.front) == 1:
        x, y = f.pareto
        only = f.front[0]
        lines += [
            "",
            f"Pareto front of `{x}` vs `{y}`: one point, {_describe(study, only)} ({x} {_fmt(only[x])},"
            f" {y} {_fmt(only[y])}), at least as good as every other on both.",
        ]
    elif f.front:
        x, y = f.pareto
        lines += [
            "",
            f"Pareto front of `{x}` vs `{y}`: {len(f.front)} points, from "
            f"{_describe(study, f.front[0])} ({x} {_fmt(f.front[0][x])}, {y} {_fmt(f.front[0][y])}) to "
            f"{_describe(study, f.front[-1])} ({x} {_fmt(f.front[-1][x])}, {y} {_fmt(f.front[-1][y])}).",
        ]
    if f.sensitivity:
        lines += [
            "",
            f"Sensitivity of the top pick's `{obj.metric}` to each axis (others held at the top pick):",
            "",
        ]
        top = f.top or {}
        for axis, lo, hi, at_lo, at_hi in f.sensitivity:
            mark_lo, mark_hi = (_mark(study, rows, top, axis, v) for v in (at_lo, at_hi))
            lines.append(
                f"- `{axis}`: {_fmt(lo)} ({axis}={_fmt(at_lo)}{mark_lo}) to {_fmt(hi)} ({axis}={_fmt(at_hi)}{mark_hi}), "
                f"x{hi / lo if lo else float('inf'):.2f}"
            )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in [*spec.limitations, *MODEL_LIMITS]]
    lines += [
        "",
        "## Data and versions",
        "",
        "`results.parquet` and `results.csv` (one row per point, errors included), `study.yaml` "
        "(the exact study file), `versions.json`.",
        "",
        f"servewise {vers['servewise']}, catalog {vers['catalog']}, study fingerprint "
        f"{vers['study_fingerprint']}.",
        "",
    ]
    return "\n".join(lines)


def _mark(study: Study, rows: list[Row], top: Row, axis: str, value: Any) -> str:
    """' breaks a constraint' when the top pick with ``axis = value`` is infeasible."""
    from servewise.studies.searching import feasible

    if value == top.get(axis):
        return ""
    row = next(
        (
            r
            for r in rows
            if r.get(axis) == value and all(r.get(a) == top.get(a) for a in axis_names(study) if a != axis)
        ),
        None,
    )
    return ", breaks a constraint" if row is not None and not feasible(study, row) else ""


def _plots(study: Study, out: Path, rows: list[Row], f: Findings) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from servewise.studies.searching import feasible

    ok = [r for r in rows if feasible(study, r)]
    made = []
    x, y = f.pareto
    group = "gpu" if "gpu" in study.spec.axes else (study.spec.report.compare_by or "model")
    pts = [r for r in ok if r.get(x) is not None and r.get(y) is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k_group, value in enumerate(sorted({str(r.get(group)) for r in pts})):
            sel = [r for r in pts if str(r.get(group)) == value]
            color = f"C{k_group}"
            ax.scatter([r[x] for r in sel], [r[y] for r in sel], s=8, alpha=0.35, color=color)
            own = pareto_front(sel, x, y)  # this group's own front: its best trade-off
            ax.plot(
                [r[x] for r in own],
                [r[y] for r in own],
                "-",
                lw=1.2,
                color=color,
                label=f"{value}",
            )
        front = pareto_front(pts, x, y)
        ax.plot([r[x] for r in front], [r[y] for r in front], "k--", lw=1.5, label="overall Pareto front")
        ys = [float(r[y]) for r in pts]
        if min(ys) > 0 and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{study.spec.name}: {y} vs {x} by {group}")
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=110)
        plt.close(fig)
        made.append("pareto.png")
    for k, (title, best) in enumerate(f.best_by.items()):
        metrics = list(dict.fromkeys(study.spec.report.table_metrics or [f.objective.metric, *f.pareto]))[:6]
        if not best or not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2), squeeze=False)
        labels = [str(v) for v in best]
        for ax, metric in zip(axes[0], metrics, strict=True):
            ax.bar(labels, [float(r.get(metric) or 0.0) for r in best.values()], color="tab:blue")
            ax.set_title(metric, fontsize=8)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.suptitle(f"Best point per {title.replace('`', '')}", fontsize=9)
        fig.tight_layout()
        name = f"compare-{k + 1}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)
    if f.sensitivity:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(f.sensitivity)))
        names = [s[0] for s in f.sensitivity][::-1]
        ax.barh(names, [s[2] / s[1] if s[1] else 0.0 for s in f.sensitivity][::-1])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel(f"highest / lowest {f.objective.metric} when only this axis varies")
        ax.set_title("Sensitivity of the top pick")
        fig.tight_layout()
        fig.savefig(out / "sensitivity.png", dpi=110)
        plt.close(fig)
        made.append("sensitivity.png")
    return made
