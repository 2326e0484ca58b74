"""A fleet that mixes engines, read from a real Prometheus: each deployment under its engine's names.

The twin exports its SGLang deployments under SGLang's metric names (``sglang:num_running_reqs``,
``sglang:cached_tokens_total``, ...) and the others under vLLM's; PrometheusSource finds which
engines the window holds and reads each with its own names. The SGLang deployment is a StatefulSet
to kube-state-metrics (its pods owned by it, no ReplicaSet): it is found and counted all the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from servewise.cli import app
from servewise.cluster.sim import SimCluster
from servewise.domain import SIGNALS, DeploymentRef, DeploymentTelemetry
from servewise.errors import BackendUnavailableError, InputError
from servewise.telemetry.names import ENGINE_NAMES, SGLANG_NAMES, TGI_NAMES, VLLM_NAMES, LabelMap
from servewise.telemetry.openmetrics import HistoryExport, write_history
from servewise.telemetry.prometheus import PrometheusSource, _merge
from servewise.telemetry.promql import PromQLBuilder
from servewise.telemetry.sim import SimTelemetrySource
from servewise.testing.prometheus import PrometheusServer

from .conftest import END_S, History, need_prometheus, scenario_twin

pytestmark = pytest.mark.slow
ENGINE_FREE_QUERIES = 4  # GPU utilization and memory, replicas, available replicas
HOURS = 1.0
STEP_S = 30.0
SCENARIO = {
    "name": "mixed-engines",
    "seed": 3,
    "pools": [{"name": "l40s-pool", "gpu": "l40s", "nodes": 4, "gpus_per_node": 4, "zone": "us-east-1a"}],
    "deployments": [
        {
            "name": "chat",
            "namespace": "apps",
            "pool": "l40s-pool",
            "config": {"model": "llama-3.1-8b", "replicas": 2, "max_num_seqs": 64},
            "workload": {
                "input_len": {"kind": "lognormal", "mean": 1500, "std": 600, "min": 32, "max": 8000},
                "output_len": {"kind": "lognormal", "mean": 250, "std": 120, "min": 8, "max": 1500},
                "rate_per_s": 1.5,
            },
        },
        {
            "name": "agent",  # a StatefulSet in the history kube-state-metrics gives
            "namespace": "apps",
            "pool": "l40s-pool",
            "config": {"model": "qwen2.5-7b", "engine": "sglang", "replicas": 2, "max_num_seqs": 64},
            "workload": {
                "input_len": {"kind": "lognormal", "mean": 3000, "std": 1200, "min": 64, "max": 12000},
                "output_len": {"kind": "lognormal", "mean": 200, "std": 100, "min": 8, "max": 1000},
                "rate_per_s": 1.2,
                "prefix_share": 0.5,
            },
        },
        {  # its engine series are left out of the history: it is seen through its GPUs only
            "name": "batch",
            "namespace": "offline",
            "pool": "l40s-pool",
            "config": {"model": "llama-3.1-8b", "replicas": 1},
            "workload": {
                "input_len": {"kind": "fixed", "mean": 500},
                "output_len": {"kind": "fixed", "mean": 100},
                "rate_per_s": 0.2,
            },
        },
    ],
}


def _excluded(name: str, labels: tuple[tuple[str, str], ...]) -> bool:
    """batch's engine series (a failed scrape) and agent's Deployment ownership: agent is a
    StatefulSet (``_statefulset_history``)."""
    if name.startswith(("vllm:", "sglang:")) and ("namespace", "offline") in labels:
        return True
    tags = dict(labels)
    if name == "kube_pod_owner":
        return tags["pod"].startswith("agent-")
    if name.startswith("kube_deployment_"):
        return tags["deployment"] == "agent"
    return name == "kube_replicaset_owner" and tags["owner_name"] == "agent"


def _statefulset_history(sim: SimCluster, export: HistoryExport, out: Path) -> Path:
    """What kube-state-metrics says of a StatefulSet ``agent``: it owns its pods, with its replicas."""
    pods = [p.name for p in sim.pods["apps/agent"]]
    lines = ["# TYPE kube_pod_owner gauge\n"]
    stamps = [export.start_s + i * STEP_S for i in range(export.steps + 1)]
    for pod in pods:
        labels = f'namespace="apps",pod="{pod}",owner_kind="StatefulSet",owner_name="agent",owner_is_controller="true"'
        lines += [f"kube_pod_owner{{{labels}}} 1 {t:.3f}\n" for t in stamps]
    for family, labels, value in (
        ("kube_statefulset_replicas", 'namespace="apps",statefulset="agent"', len(pods)),
        ("kube_statefulset_status_replicas_ready", 'namespace="apps",statefulset="agent"', len(pods)),
        # a workload that serves no model: kube-state-metrics lists it like any other
        ("kube_deployment_status_replicas_available", 'namespace="kube-system",deployment="coredns"', 2),
    ):
        lines.append(f"# TYPE {family} gauge" + chr(10))
        lines += [f"{family}{{{labels}}} {value} {t:.3f}" + chr(10) for t in stamps]
    out.write_text("".join(lines) + "# EOF\n")
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    need_prometheus()
    root = tmp_path_factory.mktemp("mixed")
    sim = scenario_twin(root, SCENARIO, hours=HOURS, step_s=STEP_S)

    def scale(sim: SimCluster) -> None:  # batch goes from 1 to 2 replicas 5 minutes before the end
        if sim.now_s >= END_S - 300 and sim.deployment_state("offline/batch").spec.replicas == 1:
            config = sim.deployment_state("offline/batch").spec.with_changes(replicas=2)
            sim.apply(DeploymentRef(name="batch", namespace="offline"), config, proposal_id="scale")

    export = write_history(
        sim, root / "mixed.om", hours=HOURS, step_s=STEP_S, exclude=_excluded, on_step=scale
    )
    sts = _statefulset_history(sim, export, root / "statefulset.om")
    with PrometheusServer(backfill=[export.path, sts]) as prom:
        yield History(sim, export, prom)


def _at(m: History) -> datetime:
    return datetime.fromtimestamp(m.export.end_s, UTC)


def test_the_twin_exports_each_engine_under_its_own_names(mixed: History) -> None:
    text = Path(mixed.export.path).read_text()
    assert 'sglang:num_running_reqs{namespace="apps",pod="agent-' in text
    assert 'vllm:num_requests_running{namespace="apps",pod="chat-' in text
    assert 'vllm:num_requests_running{namespace="apps",pod="agent-' not in text
    assert "sglang:cached_tokens_total" in text and "sglang:prompt_tokens_histogram_bucket" in text


def test_each_deployment_is_read_under_its_engine(mixed: History) -> None:
    source = PrometheusSource(mixed.prom.url)
    assert [n.engine for n in source.engines_present("15m", _at(mixed))] == ["vllm", "sglang"]
    prom = source.snapshot(window="15m", at=_at(mixed))
    twin = SimTelemetrySource(mixed.sim).snapshot(window="15m")
    # the engine probes, then each engine's signals, replicas, 2 per-pod queries, the peak's and the window's span;
    # the 4 that do not depend on the engine (GPU utilization and memory, replicas, available
    # replicas) are asked once
    assert prom.queries == len(ENGINE_NAMES) + 2 * (len(SIGNALS) + 5) - ENGINE_FREE_QUERIES
    # only workloads with engine or GPU series: not coredns, which kube-state-metrics also lists
    assert sorted((d.namespace, d.deployment, d.engine) for d in prom.deployments) == [
        ("apps", "agent", "sglang"), ("apps", "chat", "vllm"), ("offline", "batch", None),
    ]  # fmt: skip
    batch = prom.for_deployment("batch", "offline")
    assert batch is not None and "gpu_utilization" in batch.signals and "requests_running" in batch.missing
    # scaled from 1 to 2 late in the window: the replicas that served it on average, as the twin counts them
    twin_batch = twin.for_deployment("batch", "offline")
    assert twin_batch is not None and batch.replicas == 2
    assert 1.05 < batch.signals["replicas_available"] < 1.5
    assert batch.signals["replicas_available"] == pytest.approx(
        twin_batch.signals["replicas_available"], rel=0.05
    )
    assert not [n for n in batch.notes if "no metric" in n]  # no engine to blame
    for name, engine in (("chat", "vllm"), ("agent", "sglang")):
        got, want = prom.for_deployment(name, "apps"), twin.for_deployment(name, "apps")
        assert got is not None and want is not None
        assert got.engine == engine == want.engine and got.replicas == 2
        assert not [n for n in got.notes if "no metric" in n or "engines" in n], got.notes
        for signal in ("request_rate_per_s", "prompt_tokens_per_s", "generation_tokens_per_s", "ttft_p50_ms"):
            assert got.signals[signal] == pytest.approx(want.signals[signal], rel=0.05), (name, signal)
        # agent's available replicas come from kube_statefulset_status_replicas_ready
        assert got.signals["replicas_available"] == pytest.approx(
            want.signals["replicas_available"], rel=0.01
        )
        for signal in ("requests_running", "kv_cache_usage", "prompt_len_p99", "output_len_p99"):
            assert got.signals[signal] == pytest.approx(want.signals[signal], rel=0.25), (name, signal)
        names = ENGINE_NAMES[engine]
        assert names.running is not None and names.running[0] in got.evidence["requests_running"].query
    agent = prom.for_deployment("agent", "apps")
    assert agent is not None
    # SGLang's cached prompt tokens over all prompt tokens: the share of the prompts the cache served
    assert agent.signals["prefix_cache_hit_rate"] == pytest.approx(0.5, abs=0.1)
    assert "sglang:cached_tokens_total" in agent.evidence["prefix_cache_hit_rate"].query


def test_one_engine_pinned_reads_only_its_deployments(mixed: History) -> None:
    vllm_only = PrometheusSource(mixed.prom.url, names=VLLM_NAMES).snapshot(window="15m", at=_at(mixed))
    assert vllm_only.queries == len(SIGNALS) + 5
    agent = vllm_only.for_deployment("agent", "apps")  # there through its GPU series only
    assert agent is not None and agent.engine is None
    assert "requests_running" in agent.missing and "gpu_utilization" in agent.signals
    sglang_only = PrometheusSource(mixed.prom.url, names=SGLANG_NAMES).snapshot(window="15m", at=_at(mixed))
    chat = sglang_only.for_deployment("chat", "apps")
    assert chat is not None and "request_rate_per_s" in chat.missing and chat.engine is None


class _TgiProbeFails(PrometheusSource):
    def query(self, promql: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
        if promql.startswith("count(last_over_time(tgi_"):
            raise BackendUnavailableError("probe timed out")
        return super().query(promql, at=at)


def test_a_failed_probe_reads_its_engine_anyway(mixed: History) -> None:
    source = _TgiProbeFails(mixed.prom.url)
    assert [n.engine for n in source.engines_present("15m", _at(mixed))] == ["vllm", "tgi", "sglang"]
    snap = source.snapshot(window="15m", at=_at(mixed))
    tgi_queries = len(PromQLBuilder(TGI_NAMES, LabelMap()).plan("15m").queries) + 5  # fewer signals
    # TGI's read finds nothing; each engine-free query is asked once
    assert snap.queries == len(ENGINE_NAMES) + 2 * (len(SIGNALS) + 5) + tgi_queries - 2 * ENGINE_FREE_QUERIES
    assert {d.deployment: d.engine for d in snap.deployments} == {
        "chat": "vllm",
        "agent": "sglang",
        "batch": None,
    }


def test_an_engine_gone_from_the_window_keeps_its_peaks(mixed: History) -> None:
    """Half an hour after the history ends the window is empty, but the day holds both engines."""
    later = datetime.fromtimestamp(mixed.export.end_s + 1800, UTC)
    source = PrometheusSource(mixed.prom.url)
    assert [n.engine for n in source.engines_present("15m", later)] == ["vllm", "sglang"]
    snap = source.snapshot(window="15m", at=later)
    for name in ("chat", "agent"):
        tel = snap.for_deployment(name, "apps")
        assert tel is not None and "request_rate_per_s" in tel.missing, name
        assert tel.signals["request_rate_peak_per_s"] > 0, name


def test_a_window_prometheus_holds_only_part_of_has_its_rates_read_over_what_it_holds(mixed: History) -> None:
    """Five minutes into the history a 15m window holds 5 minutes of data: rate() divides what it
    saw by the whole window, so every rate would read about two thirds low; they are read again
    over the seconds held (as the 5m window reads them), and the snapshot says so."""
    early = datetime.fromtimestamp(mixed.export.start_s + 300, UTC)
    source = PrometheusSource(mixed.prom.url)
    snap = source.snapshot(window="15m", at=early)
    later = source.snapshot(window="5m", at=early)
    rates = len(PromQLBuilder(VLLM_NAMES, LabelMap()).rate_queries("5m"))
    assert snap.queries - later.queries in (rates, rates + 4)  # one re-read per span held (vLLM, SGLang)
    for name, ns in (("chat", "apps"), ("agent", "apps")):
        tel, short = snap.for_deployment(name, ns), later.for_deployment(name, ns)
        assert tel is not None and short is not None
        [note] = [n for n in tel.notes if "of the 15m window" in n]
        held = float(note.split("holds ")[1].split(" s")[0])
        assert 240 <= held <= 330, note  # the 5 minutes, within a step
        over = int(held // 30 * 30)
        assert f"are read over the last {over} s instead" in note
        assert "they read 6" in note or "they read 7" in note
        for sig in ("request_rate_per_s", "generation_tokens_per_s", "prompt_tokens_per_s"):
            ratio = tel.signals[sig] / short.signals[sig]
            assert 0.97 < ratio < 1.03, (sig, ratio)  # over the whole window: 0.35
        assert tel.evidence["request_rate_per_s"].window == f"{over}s"
        assert f"[{over}s]" in tel.evidence["request_rate_per_s"].query  # the query behind the value
        assert tel.evidence["kv_cache_usage"].window == "15m"  # an average is not rescaled
        assert not [n for n in short.notes if "window for it" in n]  # a covered window says nothing
    full = PrometheusSource(mixed.prom.url).snapshot(window="15m", at=_at(mixed))
    assert not [n for d in full.deployments for n in d.notes if "window for it" in n]


def test_under_two_minutes_held_rates_are_left_low_and_said_so(
    mixed: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little history to rescale from (here: a threshold above the 5 minutes held)."""
    import servewise.telemetry.prometheus as prometheus

    early = datetime.fromtimestamp(mixed.export.start_s + 300, UTC)
    covered = PrometheusSource(mixed.prom.url).snapshot(window="5m", at=early).for_deployment("chat", "apps")
    monkeypatch.setattr(prometheus, "MIN_HELD_S", 3600.0)
    tel = PrometheusSource(mixed.prom.url).snapshot(window="15m", at=early).for_deployment("chat", "apps")
    assert tel is not None and covered is not None
    [note] = [n for n in tel.notes if "of the 15m window" in n]
    assert "rates (requests and tokens per second) read low, by about 6" in note or "by about 7" in note
    ratio = tel.signals["request_rate_per_s"] / covered.signals["request_rate_per_s"]
    assert 0.3 < ratio < 0.4  # 300 s + rate()'s half interval over 900 s
    assert tel.evidence["request_rate_per_s"].window == "15m"


