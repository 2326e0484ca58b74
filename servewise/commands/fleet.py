"""`servewise fleet`: what inference deployments a cluster (real or twin) runs, and what could not be read."""

from __future__ import annotations

import logging
from typing import Any

import typer
from rich.table import Table

from servewise.commands._output import err_console, out_console, print_json

log = logging.getLogger(__name__)


def fleet_document(cluster: Any, *, pools: bool = False) -> dict[str, Any]:
    """The `servewise fleet --json` document (docs/json-output.md) for any ClusterBackend."""
    deployments = [
        {
            "name": d.ref.name,
            "namespace": d.ref.namespace,
            "kind": d.ref.kind,
            "engine": d.config.engine.value,
            "replicas": d.config.replicas,
            "ready_replicas": d.ready_replicas,
            "pool": d.pool,
            "config": d.config.model_dump(mode="json"),
        }
        for d in cluster.list_deployments()
    ]
    unparsed = [u.model_dump(mode="json") for u in cluster.list_unparsed()]
    doc: dict[str, Any] = {"cluster": cluster.name, "deployments": deployments, "unparsed": unparsed}
    if pools:
        doc["node_pools"] = [p.model_dump(mode="json") for p in cluster.list_node_pools()]
    return doc


def _print_tables(doc: dict[str, Any]) -> None:
    table = Table(title=f"Inference deployments on {doc['cluster']}")
    for col in (
        "namespace",
        "name",
        "kind",
        "engine",
        "model",
        "gpu",
        "tp",
        "replicas",
        "max seqs",
        "weights/kv",
    ):
        table.add_column(col)
    for d in doc["deployments"]:
        c = d["config"]
        q = c["quantization"]
        table.add_row(
            d["namespace"],
            d["name"],
            d["kind"],
            d["engine"],
            c["model"],
            c["gpu"],
            str(c["tensor_parallel"]),
            str(d["replicas"]),
            str(c["max_num_seqs"]),
            f"{q.get('method') or q['weights']}/{q['kv_cache']}",
        )
    out_console.print(table)
    if doc["unparsed"]:
        bad = Table(title="Inference workloads that could not be parsed (not changed by servewise)")
        for col in ("namespace", "name", "reason"):
            bad.add_column(col)
        for u in doc["unparsed"]:
            bad.add_row(u["namespace"], u["name"], u["reason"])
        out_console.print(bad)
    if "node_pools" in doc:
        pools = Table(title="GPU node pools")
        for col in ("pool", "gpu", "nodes", "gpus/node", "free", "zone", "location"):
            pools.add_column(col)
        for p in doc["node_pools"]:
            pools.add_row(
                p["name"], p["gpu"], str(p["nodes"]), str(p["gpus_per_node"]), str(p["free_gpus"]), p["zone"],
                p["location"],
            )  # fmt: skip
        out_console.print(pools)


def fleet(
    cluster: str = typer.Option("sim:demo", "--cluster", help="'k8s[:CONTEXT]' or 'sim:SCENARIO'"),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context (k8s only)"),
    pools: bool = typer.Option(False, "--pools", help="also list GPU node pools"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document on stdout"),
) -> None:
    """List inference deployments (vLLM, TGI, SGLang) and the workloads that could not be parsed."""
    from servewise.cluster.factory import open_cluster

    backend = open_cluster(cluster, context=context)
    doc = fleet_document(backend, pools=pools)
    if as_json:
        print_json(doc)
        return
    _print_tables(doc)
    err_console.print(f"{len(doc['deployments'])} deployments, {len(doc['unparsed'])} unparsed")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("fleet")(fleet)
