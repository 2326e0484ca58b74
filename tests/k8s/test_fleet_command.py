"""`servewise fleet --cluster k8s --json` against the emulator, through the real CLI app."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from k8s_emulator import FaithfulEmulator
from typer.testing import CliRunner

from servewise.cli import app
from servewise.commands._output import out_console


def test_fleet_json_on_kubernetes(fleet: FaithfulEmulator, kubeconfig: Path) -> None:
    result = CliRunner().invoke(app, ["fleet", "--cluster", "k8s", "--context", "kmock", "--pools", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = {(d["namespace"], d["name"]) for d in doc["deployments"]}
    assert ("llm-serving", "llama-70b") in names and len(names) == 6
    big = next(d for d in doc["deployments"] if d["name"] == "llama-70b")
    assert set(big) >= {"name", "namespace", "kind", "engine", "replicas", "config"}
    assert big["engine"] == "vllm" and big["config"]["tensor_parallel"] == 4
    assert {u["name"] for u in doc["unparsed"]} == {"secret-model", "wrapped-vllm", "llama-70b-short"}
    assert all(set(u) == {"name", "namespace", "reason"} for u in doc["unparsed"])
    assert {p["name"] for p in doc["node_pools"]} == {"h100-pool", "l4-pool", "NVIDIA-A10G"}


def test_fleet_table_names_unparsed_reasons(
    fleet: FaithfulEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(out_console, "width", 250)
    result = CliRunner().invoke(app, ["fleet", "--cluster", "k8s"])
    assert result.exit_code == 0, result.output
    assert "llama-70b" in result.stdout and "'acme/secret-model-13b' is not in the catalog" in result.stdout
    assert "6 deployments, 3 unparsed" in result.stderr


def test_fleet_without_kubeconfig_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(app, ["fleet", "--cluster", "k8s", "--json"])
    assert result.exit_code != 0
    assert "KUBECONFIG" in str(result.exception) or "KUBECONFIG" in result.output


@pytest.mark.skipif(importlib.util.find_spec("servewise.cluster.sim") is None, reason="twin not built yet")
def test_fleet_json_on_the_twin_has_the_same_shape() -> None:
    result = CliRunner().invoke(app, ["fleet", "--cluster", "sim:demo", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["deployments"] and set(doc["deployments"][0]) >= {
        "name",
        "namespace",
        "kind",
        "engine",
        "replicas",
        "config",
    }
    assert isinstance(doc["unparsed"], list)
