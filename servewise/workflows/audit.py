"""The append-only audit log and the index of optimization runs (one SQLite file under SERVEWISE_HOME).

Every decision and action of a workflow is one row of ``events``; SQLite triggers refuse UPDATE
and DELETE on it, so history cannot be rewritten through this module or any other client. A
workflow node may run again after a crash, so ``record(..., once=True)`` is idempotent: the
same (run, action, proposal) is written once. ``export_jsonl`` writes one JSON object per line.

``runs`` is a small mutable index (status, counts) for ``servewise runs``; the truth about a run
is its LangGraph checkpoint plus its audit events.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, Field

ACTIONS = (
    "started",
    "proposed",
    "auto_approved",
    "approved",
    "rejected",
    "dry_run",
    "applied",
    "verified",
    "rolled_back",
    "failed",
    "completed",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    run_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    proposal_id TEXT,
    once_key TEXT UNIQUE,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
CREATE INDEX IF NOT EXISTS events_proposal ON events(proposal_id, action);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    cluster TEXT NOT NULL,
    status TEXT NOT NULL,
    proposals INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT ''
);
"""


class AuditEvent(BaseModel):
    seq: int
    ts: datetime
    run_id: str
    action: str
    actor: str
    proposal_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The flat ``{"ts", "run_id", "action", "actor", ...}`` shape of docs/json-output.md."""
        out: dict[str, Any] = {
            "ts": self.ts.isoformat(),
            "run_id": self.run_id,
            "action": self.action,
            "actor": self.actor,
            "proposal_id": self.proposal_id,
            "seq": self.seq,
        }
        out.update({k: v for k, v in self.details.items() if k not in out})
        return out


class RunRecord(BaseModel):
    run_id: str
    created: datetime
    updated: datetime
    cluster: str
    status: str
    proposals: int = 0
    summary: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class AuditLog:
    """Events and runs in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    # -- events ------------------------------------------------------------------------------
    def record(
        self,
        run_id: str,
        action: str,
        actor: str,
        *,
        proposal_id: str | None = None,
        once: bool = False,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Append one event. With ``once``, a second (run, action, proposal) is ignored.

        Returns True when a row was written.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}; expected one of {ACTIONS}")
        key = f"{run_id}|{action}|{proposal_id or ''}" if once else None
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO events (ts, run_id, action, actor, proposal_id, once_key, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), run_id, action, actor, proposal_id, key, json.dumps(details or {}, default=str)),
            )
            return cur.rowcount == 1

    def events(self, run_id: str | None = None, *, proposal_id: str | None = None) -> list[AuditEvent]:
        sql = "SELECT seq, ts, run_id, action, actor, proposal_id, details FROM events"
        where, args = [], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if proposal_id is not None:
            where.append("proposal_id = ?")
            args.append(proposal_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", args).fetchall()
        return [
            AuditEvent(
                seq=r[0],
                ts=r[1],
                run_id=r[2],
                action=r[3],
                actor=r[4],
                proposal_id=r[5],
                details=json.loads(r[6]),
            )
            for r in rows
        ]

    def has(self, action: str, proposal_id: str, *, run_id: str | None = None) -> bool:
        sql = "SELECT 1 FROM events WHERE action = ? AND proposal_id = ?"
        args = [action, proposal_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        with self._lock:
            return self._conn.execute(sql + " LIMIT 1", args).fetchone() is not None

    def export_jsonl(self, out: TextIO, run_id: str | None = None) -> int:
        events = self.events(run_id)
        for ev in events:
            out.write(json.dumps(ev.as_record(), default=str) + "\n")
        return len(events)

    # -- runs --------------------------------------------------------------------------------
    def upsert_run(
        self, run_id: str, *, cluster: str, status: str, proposals: int | None = None, summary: str = ""
    ) -> None:
        now = _now()
        with self._lock:
            self._conn.execute(
                "INSERT INTO runs (run_id, created, updated, cluster, status, proposals, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET updated = excluded.updated, "
                "status = excluded.status, proposals = COALESCE(?, runs.proposals), "
                "summary = CASE WHEN excluded.summary = '' THEN runs.summary ELSE excluded.summary END",
                (run_id, now, now, cluster, status, proposals or 0, summary, proposals),
            )

    def runs(self, *, status: str | None = None) -> list[RunRecord]:
        sql = "SELECT run_id, created, updated, cluster, status, proposals, summary FROM runs"
        args: list[str] = []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created DESC", args).fetchall()
        return [
            RunRecord(
                run_id=r[0],
                created=r[1],
                updated=r[2],
                cluster=r[3],
                status=r[4],
                proposals=r[5],
                summary=r[6],
            )
            for r in rows
        ]

    def get_run(self, run_id: str) -> RunRecord | None:
        for r in self.runs():
            if r.run_id == run_id:
                return r
        return None
