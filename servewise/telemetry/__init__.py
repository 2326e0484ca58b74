"""Telemetry sources behind the ``TelemetrySource`` protocol."""

from servewise.telemetry.source import TelemetrySource

__all__ = ["TelemetrySource"]
