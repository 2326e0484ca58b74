"""Benchmarking a candidate config on the cluster: a temporary copy of the workload, its own Service,
the benchmark Job against it, and nothing left behind (the real client over HTTP, the emulator)."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import kmock
import kubernetes_validate
import pytest
from k8s_emulator import FaithfulEmulator, Fault, statefulset_claims
from test_benchmark import SUMMARY, WORKLOAD, job_controller

from servewise.cluster.k8s_candidates import CANDIDATE_LABEL
from servewise.cluster.k8s_candidates import EXPIRES_ANNOTATION as EXPIRES
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import BenchmarkRequest, BenchmarkResult, DeploymentRef
from servewise.errors import ForbiddenError, InputError, RolloutError

BIG = DeploymentRef(name="llama-70b", namespace="llm-serving")
STS = DeploymentRef(name="qwen-32b-awq", namespace="llm-serving", kind="StatefulSet")


def _record_creates(fleet: FaithfulEmulator) -> dict[str, list[dict[str, Any]]]:
    """What the adapter creates, per resource (deleted objects have no body left in the emulator)."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for plural in ("deployments", "statefulsets", "services"):
        fleet.controls.on_create[plural] = lambda _emu, obj, p=plural: seen.setdefault(p, []).append(obj)
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    return seen


def _record_jobs(fleet: FaithfulEmulator) -> list[dict[str, Any]]:
    """The benchmark Jobs the adapter creates (each completes with ``SUMMARY``)."""
    jobs: list[dict[str, Any]] = []
    fleet.controls.on_create["jobs"] = lambda emu, job: (jobs.append(job), job_controller(SUMMARY)(emu, job))
    return jobs


def _script(job: dict[str, Any]) -> str:
    """The shell script a benchmark Job runs."""
    return str(job["spec"]["template"]["spec"]["containers"][0]["args"][0])


def _live_candidates(fleet: FaithfulEmulator, plural: str) -> list[str]:
    return [
        name
        for (res, _, name), obj in fleet.objects.items()
        if res.plural == plural
        and not obj.deleted
        and CANDIDATE_LABEL in (obj.raw["metadata"].get("labels") or {})
    ]


def _created(fleet: FaithfulEmulator, plural: str, dry: bool = False) -> int:
    return sum(1 for c in fleet.calls if c.verb == "create" and c.resource == plural and c.dry_run == dry)


def _run_candidate(
    cluster: KubernetesCluster, ref: DeploymentRef = BIG, deadline_s: float = 10, **changes: Any
) -> BenchmarkResult:
    """Benchmark the deployed config of ``ref`` with ``changes`` (default: 48 sequences)."""
    candidate = cluster.get_deployment(ref).config.with_changes(**(changes or {"max_num_seqs": 48}))
    return cluster.run_benchmark(
        BenchmarkRequest(ref=ref, config=candidate, workload=WORKLOAD, deadline_s=deadline_s)
    )


