"""Benchmark Jobs: manifest, a simulated Job controller in the emulator, log parsing, cleanup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from k8s_emulator import FaithfulEmulator

from servewise.cluster.k8s_benchmark import (
    RESULT_BEGIN,
    RESULT_END,
    bench_args,
    build_job,
    parse_bench_output,
)
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import BenchmarkRequest, DeploymentRef, LengthDistribution, Workload
from servewise.errors import BackendUnavailableError, InputError

SUMMARY = (Path(__file__).parent / "bench_serve_output.txt").read_text()
BIG = DeploymentRef(name="llama-70b", namespace="llm-serving")
WORKLOAD = Workload.fixed(1024, 256, rate=4.0)


def job_controller(log_text: str, succeed: bool = True):  # type: ignore[no-untyped-def]
    def on_job(emu: FaithfulEmulator, job: dict[str, Any]) -> None:
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        pod = f"{name}-x7k2p"
        emu.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"job-name": name}},
                "spec": job["spec"]["template"]["spec"],
                "status": {"phase": "Succeeded"},
            }
        )
        emu.controls.logs[(ns, pod)] = log_text
        if succeed:
            stored = emu.get("Job", ns, name)
            stored["status"] = {"succeeded": 1}
            emu.put("Job", ns, name, stored)

    return on_job


def test_summary_block_is_parsed() -> None:
    metrics = parse_bench_output(SUMMARY)
    assert metrics["completed"] == 198 and metrics["failed"] == 2
    assert (
        metrics["p99_ttft_ms"] == 512.93
        and metrics["p50_tpot_ms"] == 37.95
        and metrics["p99_e2el_ms"] == 13006.55
    )


def test_garbage_log_is_an_input_error() -> None:
    with pytest.raises(InputError, match="Serving Benchmark Result"):
        parse_bench_output("Traceback (most recent call last):\n  ConnectionRefusedError")


def test_bench_args_follow_the_workload() -> None:
    workload = Workload(
        input_len=LengthDistribution(kind="normal", mean=2000, std=400),
        output_len=LengthDistribution.fixed(200),
        concurrency=16,
        prefix_share=0.25,
    )
    args = bench_args(
        workload, base_url="http://svc.ns.svc:80", model="org/m", num_requests=50, served_name="alias"
    )
    value = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    assert value["--random-input-len"] == "1500" and value["--random-prefix-len"] == "500"
    assert value["--max-concurrency"] == "16" and value["--num-prompts"] == "50"
    assert float(value["--random-range-ratio"]) == pytest.approx(400 * 3**0.5 / 2000, abs=1e-3)
    assert "--request-rate" not in value
    assert value["--model"] == "org/m" and value["--served-model-name"] == "alias"


def test_job_script_runs_and_prints_a_parsable_result(tmp_path: Path, cluster: KubernetesCluster) -> None:
    """The Job's shell script, run with a stand-in `vllm` on PATH that writes a result file."""
    fake = tmp_path / "vllm"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        "a = sys.argv[1:]\n"
        "assert a[:2] == ['bench', 'serve'], a\n"
        "out = os.path.join(a[a.index('--result-dir') + 1], a[a.index('--result-filename') + 1])\n"
        "json.dump({'completed': int(a[a.index('--num-prompts') + 1]), 'failed': 0, 'duration': 2.0,\n"
        "           'request_throughput': 1.5, 'output_throughput': 99.0, 'p50_ttft_ms': 5.0, 'p99_ttft_ms': 7.0,\n"
        "           'p50_tpot_ms': 1.0, 'p99_tpot_ms': 2.0, 'p99_e2el_ms': 300.0, 'ttfts': [0.1],\n"
        "           'generated_texts': ['x' * 1000]}, open(out, 'w'))\n"
    )
    fake.chmod(0o755)
    parsed = cluster._parse_one(cluster._read(BIG))
    job = build_job(
        "j",
        "servewise-bench",
        BenchmarkRequest(ref=BIG, workload=WORKLOAD, num_requests=17),
        parsed,
        "http://llama-70b.llm-serving.svc:80",
        image="vllm/vllm-openai:latest",
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    metrics = parse_bench_output(out)
    assert metrics["completed"] == 17 and metrics["p99_e2el_ms"] == 300.0
    assert "generated_texts" not in out  # only scalars reach the log


def test_benchmark_job_runs_and_reads_the_saved_json(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    saved = {
        "completed": 200,
        "failed": 0,
        "duration": 50.0,
        "request_throughput": 4.0,
        "output_throughput": 1024.0,
        "p50_ttft_ms": 150.0,
        "p99_ttft_ms": 480.0,
        "p50_tpot_ms": 36.0,
        "p99_tpot_ms": 45.0,
        "p99_e2el_ms": 12000.0,
    }
    log_text = SUMMARY + f"{RESULT_BEGIN}\n{json.dumps(saved)}\n{RESULT_END}\n"
    fleet.controls.on_create["jobs"] = job_controller(log_text)
    result = cluster.run_benchmark(
        BenchmarkRequest(ref=BIG, workload=WORKLOAD, num_requests=200, deadline_s=10)
    )
    assert result.completed == 200 and result.ttft_p99_ms == 480.0 and result.throughput_tok_s == 1024.0
    assert result.request_throughput_per_s == 4.0 and result.workload == WORKLOAD
    assert result.config.model == "llama-3.1-70b" and result.source.startswith(
        "job/servewise-bench/sw-bench-llama-70b-"
    )
    job = next(
        obj for (res, ns, _), obj in fleet.objects.items() if res.plural == "jobs" and ns == "servewise-bench"
    )
    spec = job.raw["spec"]
    assert (
        spec["ttlSecondsAfterFinished"] > 0
        and spec["activeDeadlineSeconds"] == 10
        and spec["backoffLimit"] == 0
    )
    script = spec["template"]["spec"]["containers"][0]["args"][0]
    # one replica's load, to a one-replica copy's Service: never to production's (llama-70b:80)
    assert "--base-url http://sw-cand-llama-70b-" in script and ".llm-serving.svc:8000" in script
    assert "--request-rate 4 " in script and "--ready-check-timeout-sec 1200" in script
    assert "--model meta-llama/Llama-3.3-70B-Instruct" in script
    kubernetes_validate.validate(job.raw, "1.30.0", strict=True)


def test_summary_only_log_still_gives_a_result(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    result = cluster.run_benchmark(BenchmarkRequest(ref=BIG, workload=WORKLOAD, deadline_s=10))
    assert (result.completed, result.failed, result.tpot_p99_ms) == (198, 2, 49.02)


def test_timeout_deletes_the_job(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY, succeed=False)
    with pytest.raises(BackendUnavailableError, match="not done"):
        cluster.run_benchmark(BenchmarkRequest(ref=BIG, workload=WORKLOAD, deadline_s=0.3))
    deletes = [c for c in fleet.calls if c.verb == "delete" and c.resource == "jobs"]
    assert len(deletes) == 1 and deletes[0].namespace == "servewise-bench"
    assert all(obj.deleted for (res, _, _), obj in fleet.objects.items() if res.plural == "jobs")


def test_a_workload_without_a_service_is_benchmarked_through_its_copys(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    ref = DeploymentRef(name="mistral-tgi", namespace="llm-serving")
    result = cluster.run_benchmark(BenchmarkRequest(ref=ref, workload=WORKLOAD, deadline_s=10))
    assert result.completed == 198 and result.source.startswith("job/servewise-bench/sw-bench-mistral-tgi-")


def test_an_unset_deadline_fits_a_long_run(cluster: KubernetesCluster) -> None:
    """10 000 requests at 0.5 req/s send for 5.6 h: the Job must not be cut at the default 30 minutes."""
    parsed = cluster._parse_one(cluster._read(BIG))
    slow = Workload.fixed(1024, 256, rate=0.5)
    long_run = BenchmarkRequest(ref=BIG, workload=slow, num_requests=10_000)
    job = build_job("j", "servewise-bench", long_run, parsed, "http://x.llm-serving.svc:80", image="i")
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 1.5 * 10_000 / 0.5
    assert BenchmarkRequest(ref=BIG, workload=slow, num_requests=100).deadline_s == 1800  # short: default
    assert BenchmarkRequest(ref=BIG, workload=slow, num_requests=10_000, deadline_s=60).deadline_s == 60
