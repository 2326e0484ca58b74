"""Open a cluster backend or telemetry source from a CLI/config spec string.

``sim:SCENARIO`` (or ``sim`` for the ``demo`` scenario) is the embedded twin; ``k8s`` is the
real cluster selected by KUBECONFIG / in-cluster config (``context`` picks a kubeconfig context).
"""

from __future__ import annotations

from servewise.cluster.backend import ClusterBackend
from servewise.errors import InputError

CLUSTER_FORMS = ("sim:SCENARIO", "k8s[:CONTEXT]")  # what open_cluster accepts
ENVIRONMENT_FORMS = (*CLUSTER_FORMS, "py:module:factory")  # what workflows.environment accepts


def parse_cluster_spec(spec: str, *, forms: tuple[str, ...] = CLUSTER_FORMS) -> tuple[str, str | None]:
    """``(kind, argument)`` of a spec; an unknown one is an input error listing ``forms``."""
    kind, colon, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "sim":
        if colon and not arg:
            raise InputError(
                f"no scenario in {spec!r}; use 'sim:SCENARIO', or 'sim' for the demo scenario",
                field="--cluster",
            )
        return "sim", (arg or "demo")
    if kind in ("k8s", "kubernetes"):
        if colon and not arg.strip():
            raise InputError(
                f"no context in {spec!r}; use 'k8s:CONTEXT', or 'k8s' for the kubeconfig's current context",
                field="--cluster",
            )
        return "k8s", (arg or None)
    use = ", ".join(f"'{f}'" for f in forms[:-1]) + f" or '{forms[-1]}'"
    raise InputError(f"unknown cluster {spec!r}; use {use}", field="--cluster")


def open_cluster(
    spec: str = "sim:demo", *, context: str | None = None, seed: int | None = None
) -> ClusterBackend:
    kind, arg = parse_cluster_spec(spec)
    if kind == "sim":
        from servewise.cluster.sim import SimCluster

        return SimCluster.from_scenario(arg or "demo", seed=seed)
    from servewise.cluster.kubernetes import KubernetesCluster

    return KubernetesCluster(context=context or arg)