def test_a_candidate_runs_on_a_temporary_copy_that_is_deleted_after(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _record_creates(fleet)
    jobs = _record_jobs(fleet)
    deployed = cluster.get_deployment(BIG).config
    candidate = deployed.with_changes(max_num_seqs=48)
    result = cluster.run_benchmark(
        BenchmarkRequest(ref=BIG, config=candidate, workload=WORKLOAD, deadline_s=10)
    )

    assert result.config == candidate and result.completed == 198
    # dry run first, then the copy and its Service; all of it gone afterwards
    assert (_created(fleet, "deployments", dry=True), _created(fleet, "deployments")) == (1, 1)
    assert _created(fleet, "services") == 1
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []
    [copy], [service] = seen["deployments"], seen["services"]
    name = copy["metadata"]["name"]
    assert name.startswith("sw-cand-llama-70b-") and copy["spec"]["replicas"] == 1
    # the candidate's flags, and pod labels the production Service does not select
    args = copy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "48"
    assert copy["spec"]["template"]["metadata"]["labels"] == {
        CANDIDATE_LABEL: name,
        "app.kubernetes.io/managed-by": "servewise",
    }
    assert service["spec"]["selector"] == {CANDIDATE_LABEL: name}
    for manifest in (copy, service):
        kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    # the Job loads the copy's one replica through the copy's Service, not the production one
    [job] = jobs
    script = _script(job)
    assert f"--base-url http://{name}.llm-serving.svc:8000" in script and "--request-rate 4 " in script
    # the deployed workload is untouched
    assert cluster.get_deployment(BIG).config == deployed


def test_a_statefulset_candidate_is_a_statefulset_copy(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _record_creates(fleet)
    _run_candidate(cluster, STS, max_num_batched_tokens=8192)
    [copy] = seen["statefulsets"]
    assert copy["spec"]["serviceName"] == copy["metadata"]["name"] and copy["spec"]["replicas"] == 1
    assert _live_candidates(fleet, "statefulsets") == [] and _live_candidates(fleet, "services") == []


@pytest.mark.parametrize("config", ["deployed", "more replicas"])
def test_the_deployed_config_runs_on_a_copy_too(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, config: str
) -> None:
    """Production's Service carries users' traffic: a Job sending to it would add load to production
    and measure a mix of both (another replica count is the deployed config, one replica of it)."""
    seen = _record_creates(fleet)
    deployed = cluster.get_deployment(BIG).config
    request = BenchmarkRequest(ref=BIG, workload=WORKLOAD, deadline_s=10)
    if config == "more replicas":
        request = request.model_copy(update={"config": deployed.with_changes(replicas=5)})
    cluster.run_benchmark(request)
    [copy] = seen["deployments"]
    args = copy["spec"]["template"]["spec"]["containers"][0]["args"]
    original = fleet.get("Deployment", BIG.namespace, BIG.name)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args == original and copy["spec"]["replicas"] == 1


def _left_behind(first: dict[str, Any], name: str, expires: str, **labels: str) -> dict[str, Any]:
    meta = first["metadata"]
    return {
        **first,
        "metadata": {
            **meta,
            "name": name,
            "labels": {**meta["labels"], CANDIDATE_LABEL: name, **labels},
            "annotations": {**meta["annotations"], EXPIRES: expires},
        },
    }


def test_an_expired_copy_left_by_a_killed_run_is_deleted_by_the_next(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _record_creates(fleet)
    _run_candidate(cluster)
    first, service = seen["deployments"][0], seen["services"][0]
    past, future = "2020-01-01T00:00:00+00:00", "2999-01-01T00:00:00+00:00"
    fleet.seed(_left_behind(first, "sw-cand-llama-70b-stale000", past))
    fleet.seed(_left_behind(first, "sw-cand-llama-70b-naive000", "2020-01-01T00:00:00"))  # no zone: UTC
    fleet.seed(_left_behind(service, "sw-cand-llama-70b-svc00000", past))  # its workload already gone
    fleet.seed(_left_behind(first, "sw-cand-llama-70b-live0000", future))  # another run may be on it
    fleet.seed(
        _left_behind(first, "sw-cand-theirs-00000000", past, **{"app.kubernetes.io/managed-by": "helm"})
    )
    fleet.seed(_left_behind(first, "sw-cand-llama-70b-junk0000", "soon"))
    _run_candidate(cluster)
    assert sorted(_live_candidates(fleet, "deployments")) == [
        "sw-cand-llama-70b-junk0000",
        "sw-cand-llama-70b-live0000",
        "sw-cand-theirs-00000000",
    ]
    assert _live_candidates(fleet, "services") == []


def test_a_statefulset_copy_name_leaves_room_for_its_pods_revision_label(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    from servewise.cluster.k8s_candidates import candidate_name

    parsed = cluster._parse_one(cluster._read(STS))
    long = type(parsed)(**{**parsed.__dict__, "name": "qwen-32b-awq-" + "x" * 50})
    assert len(candidate_name(long, parsed.config)) + 11 <= 63


def test_deleting_a_copy_is_retried(cluster: KubernetesCluster, fleet: FaithfulEmulator) -> None:
    _record_creates(fleet)
    fleet.controls.faults.append(Fault(verb="delete", resource="deployments", status=503, times=2))
    result = _run_candidate(cluster)
    assert result.completed == 198 and _live_candidates(fleet, "deployments") == []


CACHE_CLAIM = {
    "metadata": {"name": "model-cache", "labels": {"tier": "cache"}},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "200Gi"}}},
}


def _sts_with_claims(fleet: FaithfulEmulator) -> None:
    """qwen-32b-awq caches its model on a claim per replica; production's 3 claims exist."""
    stored = fleet.get("StatefulSet", STS.namespace, STS.name)
    stored["spec"]["volumeClaimTemplates"] = [CACHE_CLAIM]
    stored["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "model-cache", "mountPath": "/root/.cache/huggingface"}
    ]
    fleet.put("StatefulSet", STS.namespace, STS.name, stored)
    statefulset_claims(fleet, stored)


def _claims(fleet: FaithfulEmulator) -> list[str]:
    return sorted(
        name
        for (res, _, name), obj in fleet.objects.items()
        if res.plural == "persistentvolumeclaims" and not obj.deleted
    )


def test_a_statefulset_copy_claims_fresh_volumes_deleted_with_it(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    _sts_with_claims(fleet)
    production = ["model-cache-qwen-32b-awq-0", "model-cache-qwen-32b-awq-1", "model-cache-qwen-32b-awq-2"]
    assert _claims(fleet) == production
    seen = _record_creates(fleet)
    made: list[str] = []
    record = fleet.controls.on_create["statefulsets"]
    fleet.controls.on_create["statefulsets"] = lambda emu, obj: (
        record(emu, obj),
        made.extend(statefulset_claims(emu, obj)),
    )
    result = _run_candidate(cluster, STS, max_num_batched_tokens=8192)
    assert result.completed == 198
    [copy] = seen["statefulsets"]
    name = copy["metadata"]["name"]
    kubernetes_validate.validate(copy, "1.30.0", strict=True)
    # the controller deletes the copy's claims with it; they carry its label and expiry for the rest
    assert copy["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }
    [template] = copy["spec"]["volumeClaimTemplates"]
    assert (
        template["metadata"]["labels"][CANDIDATE_LABEL] == name
        and template["metadata"]["labels"]["tier"] == "cache"
    )
    assert EXPIRES in template["metadata"]["annotations"]
    assert made == [f"model-cache-{name}-0"]  # its own, fresh volume: never production's
    assert _claims(fleet) == production  # the copy's claim is gone, production's are untouched
    assert any(c.verb == "delete" and c.resource == "persistentvolumeclaims" for c in fleet.calls)


def test_an_expired_claim_left_by_a_killed_run_is_deleted_by_the_next(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    _sts_with_claims(fleet)
    _record_creates(fleet)
    past = "2020-01-01T00:00:00+00:00"

    def left(name: str, copy: str, expires: str = past, managed: str = "servewise") -> None:
        labels = {CANDIDATE_LABEL: copy, "app.kubernetes.io/managed-by": managed}
        fleet.seed(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": name, "namespace": STS.namespace, "labels": labels, "annotations": {EXPIRES: expires},
                },
                "spec": CACHE_CLAIM["spec"],
            }
        )  # fmt: skip

    left("model-cache-sw-cand-qwen-32b-awq-stale000-0", "sw-cand-qwen-32b-awq-stale000")
    left(
        "model-cache-sw-cand-qwen-32b-awq-live0000-0",
        "sw-cand-qwen-32b-awq-live0000",
        "2999-01-01T00:00:00+00:00",
    )
    left("model-cache-sw-cand-qwen-32b-awq-theirs00-0", "sw-cand-qwen-32b-awq-theirs00", managed="helm")
    left("data-of-someone-else-0", "sw-cand-qwen-32b-awq-other000")  # not the controller's name for it
    _run_candidate(cluster, STS, max_num_batched_tokens=8192)
    assert _claims(fleet) == [
        "data-of-someone-else-0",
        "model-cache-qwen-32b-awq-0",
        "model-cache-qwen-32b-awq-1",
        "model-cache-qwen-32b-awq-2",
        "model-cache-sw-cand-qwen-32b-awq-live0000-0",
        "model-cache-sw-cand-qwen-32b-awq-theirs00-0",
    ]


ISVC_REF = DeploymentRef(name="llama-isvc", namespace="llm-serving", kind="InferenceService")
ISVC = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {
        "name": "llama-isvc",
        "namespace": "llm-serving",
        "labels": {"app": "llama", "networking.kserve.io/visibility": "cluster-local"},
        "annotations": {
            "serving.kserve.io/deploymentMode": "RawDeployment",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "team": "search",
        },
    },
    "spec": {
        "predictor": {
            "minReplicas": 2,
            "maxReplicas": 4,
            "priorityClassName": "production-critical",
            "labels": {"app": "llama"},  # KServe puts these on the pods: production's selectors match them
            "logger": {"mode": "all", "url": "http://payload-sink.audit"},
            "canaryTrafficPercent": 10,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "vllm/vllm-openai:v0.10.1",
                    "args": [
                        "--model",
                        "meta-llama/Llama-3.1-8B-Instruct",
                        "--port",
                        "8080",
                        "--max-num-seqs",
                        "64",
                    ],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
        "transformer": {"containers": [{"name": "pre", "image": "example/tokenize:1"}]},
    },
}


def _with_kserve(fleet: FaithfulEmulator, isvc: dict[str, Any] = ISVC) -> list[dict[str, Any]]:
    """KServe installed, ``isvc`` deployed; returns the InferenceServices created from now on."""
    fleet.resources["serving.kserve.io/v1beta1/inferenceservices"] = kmock.ResourceInfo(namespaced=True)
    fleet.seed(isvc)
    seen: list[dict[str, Any]] = []
    fleet.controls.on_create["inferenceservices"] = lambda _emu, obj: seen.append(obj)
    return seen


def test_an_inference_service_candidate_is_an_inference_service_copy(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _with_kserve(fleet)
    jobs = _record_jobs(fleet)
    deployed = cluster.get_deployment(ISVC_REF).config
    result = _run_candidate(cluster, ISVC_REF, max_num_seqs=48)
    assert result.completed == 198 and result.config == deployed.with_changes(max_num_seqs=48)
    [copy] = seen
    name = copy["metadata"]["name"]
    assert re.fullmatch(r"sw-cand-llama-isvc-[0-9a-f]{8}", name)
    assert (copy["apiVersion"], copy["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    # served the way production is (deployment mode, visibility), under labels of its own
    assert copy["metadata"]["labels"] == {
        "networking.kserve.io/visibility": "cluster-local",
        CANDIDATE_LABEL: name,
        "servewise.io/benchmark-for": "llm-serving.llama-isvc",
        "app.kubernetes.io/managed-by": "servewise",
    }
    annotations = copy["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment" and EXPIRES in annotations
    assert annotations["autoscaling.knative.dev/target-burst-capacity"] == "0"  # no activator at one replica
    assert "team" not in annotations and "kubectl.kubernetes.io/last-applied-configuration" not in annotations
    # one replica that autoscaling cannot grow, preempting nothing, the predictor alone
    predictor = copy["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert "priorityClassName" not in predictor
    # no pod labels production's selectors match, no payload logging of benchmark requests, no canary split
    assert not {"labels", "logger", "canaryTrafficPercent"} & set(predictor)
    assert "transformer" not in copy["spec"]
    args = predictor["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "48"
    # dry run first; KServe makes the Service: servewise makes none
    assert (_created(fleet, "inferenceservices", dry=True), _created(fleet, "inferenceservices")) == (1, 1)
    assert _created(fleet, "services") == 0
    # the Job loads the copy through the address KServe reports for it
    [job] = jobs
    script = _script(job)
    assert f"--base-url http://{name}-predictor.llm-serving.svc.cluster.local " in script
    assert _live_candidates(fleet, "inferenceservices") == []
    assert cluster.get_deployment(ISVC_REF).config == deployed


def test_an_inference_service_copy_is_cluster_local_in_productions_mode(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """Production exposed outside the cluster, its mode only in its status (the cluster default)."""
    public = copy.deepcopy(ISVC)
    public["metadata"]["labels"] = {}
    public["metadata"]["annotations"] = {}
    public["status"] = {"deploymentMode": "Serverless"}
    seen = _with_kserve(fleet, public)
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    _run_candidate(cluster, ISVC_REF, max_num_seqs=48)
    [made] = seen
    assert made["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    assert made["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


@pytest.mark.parametrize(
    ("status", "url"),
    [
        ({"components": {"predictor": {"address": {"url": "http://p.ns.svc.cluster.local"}}},
          "address": {"url": "http://top.ns.svc.cluster.local"}}, "http://p.ns.svc.cluster.local"),
        # KServe before 0.11: a Serverless address carried the v1 predict path
        ({"address": {"url": "http://x.ns.svc.cluster.local/v1/models/x:predict"}}, "http://x.ns.svc.cluster.local"),
        ({}, "http://x-predictor.ns.svc.cluster.local"),
    ],
)  # fmt: skip
def test_the_benchmark_url_of_an_inference_service(status: dict[str, Any], url: str) -> None:
    from servewise.cluster.k8s_benchmark import inference_service_url

    assert inference_service_url({"metadata": {"name": "x", "namespace": "ns"}, "status": status}) == url


def test_a_forbidden_list_skips_that_kind_in_the_sweep(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    seen = _record_creates(fleet)
    _run_candidate(cluster)
    fleet.seed(
        _left_behind(seen["deployments"][0], "sw-cand-llama-70b-stale000", "2020-01-01T00:00:00+00:00")
    )
    fleet.controls.faults.append(Fault(verb="list", resource="persistentvolumeclaims", status=403, times=5))
    _run_candidate(cluster)
    assert _live_candidates(fleet, "deployments") == []  # the other kinds were swept all the same
    assert any("could not list persistentvolumeclaims" in r.getMessage() for r in caplog.records)


def test_an_inference_service_whose_model_names_an_engine_image_is_copied_as_it_is_written(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """``predictor.model`` with its own vLLM image (KServe's Hugging Face runtime: test_kserve_runtime)."""
    predictor = ISVC["spec"]["predictor"]  # type: ignore[index]
    model = {**predictor["containers"][0], "modelFormat": {"name": "huggingface"}}
    runtime = {**ISVC, "spec": {"predictor": {"nodeSelector": predictor["nodeSelector"], "model": model}}}
    seen = _with_kserve(fleet, runtime)
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    _run_candidate(cluster, ISVC_REF, max_num_seqs=48)
    [made] = seen
    args = made["spec"]["predictor"]["model"]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "48" and "containers" not in made["spec"]["predictor"]


def test_an_expired_inference_service_copy_is_deleted_by_the_next_run(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    seen = _with_kserve(fleet)
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    _run_candidate(cluster, ISVC_REF, max_num_seqs=48)
    fleet.seed(_left_behind(seen[0], "sw-cand-llama-isvc-stale000", "2020-01-01T00:00:00+00:00"))
    fleet.seed(_left_behind(seen[0], "sw-cand-llama-isvc-live0000", "2999-01-01T00:00:00+00:00"))
    _run_candidate(cluster, ISVC_REF, max_num_seqs=40)
    assert _live_candidates(fleet, "inferenceservices") == ["sw-cand-llama-isvc-live0000"]


def test_a_cluster_without_kserve_sweeps_quietly(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    _record_creates(fleet)
    _run_candidate(cluster)
    assert not [r for r in caplog.records if "sweep" in r.getMessage()]


def test_a_copy_is_a_valid_dns_name_and_preempts_nothing(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    stored = fleet.get("Deployment", BIG.namespace, BIG.name)
    stored["metadata"]["name"] = "llama-3.1-70b.prod"
    stored["spec"]["template"]["spec"]["priorityClassName"] = "production-critical"
    fleet.seed(stored)
    seen = _record_creates(fleet)
    ref = DeploymentRef(name="llama-3.1-70b.prod", namespace=BIG.namespace)
    cluster.run_benchmark(BenchmarkRequest(ref=ref, workload=WORKLOAD, deadline_s=10))
    [copy], [service] = seen["deployments"], seen["services"]
    assert re.fullmatch(r"sw-cand-llama-3-1-70b-prod-[0-9a-f]{8}", service["metadata"]["name"])
    assert "priorityClassName" not in copy["spec"]["template"]["spec"]
    assert copy["metadata"]["labels"]["servewise.io/benchmark-for"] == "llm-serving.llama-3.1-70b.prod"


def test_a_candidate_that_never_gets_ready_is_deleted_and_not_benchmarked(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.auto_rollout = False
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    cluster.candidate_ready_s = 0.3
    with pytest.raises(RolloutError, match="sw-cand-llama-70b-"):
        _run_candidate(cluster)
    assert _created(fleet, "jobs") == 0
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []


def test_candidate_benchmarks_can_be_switched_off(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVEWISE_CANDIDATE_BENCHMARKS", "0")
    off = KubernetesCluster(context="kmock", poll_interval_s=0.05)
    with pytest.raises(InputError, match="SERVEWISE_CANDIDATE_BENCHMARKS=0"):
        _run_candidate(off)
    assert not [c for c in fleet.calls if c.verb == "create"]


def test_a_workload_outside_the_allowed_namespaces_gets_no_copy(fleet: FaithfulEmulator) -> None:
    fenced = KubernetesCluster(context="kmock", allowed_namespaces=["team-a"], poll_interval_s=0.05)
    with pytest.raises(ForbiddenError, match="llm-serving"):
        _run_candidate(fenced)
    assert not [c for c in fleet.calls if c.verb == "create"]


def _declare(fleet: FaithfulEmulator, annotations: dict[str, str]) -> None:
    stored = fleet.get("Deployment", BIG.namespace, BIG.name)
    stored["metadata"].setdefault("annotations", {}).update(annotations)
    fleet.put("Deployment", BIG.namespace, BIG.name, stored)


DECLARED = {
    "servewise.io/slo": '{"ttft_p99_ms": 1500, "tpot_p99_ms": 80}',
    "servewise.io/workload": '{"input_len": 1024, "output_len": 256, "arrival_rate_per_s": 4}',
}


def test_the_slo_and_load_are_declared_in_annotations(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    _declare(fleet, DECLARED)
    dep = cluster.get_deployment(BIG)
    assert dep.slo is not None and dep.slo.objectives() == {"ttft_p99_ms": 1500, "tpot_p99_ms": 80}
    assert dep.workload is not None and (dep.workload.input_len.mean, dep.workload.arrival_rate_per_s) == (
        1024,
        4,
    )


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ('{"ttft_p99": 1500}', "servewise.io/slo: unknown field(s) ttft_p99"),
        ("ttft=1500", "servewise.io/slo is not JSON"),
        ('{"ttft_p99_ms": -1}', "servewise.io/slo: ttft_p99_ms"),
        ("{}", "servewise.io/slo sets no objective"),
    ],
)
def test_a_malformed_declaration_names_the_annotation(
    cluster: KubernetesCluster, fleet: FaithfulEmulator, annotation: str, message: str
) -> None:
    _declare(fleet, {"servewise.io/slo": annotation})
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster.get_deployment(BIG)
    [bad] = [u for u in cluster.list_unparsed() if u.name == BIG.name]
    assert message in bad.reason
    assert BIG.name not in {d.ref.name for d in cluster.list_deployments()}


def test_the_optimizer_benchmarks_candidates_on_the_cluster(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """The loop on a real client: each benchmarked candidate runs on its own temporary copy."""
    from servewise.tools.proposing import optimize_deployment
    from servewise.tools.search_space import SearchPolicy

    _declare(fleet, DECLARED)
    seen = _record_creates(fleet)
    plan = optimize_deployment(
        cluster.get_deployment(BIG), cluster, policy=SearchPolicy(benchmark_budget=3, confirm_requests=1000)
    )
    copies = [
        t for t in plan.trials if t.config.with_changes(replicas=2) != cluster.get_deployment(BIG).config
    ]
    assert plan.trials and len(seen.get("deployments", [])) == len(copies)
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []
    assert all(t.measured for t in plan.trials)  # every run read its Job's result
    # the pick is a measured one, and its copy asked for the candidate's GPUs
    assert plan.proposal is not None and plan.proposal.predicted.validated_by.startswith("benchmark")
    picked = plan.proposal.proposed
    [copy] = [
        c
        for c in seen["deployments"]
        if picked.tensor_parallel
        == int(c["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    ][:1]
    assert copy["spec"]["replicas"] == 1


UNSCHEDULABLE = (
    "0/5 nodes are available: 3 Insufficient nvidia.com/gpu, 2 node(s) didn't match node affinity."
)
MULTI_ATTACH = (
    'Multi-Attach error for volume "pvc-7f3a" Volume is already used by pod(s) llama-70b-5d9c8-x2x7q'
)


def _stuck_copy(*, scheduled: bool, event_type: str, reason: str, message: str) -> Any:
    """Plays the Deployment controller for a copy whose pod never starts: one pending pod (placed
    or not) and one event about it."""

    def create(emu: FaithfulEmulator, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if obj["kind"] != "Deployment" or CANDIDATE_LABEL not in meta.get("labels", {}):
            return
        pod, ns = f"{meta['name']}-abc12", meta["namespace"]
        condition = {"type": "PodScheduled", "status": "True"}
        if not scheduled:
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE,
            }
        emu.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": ns,
                    "labels": obj["spec"]["template"]["metadata"]["labels"],
                },
                "spec": {
                    "containers": [{"name": "vllm", "image": "x"}],
                    **({"nodeName": "gpu-b"} if scheduled else {}),
                },
                "status": {"phase": "Pending", "conditions": [condition]},
            }
        )
        emu.seed(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{pod}.1", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": pod},
                "type": event_type,
                "reason": reason,
                "message": message,
            }
        )

    return create


def test_a_copy_no_node_can_take_gives_up_early_and_is_deleted(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.auto_rollout = False
    fleet.controls.on_create["deployments"] = _stuck_copy(
        scheduled=False, event_type="Warning", reason="FailedScheduling", message=UNSCHEDULABLE
    )
    fleet.controls.on_create["jobs"] = job_controller(SUMMARY)
    cluster.candidate_ready_s, cluster.candidate_unschedulable_s = 60, 0.3
    started = time.monotonic()
    with pytest.raises(RolloutError, match=r"cannot start .*Insufficient nvidia.com/gpu.*no node coming"):
        _run_candidate(cluster)
    assert time.monotonic() - started < 30  # not the 60 s ready deadline
    assert _created(fleet, "jobs") == 0
    assert _live_candidates(fleet, "deployments") == [] and _live_candidates(fleet, "services") == []


def test_a_copy_waits_for_a_node_the_autoscaler_is_adding(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    fleet.controls.auto_rollout = False
    fleet.controls.on_create["deployments"] = _stuck_copy(
        scheduled=False,
        event_type="Normal",
        reason="TriggeredScaleUp",
        message="pod triggered scale-up: [gpu-h100 1->2 (max: 4)]",
    )
    cluster.candidate_ready_s, cluster.candidate_unschedulable_s = 1.0, 0.1
    with pytest.raises(RolloutError, match="stalled after 1s") as info:
        _run_candidate(cluster)
    assert any("Unschedulable" in e for e in info.value.events)
    assert _live_candidates(fleet, "deployments") == []


def test_a_copy_whose_volume_another_node_holds_gives_up_early(
    cluster: KubernetesCluster, fleet: FaithfulEmulator
) -> None:
    """A ReadWriteOnce volume (a model cache, say) stays attached to production's node: the copy's
    pod is placed elsewhere and never starts."""
    fleet.controls.auto_rollout = False
    fleet.controls.on_create["deployments"] = _stuck_copy(
        scheduled=True, event_type="Warning", reason="FailedAttachVolume", message=MULTI_ATTACH
    )
    cluster.candidate_ready_s, cluster.candidate_unschedulable_s = 60, 0.3
    started = time.monotonic()
    with pytest.raises(RolloutError, match=r"cannot start .*Multi-Attach error"):
        _run_candidate(cluster)
    assert time.monotonic() - started < 30
    assert _live_candidates(fleet, "deployments") == []
