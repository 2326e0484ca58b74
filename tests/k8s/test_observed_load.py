"""A workload on the cluster that declares its SLO but not its load is sized for what Prometheus
shows it serving: the real Kubernetes client against the emulator, a real Prometheus holding two
hours of the same deployment's metrics (exported by a twin of it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from k8s_emulator import FaithfulEmulator
from test_candidate_benchmark import BIG, _declare

from servewise.cluster.kubernetes import KubernetesCluster
from servewise.cluster.sim_scenario import load_scenario
from servewise.telemetry.openmetrics import history_twin, write_history
from servewise.telemetry.prometheus import PrometheusSource
from servewise.testing.prometheus import PrometheusServer, PrometheusUnavailable, binaries
from servewise.tools.proposing import optimize_deployment
from servewise.tools.search_space import SearchPolicy

pytestmark = pytest.mark.slow
END_S = datetime(2026, 1, 5, 20, 0, tzinfo=UTC).timestamp()  # the evening peak in the last 2 hours
SCENARIO = """
name: llm-serving-twin
seed: 5
truth: {efficiency_scale: 0.1, noise: 0.03}
pools:
  - {name: h100-pool, gpu: h100-sxm, nodes: 2, gpus_per_node: 8}
deployments:
  - name: llama-70b
    namespace: llm-serving
    pool: h100-pool
    config: {model: llama-3.1-70b, tensor_parallel: 4, replicas: 2}
    workload:
      input_len: {kind: lognormal, mean: 1500, std: 600, min: 16, max: 8000}
      output_len: {kind: lognormal, mean: 250, std: 100, min: 4, max: 1500}
      rate_per_s: 1.0
      daily: {peak_hour: 19, peak: 1.5, trough: 0.3}
    slo: {ttft_p99_ms: 1500, tpot_p99_ms: 80}
"""


def test_an_undeclared_load_is_read_from_prometheus(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, tmp_path: Path
) -> None:
    try:
        binaries()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    scenario = tmp_path / "llm-serving.yaml"
    scenario.write_text(SCENARIO)
    twin = history_twin(str(scenario), hours=2.0, step_s=30.0, end_s=END_S)
    export = write_history(twin, tmp_path / "history.om", hours=2.0, step_s=30.0)
    _declare(fleet, {"servewise.io/slo": '{"ttft_p99_ms": 1500, "tpot_p99_ms": 80}'})  # no workload
    dep = cluster.get_deployment(BIG)
    assert dep.workload is None and dep.slo is not None
    with PrometheusServer(backfill=[tmp_path / "history.om"]) as prom:
        at = datetime.fromtimestamp(export.end_s, UTC)
        tel = PrometheusSource(prom.url).snapshot(window="15m", at=at).for_deployment(BIG.name, BIG.namespace)
    assert tel is not None
    plan = optimize_deployment(dep, cluster, telemetry=tel, benchmark=False)
    note = plan.notes[0]
    assert note.startswith("llm-serving/llama-70b: no workload declared; sized for the observed one (input ")
    # Prometheus looks back a day, but holds 2 h of this deployment: the note says so
    assert tel.evidence["request_rate_peak_per_s"].window == "7200s"
    assert "the busiest 5 minutes over 7200s, less than a day: a daily peak may be missing;" in note
    # the peak is the evening's, above the window's rate and near what the twin offered then
    load = load_scenario(scenario).deployments[0].workload
    offered = max(load.rate_at(t) for t in np.arange(export.start_s, export.end_s, 60.0))
    peak = tel.signals["request_rate_peak_per_s"]
    assert peak == pytest.approx(offered, rel=0.2) and peak >= tel.signals["request_rate_per_s"]
    # mean lengths are the token rates over the request rate; p99s come from vLLM's length buckets
    assert (
        f"input {tel.signals['prompt_tokens_per_s'] / tel.signals['request_rate_per_s']:.0f} tokens mean"
        in note
    )
    assert (
        1500 * 0.95 <= tel.signals["prompt_tokens_per_s"] / tel.signals["request_rate_per_s"] <= 1500 * 1.05
    )
    assert 2000 <= tel.signals["prompt_len_p99"] <= 5000  # the true p99 (~3400) lies in (2000, 5000]
    assert plan.proposal is not None
    assert f"at {peak * (1 + SearchPolicy().headroom):.2f} req/s peak+headroom" in plan.proposal.summary
