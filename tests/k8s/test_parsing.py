"""Command-line and manifest parsing without a cluster: every spelling engines and charts use."""

from __future__ import annotations

from typing import Any

import pytest

from servewise.cluster.k8s_argv import container_argv, detect_engine, parse_flags
from servewise.cluster.k8s_parsing import UnparsableWorkload, parse_workload
from servewise.domain import Engine
from servewise.perf.catalog import get_catalog


def deployment(
    container: dict[str, Any], *, selector: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [container]}
    if selector is not None:
        pod_spec["nodeSelector"] = selector
    pod_spec.update(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "d"}}, "spec": pod_spec}},
    }


def vllm(args: list[str], gpus: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.10.1",
        "args": args,
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
        **extra,
    }


H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_flag_styles() -> None:
    flags = parse_flags(
        [
            "m",
            "--a=1",
            "--b",
            "2",
            "-tp",
            "4",
            "--trust-remote-code",
            "x",
            "--max_num_seqs",
            "8",
            "--rate",
            "-1",
        ]
    )
    assert flags.positional == ("m", "x")
    assert flags.values["--a"] == "1" and flags.values["--b"] == "2" and flags.values["-tp"] == "4"
    assert flags.values["--trust-remote-code"] is True
    assert flags.values["--max-num-seqs"] == "8"  # underscores are the same flag
    assert flags.values["--rate"] == "-1"  # a negative number is a value, not a flag


@pytest.mark.parametrize(
    ("container", "engine", "tokens"),
    [
        ({"image": "vllm/vllm-openai", "args": ["--model", "m"]}, Engine.VLLM, ("--model", "m")),
        (
            {"image": "x", "command": ["vllm", "serve", "m"], "args": ["-tp", "2"]},
            Engine.VLLM,
            ("m", "-tp", "2"),
        ),
        (
            {
                "image": "x",
                "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
                "args": ["--model", "m"],
            },
            Engine.VLLM,
            ("--model", "m"),
        ),
        (
            {"image": "x", "command": ["bash", "-c", "pip list && exec vllm serve m --port 8000 ; sleep 1"]},
            Engine.VLLM,
            ("m", "--port", "8000"),
        ),
        (
            {
                "image": "lmsysorg/sglang",
                "command": ["/bin/sh", "-c"],
                "args": ["python3 -m sglang.launch_server --model-path $MODEL --tp ${TP:-2}"],
                "env": [{"name": "MODEL", "value": "Qwen/Qwen2.5-7B-Instruct"}],
            },
            Engine.SGLANG,
            ("--model-path", "Qwen/Qwen2.5-7B-Instruct", "--tp", "2"),
        ),
        (
            {
                "image": "ghcr.io/huggingface/text-generation-inference",
                "args": ["--model-id", "$(M)"],
                "env": [{"name": "M", "value": "org/m"}],
            },
            Engine.TGI,
            ("--model-id", "org/m"),
        ),
    ],
)
def test_engine_argv_in_every_style(
    container: dict[str, Any], engine: Engine, tokens: tuple[str, ...]
) -> None:
    assert detect_engine(container) == engine
    argv = container_argv(container, engine)
    assert argv is not None and argv.tokens == tokens


def test_non_inference_containers_are_not_engines() -> None:
    assert detect_engine({"image": "nginx:1.27", "args": ["-g", "daemon off;"]}) is None
    assert detect_engine({"image": "python:3.11", "command": ["python", "app.py"]}) is None


