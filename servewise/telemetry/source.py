"""The seam between servewise and telemetry: Prometheus in production, the twin on a laptop."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from servewise.domain import TelemetrySnapshot


@runtime_checkable
class TelemetrySource(Protocol):
    name: str

    def snapshot(self, *, window: str = "15m") -> TelemetrySnapshot:
        """Current signals per deployment over ``window``; missing series are listed, never zeroed."""
        ...
