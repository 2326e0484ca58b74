"""Markdown reports with plots (matplotlib, Agg): findings, Pareto fronts, predicted vs measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servewise.domain import Impact, Proposal
from servewise.tools.analyzing import FleetAnalysis
from servewise.tools.optimizing import describe
from servewise.tools.proposing import DeploymentPlan, banded_runs, worst_p99_error


def _save(fig: Any, out_dir: Path, name: str) -> str:
    """Write ``fig`` as ``out_dir/name``, release it, and return the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def _plot_plan(plan: DeploymentPlan, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if plan.pareto_front:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [p.cost_per_hour for p in plan.pareto_front]
        ys = [p.e2e_p99_ms / 1e3 for p in plan.pareto_front]
        ax.step(xs, ys, where="post", marker="o", label="Pareto front (predicted)")
        picked = [p for p in plan.pareto_front if p.picked]
        if picked:
            ax.scatter(
                [picked[0].cost_per_hour],
                [picked[0].e2e_p99_ms / 1e3],
                s=120,
                c="red",
                label="pick",
                zorder=3,
            )
        ax.axvline(plan.current_cost_per_hour, ls="--", c="gray", label="current cost")
        ax.set_xlabel("$ / hour")
        ax.set_ylabel("e2e p99 (s)")
        ax.set_title(f"{plan.namespace}/{plan.deployment}")
        ax.legend(fontsize=7)
        files.append(_save(fig, out_dir, f"pareto-{plan.namespace}-{plan.deployment}.png"))
    pts = [
        (t.predicted[k], t.measured[k], k)
        for t in plan.trials
        for k in ("ttft_p99_ms", "tpot_p99_ms")
        if k in t.predicted and k in t.measured
    ]
    if pts:
        fig, ax = plt.subplots(figsize=(4, 4))
        for metric, color in (("ttft_p99_ms", "tab:blue"), ("tpot_p99_ms", "tab:orange")):
            sel = [(p, m) for p, m, k in pts if k == metric]
            if sel:
                ax.scatter([m for _, m in sel], [p for p, _ in sel], c=color, label=metric)
        hi = max(max(p, m) for p, m, _ in pts) * 1.1
        ax.plot([0, hi], [0, hi], c="gray", ls="--")
        ax.set_xscale("symlog")
        ax.set_yscale("symlog")
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted before the run (ms)")
        ax.legend(fontsize=7)
        files.append(_save(fig, out_dir, f"pred-vs-meas-{plan.namespace}-{plan.deployment}.png"))
    if plan.before and plan.after:
        keys = [k for k in ("ttft_p99_ms", "tpot_p99_ms") if k in plan.before and k in plan.after]
        fig, ax = plt.subplots(figsize=(4, 3))
        pos = [float(x) for x in range(len(keys))]
        ax.bar([x - 0.2 for x in pos], [plan.before[k] for k in keys], width=0.4, label="current (predicted)")
        ax.bar([x + 0.2 for x in pos], [plan.after[k] for k in keys], width=0.4, label="proposed (predicted)")
        ax.set_xticks(pos, keys)
        ax.set_yscale("log")
        ax.set_ylabel("ms at peak + headroom")
        ax.legend(fontsize=7)
        files.append(_save(fig, out_dir, f"before-after-{plan.namespace}-{plan.deployment}.png"))
    return files


_LABEL = {"ttft_p99_ms": "TTFT p99", "tpot_p99_ms": "TPOT p99"}


def _cell(text: str) -> str:
    """``text`` made safe for one markdown table cell."""
    return text.replace("|", "/").replace("\n", " ")


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _cost(impact: Impact) -> str:
    return f"${impact.cost_per_hour_before:,.2f}/h -> ${impact.cost_per_hour_after:,.2f}/h"


def _band(value: float | None, pct: float) -> str:
    """The p99s a prediction ``value`` with error band ``pct`` allows: the band is relative to the
    prediction (``|predicted - measured| / predicted``, ``proposing._uncertainty_pct``), so
    ``value x (1 - u)`` .. ``value x (1 + u)``, from 0 once the band reaches 100 %."""
    if value is None:
        return ""
    u = pct / 100.0
    return f" ({_ms(max(0.0, value * (1.0 - u)))} - {_ms(value * (1.0 + u))})"


def _headline(plan: DeploymentPlan) -> str:
    """What the plan does, in one sentence: saves, keeps or adds cost to meet the SLO, or proposes nothing."""
    p = plan.proposal
    if p is None:
        reason = plan.no_proposal_reason or "the optimizer found nothing to propose"
        return f"**No proposal**: {reason.rstrip('.')}."
    delta = p.predicted.cost_per_hour_after - p.predicted.cost_per_hour_before
    if delta <= -0.005:
        return f"**Proposal: a cheaper configuration that meets the SLO, saving ${-delta:,.2f}/h** ({_cost(p.predicted)})."
    if delta >= 0.005:
        return (
            f"**Proposal: the cheapest configuration found that meets the SLO, adding ${delta:,.2f}/h**"
            f" ({_cost(p.predicted)}); nothing cheaper was found to meet it."
        )
    return f"**Proposal: a configuration that meets the SLO at the same cost** ({_cost(p.predicted)})."


def _impact_lines(plan: DeploymentPlan, p: Proposal) -> list[str]:
    """Predicted and measured impact as a table, and what the predictions' band means."""
    pr, me = p.predicted, p.measured
    u = pr.uncertainty_pct
    lines = [
        "| | cost (current -> proposed) | TTFT p99 | TPOT p99 | from |",
        "|---|---|---|---|---|",
        f"| predicted | {_cost(pr)} | {_ms(pr.ttft_p99_ms)}{_band(pr.ttft_p99_ms, u)} | "
        f"{_ms(pr.tpot_p99_ms)}{_band(pr.tpot_p99_ms, u)} | {_cell(pr.validated_by)} |",
        f"| measured | {_cost(me)} | {_ms(me.ttft_p99_ms)} | {_ms(me.tpot_p99_ms)} | {_cell(me.validated_by)} |"
        if me is not None
        else "| measured | not benchmarked | | | |",
        "",
    ]
    runs = banded_runs(plan.trials, p.proposed)
    worst = worst_p99_error(runs)
    if worst is not None:
        err, t, k = worst
        which = (
            f"{len(runs)} of this plan's {len(plan.trials)} benchmark runs, those on the proposal's GPU"
            " class predicted after a benchmark calibrated the model"
            if len(runs) < len(plan.trials)
            else f"this plan's {len(plan.trials)} benchmark run(s)"
        )
        band = (
            f"Predicted p99s carry a ±{u:.1f}% band: the worst relative error (|predicted - measured| /"
            f" predicted) of a TTFT or TPOT p99 over {which}, here"
            f" {_LABEL[k]} of {describe(t.config)}: predicted"
            f" {_ms(t.predicted[k])}, measured {_ms(t.measured[k])}. In brackets, the true p99 that band allows"
        )
    else:
        band = (
            f"Predicted p99s carry a ±{u:.1f}% band (no benchmark measured a predicted p99: the model's"
            " telemetry fit residual). In brackets, the true p99 that band allows"
        )
    band += " (predicted x (1 - band) to predicted x (1 + band)); verification reads a measurement above it as a regression."
    return [*lines, band]


def write_report(analysis: FleetAnalysis, plans: list[DeploymentPlan], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# servewise analysis: {analysis.source}",
        "",
        f"Window: {analysis.window or 'n/a'}; "
        f"{analysis.deployments} deployments; {len(analysis.findings)} findings.",
        "",
        "| deployment | finding | severity | summary | knob |",
        "|---|---|---|---|---|",
    ]
    for f in analysis.findings:
        lines.append(
            f"| {f.ref.key} | {f.kind} | {f.severity.value} | {_cell(f.summary)} | {f.suggested_knob or ''} |"
        )
    if not analysis.findings:
        lines[-2:] = [
            "Every analyzer was quiet: nothing to fix on the telemetry read (see below for what was not assessed)."
        ]
    if analysis.notes:
        lines += ["", "## Not assessed", ""] + [f"- {n}" for n in analysis.notes]
    for plan in plans:
        lines += ["", f"## {plan.namespace}/{plan.deployment}", "", _headline(plan)]
        p = plan.proposal
        if p is not None:
            lines += [
                "",
                p.summary,
                "",
                *_impact_lines(plan, p),
                "",
                f"- risk: {p.risk}",
                f"- rollback: {p.rollback}",
            ]
            if p.manifest_patch:  # the JSON patch the apply sends (the dry run's, else patching.py's)
                lines += [
                    "",
                    "Manifest change (JSON patch):",
                    "",
                    "```json",
                    json.dumps(p.manifest_patch, indent=1),
                    "```",
                ]
        # one note a bullet (joined, "fit residual 0.5%" ran into the next note); the reason is the headline's
        notes = [n for n in plan.notes if n != plan.no_proposal_reason]
        if notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
        if not plan.pareto_front:
            lines += ["", _no_front(plan)]
        for name in _plot_plan(plan, out_dir):
            lines += ["", f"![{name}]({name})"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _no_front(plan: DeploymentPlan) -> str:
    """Why a plan has no Pareto plot: the front is drawn from the candidates of the optimizer's last
    search (at the policy's SLO margin, with the model recalibrated on every benchmark run) and the
    pick, and there is neither."""
    after = f" (after {len(plan.trials)} benchmark run(s) recalibrated the model)" if plan.trials else ""
    return (
        f"No Pareto plot: the optimizer's last search{after} predicts no candidate to meet the SLO with"
        " the policy's margin and no candidate passed a benchmark, so there is no cost-vs-latency front"
        " to draw."
    )
