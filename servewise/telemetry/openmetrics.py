"""Twin history as OpenMetrics text that ``promtool tsdb create-blocks-from openmetrics`` backfills.

The twin is run step by step over the requested span; every step's families (same builder as the
live exporter) are appended to one spool file per family. Each family is then written as one
block with the points of each metric (a histogram's buckets, count and sum together) grouped and
in time order, as the OpenMetrics spec requires; samples carry timestamps (seconds), counters
stay monotone per series, histogram buckets are cumulative, and the file ends with ``# EOF``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from servewise.cluster.sim import SimCluster
from servewise.errors import InputError
from servewise.telemetry.twin_series import Family, Labels, twin_families


@dataclass(frozen=True)
class HistoryExport:
    path: Path
    start_s: float
    end_s: float
    steps: int
    samples: int
    families: int


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def write_history(
    sim: SimCluster,
    out: Path | str,
    *,
    hours: float,
    step_s: float = 15.0,
    exclude: Callable[[str, Labels], bool] | None = None,
    on_step: Callable[[SimCluster], None] | None = None,
) -> HistoryExport:
    """Advance ``sim`` by ``hours`` in ``step_s`` steps and write every step to ``out``.

    ``sim`` should start ``hours`` before the intended end (``SimCluster(..., start=end - span)``);
    when this returns, ``sim`` stands at the end of the history (its own telemetry agrees with it).
    ``exclude(sample_name, labels)`` drops series, e.g. to mimic a failed scrape target;
    ``on_step(sim)`` runs before each step (apply a change mid-history, for instance).
    """
    if hours <= 0 or step_s <= 0:
        raise InputError("hours and step must be positive", field="--hours/--step")
    out = Path(out)
    steps = int(round(hours * 3600 / step_s))
    start = sim.now_s
    spool_dir = Path(tempfile.mkdtemp(prefix="servewise-om-"))
    spools: dict[str, IO[str]] = {}
    headers: dict[str, Family] = {}
    samples = 0
    label_cache: dict[Labels, str] = {}
    try:
        for i in range(steps + 1):
            if i:
                if on_step is not None:
                    on_step(sim)
                sim.advance(step_s, persist=False)
            ts = f"{sim.now_s:.3f}"
            for fam in twin_families(sim, target_labels=True):
                fh = spools.get(fam.name)
                if fh is None:
                    fh = spools[fam.name] = open(spool_dir / f"{len(spools)}.txt", "w")  # noqa: SIM115
                    headers[fam.name] = fam
                lines = []
                for name, labels, value in fam.samples:
                    if exclude is not None and exclude(name, labels):
                        continue
                    text = label_cache.get(labels)
                    if text is None:
                        text = label_cache[labels] = _labels_text(labels)
                    group = text if labels[-1][0] != "le" else _labels_text(labels[:-1])
                    lines.append(f"{group}\t{name}{text} {value!r} {ts}\n")
                fh.writelines(lines)
                samples += len(lines)
            if len(label_cache) > 500_000:
                label_cache.clear()
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as dst:
            for name, fh in spools.items():
                fh.close()
                fam = headers[name]
                dst.write(f"# TYPE {fam.name} {fam.type}\n# HELP {fam.name} {fam.help}\n")
                with open(fh.name) as src:
                    rows = [line.split("\t", 1) for line in src]
                rows.sort(key=lambda row: row[0])  # stable: each series keeps its time order
                dst.writelines(row[1] for row in rows)
            dst.write("# EOF\n")
    finally:
        for fh in spools.values():
            fh.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
    return HistoryExport(out, start, sim.now_s, steps, samples, len(spools))


def history_twin(
    scenario: str, *, hours: float, step_s: float = 15.0, end_s: float | None = None, seed: int | None = None
) -> SimCluster:
    """A fresh (ephemeral) twin of ``scenario`` whose clock stands ``hours`` before ``end_s`` (now)."""
    end = time.time() if end_s is None else end_s
    end = end - end % step_s
    return SimCluster.from_scenario(
        scenario, seed, ephemeral=True, step_s=step_s, start=end - hours * 3600, history_s=3600.0
    )
