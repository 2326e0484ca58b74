"""InferenceServices on KServe's Hugging Face runtime (``predictor.model`` with ``modelFormat:
huggingface``: vLLM behind KServe's own flags): discovered, patched and rolled back in place, and
benchmarked on a copy through the runtime's ``/openai`` routes (the real client, the emulator)."""

from __future__ import annotations

import copy
import re
from typing import Any

import kmock
import pytest
from k8s_emulator import FaithfulEmulator
from test_benchmark import SUMMARY, WORKLOAD, job_controller

from servewise.cluster.k8s_parsing import HF_RUNTIME, UnparsableWorkload, parse_workload
from servewise.cluster.k8s_records import PROPOSAL_ANNOTATION
from servewise.cluster.kubernetes import KubernetesCluster
from servewise.domain import BenchmarkRequest, DeploymentRef, Engine
from servewise.errors import InputError
from servewise.perf.catalog import get_catalog

REF = DeploymentRef(name="huggingface-llama3", namespace="llm-serving", kind="InferenceService")
# As KServe's docs deploy Llama 3 with the Hugging Face runtime, plus engine flags and a GPU type.
HF_ISVC: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {
        "name": "huggingface-llama3",
        "namespace": "llm-serving",
        "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
    },
    "spec": {
        "predictor": {
            "minReplicas": 2,
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "model": {
                "modelFormat": {"name": "huggingface"},
                "args": [
                    "--model_name=llama3",
                    "--model_id=meta-llama/Llama-3.1-8B-Instruct",
                    "--max-num-seqs=128",
                ],
                "resources": {
                    "limits": {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "1"},
                    "requests": {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "1"},
                },
            },
        }
    },
}


def _isvc(**model: Any) -> dict[str, Any]:
    obj = copy.deepcopy(HF_ISVC)
    obj["spec"]["predictor"]["model"].update(model)
    return obj


def _model(fleet: FaithfulEmulator) -> dict[str, Any]:
    stored: dict[str, Any] = fleet.get("InferenceService", REF.namespace, REF.name)["spec"]["predictor"][
        "model"
    ]
    return stored


@pytest.fixture
def kserve(fleet: FaithfulEmulator) -> FaithfulEmulator:
    fleet.resources["serving.kserve.io/v1beta1/inferenceservices"] = kmock.ResourceInfo(namespaced=True)
    fleet.seed(HF_ISVC)
    return fleet


def test_the_runtime_is_read_as_vllm_under_kserves_flags() -> None:
    parsed = parse_workload(HF_ISVC, get_catalog())
    assert (parsed.engine, parsed.runtime, parsed.kind) == (Engine.VLLM, HF_RUNTIME, "InferenceService")
    assert parsed.config.model == "llama-3.1-8b" and parsed.config.gpu == "h100-sxm"
    assert (parsed.config.max_num_seqs, parsed.config.replicas) == (128, 2)
    assert (parsed.model_arg, parsed.served_model_name) == ("meta-llama/Llama-3.1-8B-Instruct", "llama3")
    assert parsed.completions_path == "/openai/v1/completions"


def test_the_served_name_defaults_to_the_inference_services_and_the_route_prefix_moves() -> None:
    """The ClusterServingRuntime passes ``--model_name={{.Name}}``; an empty
    ``KSERVE_OPENAI_ROUTE_PREFIX`` serves OpenAI's routes at the root."""
    obj = _isvc(
        args=["--model_id=meta-llama/Llama-3.1-8B-Instruct"],
        env=[{"name": "KSERVE_OPENAI_ROUTE_PREFIX", "value": ""}],
    )
    parsed = parse_workload(obj, get_catalog())
    assert parsed.served_model_name == "huggingface-llama3"
    assert parsed.completions_path == "/v1/completions"


def test_a_model_from_an_hf_storage_uri_is_read_but_not_rewritten() -> None:
    parsed = parse_workload(_isvc(args=[], storageUri="hf://meta-llama/Llama-3.1-8B-Instruct"), get_catalog())
    assert parsed.config.model == "llama-3.1-8b" and parsed.model_from_storage_uri
    with pytest.raises(UnparsableWorkload, match="--model_id"):
        parse_workload(_isvc(args=[], storageUri="s3://models/llama"), get_catalog())