def test_a_time_without_any_series_has_no_deployments(mixed: History) -> None:
    before = datetime.fromtimestamp(mixed.export.start_s - 3600, UTC)
    source = PrometheusSource(mixed.prom.url)
    assert source.engines_present("5m", before) == []
    snap = source.snapshot(window="5m", at=before)  # read under vLLM's names: nothing there either
    assert snap.deployments == [] and snap.queries == len(ENGINE_NAMES) + len(SIGNALS) + 5
    [note] = snap.notes  # an empty answer is said, not shown as an empty success
    assert note.startswith(
        "no deployment has engine (vLLM, TGI, SGLang) or GPU (DCGM) series in the 5m window"
    )
    args = [
        "telemetry",
        "snapshot",
        "--prometheus",
        mixed.prom.url,
        "--at",
        before.isoformat(),
        "--window",
        "5m",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "note: no deployment has engine" in result.stderr


def _tel(engine: str, **signals: float) -> DeploymentTelemetry:
    return DeploymentTelemetry(deployment="x", namespace="a", engine=engine, signals=signals)


def test_two_engines_claiming_a_deployment_go_to_the_one_with_more_signals() -> None:
    gpu = {"gpu_utilization": 0.5, "gpu_memory_used_bytes": 1e10}
    reads = [
        [_tel("vllm", requests_running=1.0, **gpu)],
        [_tel("tgi", **gpu)],
        [_tel("sglang", requests_running=2.0, request_rate_per_s=1.0, **gpu)],
    ]
    (merged,) = _merge(reads)
    assert merged.engine == "sglang" and merged.signals["requests_running"] == 2.0
    assert merged.notes == [
        "series of engines sglang and vllm under one deployment: read as sglang, which has the most signals"
    ]


def test_the_cli_reads_every_engine_and_names_a_wrong_one(mixed: History) -> None:
    at = _at(mixed).isoformat()
    args = ["telemetry", "snapshot", "--prometheus", mixed.prom.url, "--at", at, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {d["deployment"]: d["engine"] for d in doc["deployments"]} == {
        "agent": "sglang", "chat": "vllm", "batch": None,
    }  # fmt: skip
    early = ["telemetry", "snapshot", "--prometheus", mixed.prom.url, "--window", "15m"]
    early += ["--at", datetime.fromtimestamp(mixed.export.start_s + 300, UTC).isoformat()]
    table = CliRunner().invoke(app, early)  # the table mode prints each deployment's notes
    assert table.exit_code == 0 and "apps/chat: Prometheus holds" in table.stderr
    wrong = CliRunner().invoke(app, [*args, "--engine", "triton"])
    assert isinstance(wrong.exception, InputError) and wrong.exception.field == "--engine"
    assert "triton" in str(wrong.exception)


def test_without_kube_state_metrics_a_pod_label_names_the_workload(mixed: History) -> None:
    """Here the label is the engines' ``model_name``: each model's pods, counted over the window."""
    labels = LabelMap(deployment="model_name")
    snap = PrometheusSource(mixed.prom.url, label_map=labels, use_owners=False).snapshot(
        window="15m", at=_at(mixed)
    )
    by_model = {d.deployment: d for d in snap.deployments}
    assert set(by_model) == {"llama-3.1-8b", "qwen2.5-7b"}  # batch's engine series were never scraped
    assert by_model["llama-3.1-8b"].engine == "vllm" and by_model["qwen2.5-7b"].engine == "sglang"
    for tel in by_model.values():
        assert tel.replicas == 2 and tel.signals["replicas_available"] == pytest.approx(2.0, abs=0.01)
