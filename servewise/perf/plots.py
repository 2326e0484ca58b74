"""Plots of the performance model against measurements (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from servewise.perf.validation import ValidationReport

METRIC_LABELS = {
    "throughput_tok_s": "output throughput (tok/s)",
    "ttft_ms": "TTFT (ms)",
    "tpot_ms": "TPOT (ms)",
}


def plot_predicted_vs_measured(report: ValidationReport, path: str | Path, *, title: str = "") -> Path:
    """One log-log panel per metric; train and holdout rows in different markers; ±15%/±25% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    metrics = [m for m in METRIC_LABELS if any(r.metric == m and r.predicted for r in report.rows)]
    fig, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(5.2 * max(len(metrics), 1), 4.8), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=False):
        rows = [r for r in report.rows if r.metric == metric and r.predicted and r.measured]
        lo = min(min(r.measured or 1 for r in rows), min(r.predicted or 1 for r in rows)) * 0.7
        hi = max(max(r.measured or 1 for r in rows), max(r.predicted or 1 for r in rows)) * 1.4
        band = 0.15 if metric == "throughput_tok_s" else 0.25
        ax.plot([lo, hi], [lo, hi], color="black", lw=1)
        ax.fill_between(
            [lo, hi],
            [lo * (1 - band), hi * (1 - band)],
            [lo * (1 + band), hi * (1 + band)],
            color="tab:green",
            alpha=0.12,
            label=f"±{band:.0%}",
        )
        for split, marker, color in (("train", "o", "tab:blue"), ("holdout", "^", "tab:red")):
            pts = [r for r in rows if r.split == split]
            mape = report.mape_by_split.get(split, {}).get(metric)
            label = f"{split} (n={len(pts)}" + (f", MAPE {mape:.1f}%)" if mape is not None else ")")
            ax.scatter(
                [r.measured for r in pts],
                [r.predicted for r in pts],
                s=12,
                marker=marker,
                alpha=0.6,
                color=color,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"measured {METRIC_LABELS[metric]}")
        ax.set_ylabel(f"predicted {METRIC_LABELS[metric]}")
        ax.legend(fontsize=8, loc="upper left")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