def test_the_transformers_backend_is_not_an_engine_servewise_tunes() -> None:
    obj = _isvc(args=["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--backend=huggingface"])
    with pytest.raises(UnparsableWorkload, match="no container runs vLLM"):
        parse_workload(obj, get_catalog())


@pytest.mark.parametrize("backend", [["--backend=vllm"], ["--backend", "vllm"], []])
def test_the_vllm_backend_named_or_not_is_the_runtime(backend: list[str]) -> None:
    """KServe's own tests pass ``--backend vllm``: "vllm" in the args must not make it plain vLLM."""
    parsed = parse_workload(
        _isvc(args=["--model_id=meta-llama/Llama-3.1-8B-Instruct", *backend]), get_catalog()
    )
    assert parsed.runtime == HF_RUNTIME and parsed.served_model_name == "huggingface-llama3"


def test_a_pinned_revision_in_the_storage_uri_is_not_part_of_the_model() -> None:
    parsed = parse_workload(
        _isvc(args=[], storageUri="hf://meta-llama/Llama-3.1-8B-Instruct:0e9e39f"), get_catalog()
    )
    assert parsed.model_arg == "meta-llama/Llama-3.1-8B-Instruct" and parsed.config.model == "llama-3.1-8b"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--max_num_seqs=64"], "--max_num_seqs (it reads --max-num-seqs)"),
        (["--model-id=meta-llama/Llama-3.1-8B-Instruct"], "--model-id (it reads --model_id)"),
        (["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--model-name", "x"], "--model-name (it reads --model_name)"),
        (["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--max-length=4096"], "--max-length (it reads --max_length)"),
    ],
)  # fmt: skip
def test_a_spelling_the_runtime_silently_drops_is_refused_not_read(args: list[str], said: str) -> None:
    """The runtime parses with plain argparse and ignores what it does not know: read as written,
    servewise would report (and edit) a value the server never used."""
    with pytest.raises(UnparsableWorkload, match=re.escape(said)):
        parse_workload(_isvc(args=args), get_catalog())


def test_kserves_own_max_model_len_spelling_is_read() -> None:
    obj = _isvc(args=["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--max_model_len=8192"])
    assert parse_workload(obj, get_catalog()).config.max_model_len == 8192
    old = _isvc(args=["--model_id=meta-llama/Llama-3.1-8B-Instruct", "--max_length", "4096"])
    assert parse_workload(old, get_catalog()).config.max_model_len == 4096


def test_the_multi_node_runtime_is_not_read_as_one_node() -> None:
    """Its engine starts from the runtime's script, parallelism from workerSpec: neither is read."""
    multi = _isvc(runtime="kserve-huggingfaceserver-multinode")
    multi["spec"]["predictor"]["workerSpec"] = {"pipelineParallelSize": 2, "tensorParallelSize": 1}
    with pytest.raises(UnparsableWorkload, match="kserve-huggingfaceserver-multinode' with a workerSpec"):
        parse_workload(multi, get_catalog())
    with pytest.raises(UnparsableWorkload, match="'my-llm-runtime'"):
        parse_workload(_isvc(runtime="my-llm-runtime"), get_catalog())
    assert parse_workload(_isvc(runtime="kserve-huggingfaceserver"), get_catalog()).runtime == HF_RUNTIME


def test_a_change_is_patched_into_the_model_and_rolled_back(
    cluster: KubernetesCluster, kserve: FaithfulEmulator
) -> None:
    before = copy.deepcopy(_model(kserve))
    current = cluster.get_deployment(REF).config
    target = current.with_changes(
        max_num_seqs=256, tensor_parallel=2, replicas=1, quantization={"kv_cache": "fp8"}
    )
    result = cluster.apply(REF, target, proposal_id="p-hf")
    assert {op["path"] for op in result.patch} >= {
        "/spec/predictor/model/args/2",
        "/spec/predictor/model/resources/limits/nvidia.com~1gpu",
        "/spec/predictor/minReplicas",
    }
    model = _model(kserve)
    assert model["args"][:3] == [
        "--model_name=llama3",
        "--model_id=meta-llama/Llama-3.1-8B-Instruct",
        "--max-num-seqs=256",
    ]
    assert {"--tensor-parallel-size", "--kv-cache-dtype"} <= set(model["args"][3:])
    assert (
        model["resources"]["requests"]["nvidia.com/gpu"] == "2" and model["resources"]["limits"]["cpu"] == "6"
    )
    assert "containers" not in kserve.get("InferenceService", REF.namespace, REF.name)["spec"]["predictor"]
    assert cluster.get_deployment(REF).config == target
    cluster.rollback(REF, proposal_id="p-hf")
    after = kserve.get("InferenceService", REF.namespace, REF.name)
    assert after["spec"]["predictor"]["model"] == before and after["spec"]["predictor"]["minReplicas"] == 2
    assert PROPOSAL_ANNOTATION not in after["metadata"]["annotations"]
    record = kserve.get("ConfigMap", REF.namespace, f"servewise-record-{REF.name}")["data"]
    assert record == {"rolled-back-proposal": "p-hf"}
    assert cluster.get_deployment(REF).config == current