def test_vllm_positional_model_tp_alias_and_affinity() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "node.kubernetes.io/instance-type",
                                "operator": "In",
                                "values": ["p5.48xlarge"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    container = {
        **vllm(["--max-model-len", "8192", "-tp", "8"], gpus="8"),
        "command": ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"],
    }
    parsed = parse_workload(deployment(container, affinity=affinity), get_catalog())
    assert (parsed.config.model, parsed.config.gpu, parsed.config.tensor_parallel) == (
        "llama-3.1-70b",
        "h100-sxm",
        8,
    )
    assert parsed.config.max_model_len == 8192 and parsed.config.replicas == 2
    assert parsed.gpu_source == "template:node.kubernetes.io/instance-type"


def test_quantized_checkpoint_and_fp8_kv() -> None:
    obj = deployment(
        vllm(["--model", "Qwen/Qwen2.5-32B-Instruct-AWQ", "--kv-cache-dtype", "fp8_e4m3"]), selector=H100
    )
    q = parse_workload(obj, get_catalog()).config.quantization
    assert (q.weights.value, q.method, q.kv_cache.value) == ("int4", "awq", "fp8")


def test_online_fp8_quantization_flag() -> None:
    obj = deployment(
        vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--quantization=fp8"]), selector=H100
    )
    assert parse_workload(obj, get_catalog()).config.quantization.weights.value == "fp8"


def test_sglang_disabled_chunked_prefill_and_radix_cache() -> None:
    container = {
        "name": "s",
        "image": "lmsysorg/sglang:latest",
        "command": ["python3", "-m", "sglang.launch_server"],
        "args": [
            "--model-path",
            "Qwen/Qwen2.5-7B-Instruct",
            "--chunked-prefill-size",
            "-1",
            "--disable-radix-cache",
            "--tp-size",
            "2",
        ],
        "resources": {"limits": {"nvidia.com/gpu": "2"}},
    }
    config = parse_workload(deployment(container, selector=H100), get_catalog()).config
    assert (config.enable_chunked_prefill, config.enable_prefix_caching, config.tensor_parallel) == (
        False,
        False,
        2,
    )


def test_tgi_reads_flags_from_its_environment() -> None:
    container = {
        "name": "t",
        "image": "ghcr.io/huggingface/text-generation-inference:3.0.1",
        "env": [
            {"name": "MODEL_ID", "value": "mistralai/Mistral-7B-Instruct-v0.3"},
            {"name": "NUM_SHARD", "value": "2"},
            {"name": "QUANTIZE", "value": "awq"},
        ],
        "resources": {"limits": {"nvidia.com/gpu": "2"}},
    }
    config = parse_workload(deployment(container, selector=H100), get_catalog()).config
    assert (config.model, config.tensor_parallel, config.quantization.method) == ("mistral-7b", 2, "awq")


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (deployment(vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct"])), "GPU type unknown"),
        (
            deployment(
                vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct"]),
                selector={"nvidia.com/gpu.product": "NVIDIA-X9000"},
            ),
            "'NVIDIA-X9000'",
        ),
        (
            deployment(
                vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--quantization", "zebra"]),
                selector=H100,
            ),
            "unknown quantization 'zebra'",
        ),
        (
            deployment(
                vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--max-num-seqs", "lots"]), selector=H100
            ),
            "not an integer",
        ),
        (
            deployment(
                vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct", "-tp", "3"], gpus="4"), selector=H100
            ),
            "power of two",
        ),
        (
            deployment(
                {
                    "name": "v",
                    "image": "vllm/vllm-openai",
                    "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct"],
                },
                selector=H100,
            ),
            "requests no GPU",
        ),
        (deployment(vllm(["--model", "$(MISSING)"]), selector=H100), "variable"),
        (deployment(vllm(["--port", "8000"]), selector=H100), "no model argument"),
    ],
)
def test_unparsable_is_never_half_guessed(obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(UnparsableWorkload, match=reason.replace("(", r"\(").replace("$", r"\$")):
        parse_workload(obj, get_catalog())


def test_affinity_with_several_gpu_types_is_ambiguous() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-L4", "NVIDIA-A10G"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    with pytest.raises(UnparsableWorkload, match="several GPU types"):
        parse_workload(
            deployment(vllm(["--model", "meta-llama/Llama-3.1-8B-Instruct"]), affinity=affinity),
            get_catalog(),
        )
