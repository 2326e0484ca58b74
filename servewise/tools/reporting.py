"""Markdown reports with plots (matplotlib, Agg): findings, Pareto fronts, predicted vs measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servewise.tools.analyzing import FleetAnalysis
from servewise.tools.proposing import DeploymentPlan


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
            f"| {f.ref.key} | {f.kind} | {f.severity.value} | {f.summary.replace('|', '/')} | "
            f"{f.suggested_knob or ''} |"
        )
    if analysis.notes:
        lines += ["", "## Not assessed", ""] + [f"- {n}" for n in analysis.notes]
    for plan in plans:
        lines += ["", f"## {plan.namespace}/{plan.deployment}", ""]
        if plan.proposal is None:
            lines.append("No cheaper configuration meets the SLO. " + " ".join(plan.notes))
        else:
            p = plan.proposal
            lines += [
                p.summary,
                "",
                f"- predicted: {p.predicted.model_dump_json()}",
                f"- measured: {p.measured.model_dump_json() if p.measured else 'not benchmarked'}",
                f"- risk: {p.risk}",
                f"- rollback: {p.rollback}",
            ]
        for name in _plot_plan(plan, out_dir):
            lines += ["", f"![{name}]({name})"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
