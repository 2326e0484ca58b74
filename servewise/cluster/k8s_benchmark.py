"""Benchmark Jobs: ``vllm bench serve`` against a deployment's Service, results read from the pod log.

The request is one replica's load (the ``ClusterBackend`` contract); the Job sends it to the Service
of a one-replica copy of the workload (``k8s_candidates``), never to production, where users' traffic
would mix with the Job's and the p99 would measure neither. ``vllm bench serve`` waits for the copy's
server to answer (``--ready-check-timeout-sec``) before it starts measuring.

The Job runs in the benchmark namespace (the only place servewise may create Jobs), has
``backoffLimit: 0``, ``activeDeadlineSeconds`` from the request and ``ttlSecondsAfterFinished`` so the
cluster cleans it up; servewise deletes it itself (propagation ``Background``) on timeout or cancel.
The load generator saves its result JSON (``--save-result``) and the script prints it between two
marker lines; when that is missing the human-readable summary block is parsed instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from servewise.cluster.k8s_api import KubeApi
from servewise.cluster.k8s_parsing import ParsedWorkload
from servewise.domain import BenchmarkRequest, BenchmarkResult, Workload
from servewise.errors import BackendUnavailableError, InputError, NotFoundError, ServewiseError

log = logging.getLogger(__name__)

RESULT_BEGIN = "SERVEWISE_RESULT_BEGIN"
RESULT_END = "SERVEWISE_RESULT_END"
BENCHMARK_LABEL = "servewise.io/benchmark-for"
READY_CHECK_S = 1200  # how long the load generator waits for the server to answer (weights loading)
TTL_AFTER_FINISHED_S = 3600
# Summary lines printed by `vllm bench serve` -> result keys.
_SUMMARY = {
    "Successful requests": "completed",
    "Failed requests": "failed",
    "Benchmark duration (s)": "duration",
    "Request throughput (req/s)": "request_throughput",
    "Output token throughput (tok/s)": "output_throughput",
    "Median TTFT (ms)": "median_ttft_ms",
    "P50 TTFT (ms)": "p50_ttft_ms",
    "P99 TTFT (ms)": "p99_ttft_ms",
    "Median TPOT (ms)": "median_tpot_ms",
    "P50 TPOT (ms)": "p50_tpot_ms",
    "P99 TPOT (ms)": "p99_tpot_ms",
    "P99 E2EL (ms)": "p99_e2el_ms",
}
# Print only the scalar results (the saved file also holds per-request lists and texts).
_PRINT_SCALARS = (
    "import json; d = json.load(open('/tmp/servewise/result.json')); "
    "print(json.dumps({k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}))"
)
_LINE = re.compile(r"^\s*([A-Za-z0-9 ()/.%-]+?):\s+([-+0-9.eE]+|nan|inf)\s*$")


def bench_args(
    workload: Workload,
    *,
    base_url: str,
    model: str,
    num_requests: int,
    served_name: str | None = None,
    endpoint: str = "/v1/completions",
) -> list[str]:
    """``vllm bench serve`` arguments for a workload (random dataset with its lengths and arrivals).

    ``model`` names the tokenizer (a Hugging Face id); ``served_name`` is what the server answers to;
    ``endpoint`` is its OpenAI completions route (KServe's Hugging Face runtime: under ``/openai``).
    """
    if workload.trace is not None:
        raise InputError(
            "trace workloads cannot be replayed by vllm bench serve; use lengths + rate", field="trace"
        )
    prefix = int(round(workload.input_len.mean * workload.prefix_share))
    input_len = max(1, int(round(workload.input_len.mean)) - prefix)
    spread = max(
        _range_ratio(workload.input_len.std, workload.input_len.mean),
        _range_ratio(workload.output_len.std, workload.output_len.mean),
    )
    args = [
        "vllm", "bench", "serve",
        "--backend", "openai", "--endpoint", endpoint,
        "--base-url", base_url, "--model", model,
        "--dataset-name", "random",
        "--random-input-len", str(input_len),
        "--random-output-len", str(int(round(workload.output_len.mean))),
        "--num-prompts", str(workload.num_requests or num_requests),
        "--ignore-eos",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", "/tmp/servewise", "--result-filename", "result.json",
        "--ready-check-timeout-sec", str(READY_CHECK_S),
    ]  # fmt: skip
    if served_name and served_name != model:
        args += ["--served-model-name", served_name]
    if prefix:
        args += ["--random-prefix-len", str(prefix)]
    if spread > 0:
        args += ["--random-range-ratio", f"{spread:.3f}"]
    if workload.arrival_rate_per_s is not None:
        args += [
            "--request-rate",
            f"{workload.arrival_rate_per_s:g}",
            "--burstiness",
            f"{workload.burstiness:g}",
        ]
    if workload.concurrency is not None:
        args += ["--max-concurrency", str(workload.concurrency)]
    return args


def _range_ratio(std: float, mean: float) -> float:
    """vLLM samples lengths uniformly in [L(1-r), L(1+r)]; match the std of the distribution."""
    return min(0.99, std * math.sqrt(3.0) / mean) if mean > 0 and std > 0 else 0.0


def label_value(text: str) -> str:
    """``text`` as a label value: at most 63 characters, alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")


def unique_name(prefix: str, name: str, salt: str, keep: int = 40) -> str:
    """``PREFIX-NAME-HASH``: a DNS-1035 label (lowercase, no dots) unique to ``salt`` and the moment,
    with at most ``keep`` characters of ``name``."""
    digest = hashlib.sha256(salt.encode() + str(time.time_ns()).encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:keep].strip("-")
    return f"{prefix}-{base}-{digest}"


def job_name(ref_name: str, request: BenchmarkRequest) -> str:
    return unique_name("sw-bench", ref_name, request.model_dump_json())


def build_job(
    name: str, namespace: str, request: BenchmarkRequest, parsed: ParsedWorkload, base_url: str, *, image: str
) -> dict[str, Any]:
    """The Job that sends ``request`` (one replica's load) to the server behind ``base_url``."""
    hub_id = "/" in parsed.model_arg and not parsed.model_arg.startswith(("/", "."))
    args = bench_args(
        request.workload,
        base_url=base_url,
        model=parsed.model_arg if hub_id else parsed.served_model_name,
        served_name=parsed.served_model_name,
        num_requests=request.num_requests,
        endpoint=parsed.completions_path,
    )
    script = (
        f"mkdir -p /tmp/servewise && {shlex.join(args)} && echo {RESULT_BEGIN} && "
        f"python3 -c {shlex.quote(_PRINT_SCALARS)} && echo {RESULT_END}"
    )
    labels = {
        BENCHMARK_LABEL: label_value(f"{request.ref.namespace}.{request.ref.name}"),
        "app.kubernetes.io/managed-by": "servewise",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(math.ceil(request.deadline_s)),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "loadgen",
                            "image": image,
                            "command": ["/bin/sh", "-c"],
                            "args": [script],
                            "resources": {
                                "requests": {"cpu": "2", "memory": "4Gi"},
                                "limits": {"memory": "8Gi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def parse_bench_output(text: str) -> dict[str, float]:
    """Metrics from a pod log: the saved result JSON between markers, else the summary block."""
    if RESULT_BEGIN in text and RESULT_END in text:
        body = text.split(RESULT_BEGIN, 1)[1].split(RESULT_END, 1)[0].strip()
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InputError(f"benchmark result is not JSON: {exc}", source="benchmark pod log") from exc
        return {
            k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1).strip() in _SUMMARY:
            out[_SUMMARY[m.group(1).strip()]] = float(m.group(2))
    if "completed" not in out:
        raise InputError("no 'Serving Benchmark Result' in the benchmark log", source="benchmark pod log")
    return out


def to_result(
    metrics: Mapping[str, float],
    request: BenchmarkRequest,
    parsed: ParsedWorkload,
    source: str,
    started: datetime,
) -> BenchmarkResult:
    def pick(*keys: str) -> float:
        for key in keys:
            if key in metrics:
                return metrics[key]
        raise InputError(f"benchmark output lacks {keys[0]}", source=source)

    return BenchmarkResult(
        ref=request.ref,
        config=parsed.config,
        workload=request.workload,
        completed=int(pick("completed")),
        failed=int(metrics.get("failed", 0)),
        throughput_tok_s=pick("output_throughput"),
        request_throughput_per_s=pick("request_throughput"),
        ttft_p50_ms=pick("p50_ttft_ms", "median_ttft_ms"),
        ttft_p99_ms=pick("p99_ttft_ms"),
        tpot_p50_ms=pick("p50_tpot_ms", "median_tpot_ms"),
        tpot_p99_ms=pick("p99_tpot_ms"),
        e2e_p99_ms=pick("p99_e2el_ms"),
        started_at=started,
        duration_s=float(metrics.get("duration", 0.0)),
        source=source,
    )


def service_url(services: Sequence[Mapping[str, Any]], parsed: ParsedWorkload) -> str:
    """``http://svc.ns.svc:port`` of the Service whose selector picks the workload's pods."""
    for svc in services:
        selector = svc.get("spec", {}).get("selector") or {}
        if selector and all(parsed.pod_labels.get(k) == v for k, v in selector.items()):
            ports = svc.get("spec", {}).get("ports") or []
            port = next(
                (
                    p
                    for p in ports
                    if int(str(p.get("targetPort", p.get("port")))) == parsed.port
                    if str(p.get("targetPort", p.get("port"))).isdigit()
                ),
                ports[0] if ports else None,
            )
            if port is None:
                continue
            return f"http://{svc['metadata']['name']}.{parsed.namespace}.svc:{port['port']}"
    raise NotFoundError(
        f"no Service in {parsed.namespace} selects the pods of {parsed.name}; a benchmark needs one"
    )


def inference_service_url(obj: Mapping[str, Any]) -> str:
    """Where KServe serves an InferenceService's predictor inside the cluster: the scheme and host
    of ``status.components.predictor.address.url``, else of ``status.address.url`` (before KServe
    0.11 a Serverless one carried a ``/v1/models/<name>:predict`` path), else the predictor's
    Service, ``<name>-predictor.<namespace>.svc.cluster.local``."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    predictor = ((status.get("components") or {}).get("predictor") or {}).get("address") or {}
    for url in (predictor.get("url"), (status.get("address") or {}).get("url")):
        if url:
            parts = urlsplit(str(url))
            if parts.scheme and parts.netloc:
                return f"{parts.scheme}://{parts.netloc}"
    return f"http://{meta['name']}-predictor.{meta['namespace']}.svc.cluster.local"


class BenchmarkRunner:
    def __init__(self, api: KubeApi, namespace: str, *, image: str) -> None:
        self.api, self.namespace, self.image = api, namespace, image

    def run(
        self, request: BenchmarkRequest, parsed: ParsedWorkload, url: str, *, poll_interval_s: float = 2.0
    ) -> BenchmarkResult:
        """Run ``request`` (one replica's load) against the server of ``parsed`` at ``url``."""
        name = job_name(request.ref.name, request)  # named for the workload, not for its copy
        job = build_job(name, self.namespace, request, parsed, url, image=self.image)
        started = datetime.now(UTC)
        self.api.call(
            "create", "jobs", self.namespace, self.api.batch.create_namespaced_job, self.namespace, job
        )
        finished = False
        try:
            self._wait(name, request.deadline_s, poll_interval_s)
            finished = True
            text = self._logs(name)
            return to_result(
                parse_bench_output(text), request, parsed, f"job/{self.namespace}/{name}", started
            )
        finally:
            if not finished:  # timeout, failure or cancel (KeyboardInterrupt): leave nothing running
                self.delete(name)

    def _wait(self, name: str, deadline_s: float, poll_interval_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            job = self.api.call(
                "get",
                "jobs",
                self.namespace,
                self.api.batch.read_namespaced_job,
                name,
                self.namespace,
                name=name,
            )
            status = job.get("status") or {}
            if int(status.get("succeeded", 0) or 0) > 0:
                return
            if int(status.get("failed", 0) or 0) > 0:
                log_tail = self._logs(name)[-500:]
                raise BackendUnavailableError(
                    f"benchmark job {self.namespace}/{name} failed; log tail: {log_tail}"
                )
            if time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"benchmark job {self.namespace}/{name} not done after {deadline_s:g}s"
                )
            time.sleep(poll_interval_s)

    def _logs(self, name: str) -> str:
        pods = self.api.call(
            "list",
            "pods",
            self.namespace,
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"job-name={name}",
        ).get("items", [])
        if not pods:
            raise NotFoundError(f"benchmark job {self.namespace}/{name} has no pod")
        pod = str(pods[-1]["metadata"]["name"])
        text: str = self.api.call(
            "get",
            "pods/log",
            self.namespace,
            self.api.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            name=pod,
            raw=True,
        )
        return text

    def delete(self, name: str) -> None:
        try:
            self.api.call(
                "delete",
                "jobs",
                self.namespace,
                self.api.batch.delete_namespaced_job,
                name,
                self.namespace,
                name=name,
                propagation_policy="Background",
            )
        except ServewiseError as exc:  # cleanup must not hide the original error
            log.warning("could not delete benchmark job %s/%s: %s", self.namespace, name, exc)