def test_a_model_change_rewrites_model_id_and_keeps_the_served_name(
    cluster: KubernetesCluster, kserve: FaithfulEmulator
) -> None:
    target = cluster.get_deployment(REF).config.with_changes(model="llama-3.1-70b", tensor_parallel=4)
    cluster.apply(REF, target, proposal_id="p-hf-model")
    args = _model(kserve)["args"]
    assert args[0] == "--model_name=llama3" and "--served-model-name" not in args
    assert args[1].startswith("--model_id=meta-llama/") and "70B" in args[1]
    assert cluster.get_deployment(REF).config.model == "llama-3.1-70b"


def test_a_model_from_a_storage_uri_is_not_changed_by_a_patch(
    cluster: KubernetesCluster, kserve: FaithfulEmulator
) -> None:
    kserve.put(
        "InferenceService",
        REF.namespace,
        REF.name,
        _isvc(args=["--max-num-seqs=128"], storageUri="hf://meta-llama/Llama-3.1-8B-Instruct"),
    )
    before = kserve.get("InferenceService", REF.namespace, REF.name)
    target = cluster.get_deployment(REF).config.with_changes(model="llama-3.1-70b", tensor_parallel=4)
    with pytest.raises(InputError, match="storageUri"):
        cluster.apply(REF, target, proposal_id="p-hf-uri")
    assert kserve.get("InferenceService", REF.namespace, REF.name) == before


def test_a_candidate_is_a_copy_on_the_runtime_loaded_through_its_openai_route(
    cluster: KubernetesCluster, kserve: FaithfulEmulator
) -> None:
    made: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    kserve.controls.on_create["inferenceservices"] = lambda _emu, obj: made.append(obj)
    kserve.controls.on_create["jobs"] = lambda emu, job: (jobs.append(job), job_controller(SUMMARY)(emu, job))
    candidate = cluster.get_deployment(REF).config.with_changes(max_num_seqs=48)
    result = cluster.run_benchmark(
        BenchmarkRequest(ref=REF, config=candidate, workload=WORKLOAD, deadline_s=10)
    )
    assert result.config == candidate
    [isvc] = made
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1) and "containers" not in predictor
    assert predictor["model"]["modelFormat"] == {"name": "huggingface"}
    assert "--max-num-seqs=48" in predictor["model"]["args"]
    [job] = jobs
    script = str(job["spec"]["template"]["spec"]["containers"][0]["args"][0])
    name = isvc["metadata"]["name"]
    assert f"--base-url http://{name}-predictor.llm-serving.svc.cluster.local " in script
    assert "--endpoint /openai/v1/completions " in script
    assert "--model meta-llama/Llama-3.1-8B-Instruct " in script and "--served-model-name llama3" in script
    assert cluster.get_deployment(REF).config.max_num_seqs == 128  # production untouched


def test_the_runtime_is_discovered_as_a_workload(
    cluster: KubernetesCluster, kserve: FaithfulEmulator
) -> None:
    found = {d.ref.key: d for d in cluster.list_deployments()}
    assert found[REF.key].config.model == "llama-3.1-8b" and found[REF.key].ref.kind == "InferenceService"


def test_a_serverless_predictor_is_done_when_its_latest_revision_is_ready() -> None:
    from servewise.cluster.k8s_rollout import evaluate_rollout

    def status(created: str, ready: str) -> dict[str, Any]:
        return {
            "metadata": {"generation": 2},
            "spec": {"predictor": {"minReplicas": 1}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "components": {"predictor": {"latestCreatedRevision": created, "latestReadyRevision": ready}},
            },
        }

    assert not evaluate_rollout(REF, status("p-00002", "p-00001")).done
    assert evaluate_rollout(REF, status("p-00002", "p-00002")).done
