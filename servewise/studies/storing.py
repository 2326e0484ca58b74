"""Per-point results on disk as Parquet parts, so an interrupted study resumes where it stopped.

Each finished chunk of points is written as one ``points/part-*.parquet`` file (to a temporary
name, then renamed, so a crash never leaves half a part). ``finished()`` reads back the indices
already stored; the runner skips them. ``meta.json`` pins the study's fingerprint: resuming into a
folder that holds a different study is an error rather than a silent mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from servewise.errors import InputError

Row = dict[str, Any]


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


class ResultStore:
    """A study's output folder: parts, consolidated results, metadata."""

    def __init__(self, out_dir: str | Path, fingerprint: str, name: str) -> None:
        self.root = Path(out_dir)
        self.parts = self.root / "points"
        self.fingerprint = fingerprint
        meta = self.root / "meta.json"
        if meta.exists():
            found = json.loads(meta.read_text()).get("fingerprint")
            if found != fingerprint:
                raise InputError(
                    f"{self.root} holds results of a different study (fingerprint {found}, this one "
                    f"{fingerprint}); choose another --out or delete the folder",
                    field="--out",
                )
        self.parts.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"fingerprint": fingerprint, "study": name}, indent=2))
        self._next = len(list(self.parts.glob("part-*.parquet")))

    def finished(self) -> set[int]:
        """Indices of the points already stored."""
        import pyarrow.parquet as pq

        done: set[int] = set()
        for part in sorted(self.parts.glob("part-*.parquet")):
            done.update(int(i) for i in pq.read_table(part, columns=["index"]).column("index").to_pylist())
        return done

    def write(self, rows: list[Row]) -> None:
        """Store one finished chunk."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        table = pa.Table.from_pylist([_normalize(r) for r in rows])
        name = f"part-{os.getpid()}-{self._next:06d}.parquet"
        self._next += 1
        tmp = self.parts / (name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(self.parts / name)

    def rows(self) -> list[Row]:
        """Every stored row, ordered by point index (duplicates from a re-run chunk dropped)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(p) for p in sorted(self.parts.glob("part-*.parquet"))]
        if not tables:
            return []
        merged = pa.concat_tables(tables, promote_options="permissive")
        by_index: dict[int, Row] = {}
        for row in merged.to_pylist():
            by_index.setdefault(int(row["index"]), row)
        return [by_index[i] for i in sorted(by_index)]

    def consolidate(self) -> list[Row]:
        """Write ``results.parquet`` and ``results.csv`` from the parts; return the rows."""
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        rows = self.rows()
        table = pa.Table.from_pylist(rows)
        pq.write_table(table, self.root / "results.parquet")
        pacsv.write_csv(table, self.root / "results.csv")
        return rows


def _normalize(row: Row) -> Row:
    """Plain Python values; axis values of mixed kinds become strings so the schema is stable."""
    out: Row = {}
    for key, value in row.items():
        value = _plain(value)
        if isinstance(value, list | dict | tuple):
            value = json.dumps(value)
        out[key] = value
    return out
