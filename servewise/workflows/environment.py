"""What a workflow run acts on: a cluster, a telemetry source, the tool registry, and a clock.

``open_environment("sim:demo")`` opens the embedded twin (state under ``$SERVEWISE_HOME/sim``, so a
run resumed by another process sees the same fleet); ``k8s[:CONTEXT]`` the real cluster with
Prometheus at ``--prometheus``. ``py:package.module:function`` calls a factory returning an
``Environment``: the extension point for other backends and for test fleets.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from servewise.cluster.backend import ClusterBackend
from servewise.errors import InputError
from servewise.telemetry.source import TelemetrySource
from servewise.tools.context import ToolContext
from servewise.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


@dataclass
class Environment:
    spec: str
    cluster: ClusterBackend
    telemetry: TelemetrySource
    registry: ToolRegistry

    def tool_context(self) -> ToolContext:
        return ToolContext(cluster=self.cluster, telemetry=self.telemetry)

    def now(self) -> datetime:
        """The cluster's clock when it has one (the twin), else wall time."""
        now = getattr(self.cluster, "now", None)
        return now if isinstance(now, datetime) else datetime.now(UTC)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of cluster time pass: the twin advances its clock, a real cluster sleeps."""
        advance = getattr(self.cluster, "advance", None)
        if callable(advance):
            advance(seconds)
        else:
            time.sleep(seconds)


def load_default_registry() -> ToolRegistry:
    """The product registry with every tool module of ``servewise.tools`` imported (they register on import)."""
    import servewise.tools as tools_pkg
    from servewise.tools.registry import registry

    for mod in pkgutil.iter_modules(tools_pkg.__path__, tools_pkg.__name__ + "."):
        try:
            importlib.import_module(mod.name)
        except ImportError as exc:  # an optional tool whose dependency is missing
            log.warning("tool module %s not loaded: %s", mod.name, exc)
    return registry


def open_environment(spec: str, *, prometheus: str | None = None) -> Environment:
    kind, _, arg = spec.partition(":")
    if kind == "py":
        module, _, func = arg.rpartition(":")
        if not module or not func:
            raise InputError(f"expected py:package.module:function, got {spec!r}", field="--cluster")
        try:
            factory: Any = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot load environment factory: {exc}", field="--cluster") from exc
        env = factory(spec=spec, prometheus=prometheus)
        if not isinstance(env, Environment):
            raise InputError(f"{spec} returned {type(env).__name__}, not an Environment", field="--cluster")
        return env
    from servewise.cluster.factory import ENVIRONMENT_FORMS, open_cluster, parse_cluster_spec

    cluster_kind, _ = parse_cluster_spec(spec, forms=ENVIRONMENT_FORMS)
    cluster = open_cluster(spec)
    return Environment(
        spec=spec,
        cluster=cluster,
        telemetry=_open_telemetry(cluster_kind, cluster, prometheus),
        registry=load_default_registry(),
    )


def _open_telemetry(kind: str, cluster: ClusterBackend, prometheus: str | None) -> TelemetrySource:
    if prometheus:
        source: Any = importlib.import_module("servewise.telemetry.prometheus").PrometheusSource(prometheus)
    elif kind == "sim":
        source = importlib.import_module("servewise.telemetry.sim").SimTelemetrySource(cluster)
    else:
        raise InputError("a real cluster needs --prometheus URL for telemetry", field="--prometheus")
    if not isinstance(source, TelemetrySource):
        raise TypeError(f"{type(source).__name__} does not implement TelemetrySource")
    return source
