"""Parse a Deployment / StatefulSet / InferenceService into a ``ServingConfig``, or say why not.

Each engine spells the same knob differently (``--tensor-parallel-size`` / ``--num-shard`` /
``--tp-size``); ``FLAGS`` maps every spelling to one knob. Models and GPU labels resolve through the
catalog, so a name the catalog does not know makes the workload *unparsed* with that reason instead
of a guessed config. The GPU type comes from the pod template (nodeSelector, then required node
affinity) and, failing that, from the labels of the nodes its pods run on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from servewise.cluster.k8s_argv import (
    EngineArgv,
    ParsedFlags,
    container_argv,
    detect_engine,
    normalize_flag,
    parse_flags,
)
from servewise.domain import Engine, HardwareSpec, ModelSpec, Quantization, ServingConfig
from servewise.domain.quantization import INT4_METHODS, Dtype
from servewise.errors import UnknownIdError

MANAGED_LABEL = "servewise.io/managed"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
# Node labels that name the accelerator, most specific first.
GPU_LABELS = (
    "nvidia.com/gpu.product",
    "cloud.google.com/gke-accelerator",
    "karpenter.k8s.aws/instance-gpu-name",
    "amd.com/gpu.product-name",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
)

# knob -> spellings per engine. TGI also reads every flag from an environment variable (clap `env`).
FLAGS: dict[str, dict[Engine, tuple[str, ...]]] = {
    "model": {
        Engine.VLLM: ("--model",),
        Engine.TGI: ("--model-id",),
        Engine.SGLANG: ("--model-path", "--model"),
    },
    "tensor_parallel": {
        Engine.VLLM: ("--tensor-parallel-size", "-tp"),
        Engine.TGI: ("--num-shard",),
        Engine.SGLANG: ("--tp-size", "--tp", "--tensor-parallel-size"),
    },
    "pipeline_parallel": {
        Engine.VLLM: ("--pipeline-parallel-size", "-pp"),
        Engine.SGLANG: ("--pp-size", "--pipeline-parallel-size"),
    },
    "max_num_seqs": {
        Engine.VLLM: ("--max-num-seqs",),
        Engine.TGI: ("--max-batch-size",),
        Engine.SGLANG: ("--max-running-requests",),
    },
    "max_num_batched_tokens": {
        Engine.VLLM: ("--max-num-batched-tokens",),
        Engine.TGI: ("--max-batch-prefill-tokens",),
        Engine.SGLANG: ("--chunked-prefill-size",),
    },
    "quantization": {
        Engine.VLLM: ("--quantization", "-q"),
        Engine.TGI: ("--quantize",),
        Engine.SGLANG: ("--quantization",),
    },
    "kv_cache_dtype": {
        Engine.VLLM: ("--kv-cache-dtype",),
        Engine.TGI: ("--kv-cache-dtype",),
        Engine.SGLANG: ("--kv-cache-dtype",),
    },
    "gpu_memory_utilization": {
        Engine.VLLM: ("--gpu-memory-utilization",),
        Engine.TGI: ("--cuda-memory-fraction",),
        Engine.SGLANG: ("--mem-fraction-static",),
    },
    "max_model_len": {
        Engine.VLLM: ("--max-model-len",),
        Engine.TGI: ("--max-total-tokens",),
        Engine.SGLANG: ("--context-length",),
    },
    "served_model_name": {
        Engine.VLLM: ("--served-model-name",),
        Engine.SGLANG: ("--served-model-name",),
    },
    "port": {Engine.VLLM: ("--port",), Engine.TGI: ("--port",), Engine.SGLANG: ("--port",)},
}
# Boolean knobs: (flag that turns it on, flag that turns it off) per engine.
BOOL_FLAGS: dict[str, dict[Engine, tuple[str | None, str | None]]] = {
    "enable_chunked_prefill": {Engine.VLLM: ("--enable-chunked-prefill", "--no-enable-chunked-prefill")},
    "enable_prefix_caching": {
        Engine.VLLM: ("--enable-prefix-caching", "--no-enable-prefix-caching"),
        Engine.SGLANG: (None, "--disable-radix-cache"),
    },
}
DEFAULT_PORTS = {Engine.VLLM: 8000, Engine.TGI: 80, Engine.SGLANG: 30000}

# KServe's Hugging Face runtime: an InferenceService whose ``predictor.model`` has ``modelFormat:
# huggingface`` runs vLLM (its default backend for text generation) behind KServe's own flags. The
# model is ``--model_id`` or the ``storageUri`` (``hf://ORG/NAME``); the served name is
# ``--model_name``, which the ClusterServingRuntime sets to the InferenceService's name and the
# InferenceService's own args override; vLLM's engine flags pass through; the OpenAI routes sit
# under ``/openai`` unless ``KSERVE_OPENAI_ROUTE_PREFIX`` moves them. ``--backend=huggingface``
# serves with transformers, not vLLM: not an inference server servewise tunes.
HF_RUNTIME = "kserve-huggingface"
HF_RUNTIME_FLAGS = {
    "model": ("--model-id",),
    "served_model_name": ("--model-name",),
    "max_model_len": ("--max-model-len", "--max-length"),  # KServe's --max_length is its old name
}
HF_RUNTIME_PORT = 8080
OPENAI_COMPLETIONS = "/v1/completions"


def kserve_runtime(container: Mapping[str, Any]) -> str | None:
    """``HF_RUNTIME`` for a ``predictor.model`` served by KServe's Hugging Face runtime on vLLM
    (not when its image or command starts an engine itself: then its flags are that engine's)."""
    model_format = container.get("modelFormat")
    if not isinstance(model_format, Mapping) or str(model_format.get("name", "")).lower() != "huggingface":
        return None
    if detect_engine({"image": container.get("image", ""), "command": container.get("command")}):
        return None
    backend = parse_flags([str(a) for a in container.get("args") or []]).values.get("--backend", "auto")
    return HF_RUNTIME if str(backend).lower() in ("auto", "vllm") else None


# vLLM's flags as its argument parser spells them (dashes), and KServe's runtime's own (underscores):
# the runtime parses with plain argparse and drops what it does not know, so another spelling is
# silently ignored there, though vLLM itself would take it.
_VLLM_FLAGS = frozenset(
    [f for spellings in FLAGS.values() for f in spellings.get(Engine.VLLM, ())]
    + [f for pair in BOOL_FLAGS.values() for f in pair.get(Engine.VLLM, (None, None)) if f]
)
_KSERVE_OWN_FLAGS = {
    "--model-id": "--model_id",
    "--model-name": "--model_name",
    "--max-length": "--max_length",
}
_BOTH_SPELLINGS = frozenset({"--max-model-len"})  # KServe's --max_model_len sets vLLM's too


def _runtime_ignores(tokens: Sequence[str]) -> list[str]:
    """The flags in ``tokens`` KServe's Hugging Face runtime would silently drop."""
    ignored = []
    for tok in tokens:
        raw = tok.partition("=")[0]
        if not raw.startswith("--"):
            continue
        name = normalize_flag(raw)
        if name in _KSERVE_OWN_FLAGS and raw != _KSERVE_OWN_FLAGS[name]:
            ignored.append(f"{raw} (it reads {_KSERVE_OWN_FLAGS[name]})")
        elif name in _VLLM_FLAGS and "_" in raw and name not in _BOTH_SPELLINGS:
            ignored.append(f"{raw} (it reads {name})")
    return ignored


def _runtime_checks(obj: Mapping[str, Any], tokens: Sequence[str]) -> None:
    """What servewise cannot read or write on KServe's Hugging Face runtime, said, never guessed."""
    predictor = obj.get("spec", {}).get("predictor", {})
    named = str((predictor.get("model") or {}).get("runtime") or "kserve-huggingfaceserver")
    if predictor.get("workerSpec") or named != "kserve-huggingfaceserver":
        raise UnparsableWorkload(
            f"KServe runtime {named!r}{' with a workerSpec' if predictor.get('workerSpec') else ''}: its"
            " engine flags and parallelism come from the runtime and workerSpec, which servewise does not read"
        )
    ignored = _runtime_ignores(tokens)
    if ignored:
        raise UnparsableWorkload(
            f"KServe's Hugging Face runtime ignores {', '.join(ignored)}; fix the spelling in the manifest"
        )


class Resolver(Protocol):
    """What parsing needs from the catalog (``servewise.perf.catalog.Catalog`` fits)."""

    def resolve_model(self, name: str) -> tuple[ModelSpec, Quantization | None]: ...

    def gpu(self, name: str) -> HardwareSpec: ...


@dataclass(frozen=True)
class ParsedWorkload:
    """A workload as discovered, with what the patcher needs to write a change back."""

    kind: str
    name: str
    namespace: str
    engine: Engine
    config: ServingConfig
    container_index: int
    argv: EngineArgv
    model_arg: str
    served_model_name: str
    port: int
    gpu_source: str
    gpu_resource: str
    pod_labels: Mapping[str, str]
    runtime: str | None = None  # HF_RUNTIME: KServe's Hugging Face runtime runs the engine
    model_from_storage_uri: bool = False  # the model is the InferenceService's storageUri

    @property
    def completions_path(self) -> str:
        """The OpenAI completions route of the server (KServe's runtime prefixes it)."""
        if self.runtime != HF_RUNTIME:
            return OPENAI_COMPLETIONS
        prefix = self.argv.env.get("KSERVE_OPENAI_ROUTE_PREFIX", "openai").strip("/")
        return f"/{prefix}{OPENAI_COMPLETIONS}" if prefix else OPENAI_COMPLETIONS


class UnparsableWorkload(Exception):  # noqa: N818 - a control-flow signal, not an error tree member
    """Raised inside parsing; the caller records it as an ``UnparsedWorkload``."""


def pod_template(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template of a Deployment/StatefulSet, or a pod-like view of a KServe predictor."""
    if obj.get("kind") == "InferenceService":
        predictor = obj.get("spec", {}).get("predictor", {})
        containers = list(predictor.get("containers") or [])
        if not containers and isinstance(predictor.get("model"), Mapping):
            containers = [dict(predictor["model"], name="kserve-container")]
        spec = {k: v for k, v in predictor.items() if k not in ("containers", "model")}
        return {"metadata": obj.get("metadata", {}), "spec": {**spec, "containers": containers}}
    return obj.get("spec", {}).get("template", {})


def inference_container(obj: Mapping[str, Any]) -> tuple[int, Mapping[str, Any], Engine] | None:
    """The first container that runs vLLM, TGI or SGLang (KServe's Hugging Face runtime: vLLM)."""
    for i, container in enumerate(pod_template(obj).get("spec", {}).get("containers") or []):
        engine = Engine.VLLM if kserve_runtime(container) else detect_engine(container)
        if engine is not None:
            return i, container, engine
    return None


def replicas_of(obj: Mapping[str, Any]) -> int:
    spec = obj.get("spec", {})
    if obj.get("kind") == "InferenceService":
        return int(spec.get("predictor", {}).get("minReplicas", 1))
    value = spec.get("replicas")
    return 1 if value is None else int(value)


def gpu_request(container: Mapping[str, Any]) -> tuple[str, int] | None:
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        for res in GPU_RESOURCES:
            value = (resources.get(section) or {}).get(res)
            if value is not None:
                return res, int(str(value))
    return None


def gpu_from_template(template: Mapping[str, Any]) -> tuple[str, str] | None:
    """(label, value) naming the GPU type in nodeSelector or required node affinity."""
    spec = template.get("spec", {})
    selector = spec.get("nodeSelector") or {}
    for label in GPU_LABELS:
        if label in selector:
            return label, str(selector[label])
    required = (
        (spec.get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") in GPU_LABELS and expr.get("operator") == "In" and expr.get("values"):
                values = [str(v) for v in expr["values"]]
                if len(values) > 1:
                    raise UnparsableWorkload(
                        f"node affinity allows several GPU types for {expr['key']}: {', '.join(values)}"
                    )
                return str(expr["key"]), values[0]
    return None


def gpu_from_node_labels(labels: Mapping[str, str]) -> tuple[str, str] | None:
    for label in GPU_LABELS:
        if label in labels:
            return label, labels[label]
    return None


def _flag(flags: ParsedFlags, env: Mapping[str, str], engine: Engine, knob: str) -> str | bool | None:
    for spelling in FLAGS.get(knob, {}).get(engine, ()):
        if spelling in flags.values:
            return flags.values[spelling]
    if engine == Engine.TGI:  # clap reads --model-id from MODEL_ID etc.
        for spelling in FLAGS.get(knob, {}).get(engine, ()):
            env_name = spelling.lstrip("-").replace("-", "_").upper()
            if env_name in env:
                return env[env_name]
    return None


def _int(value: str | bool | None, knob: str) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise UnparsableWorkload(f"{knob} is not an integer: {value!r}") from None


def _quantization(
    engine: Engine, method: str | None, kv: str | None, from_name: Quantization | None
) -> Quantization:
    weights = from_name or Quantization()
    if method is not None and method.lower() not in ("none", ""):
        key = method.lower().replace("-", "_")
        try:
            dtype = Dtype.parse(key)
        except ValueError:
            raise UnparsableWorkload(f"unknown quantization {method!r}") from None
        base = key.split("_")[0] if key.endswith("marlin") else key
        kept = base if base in INT4_METHODS or base in ("gptq", "awq") else None
        if from_name is not None and from_name.method and not kept:
            kept = from_name.method
        weights = Quantization(weights=dtype, kv_cache=weights.kv_cache, method=kept)
    kv_dtype = weights.kv_cache
    if kv is not None and kv.lower() != "auto":
        try:
            kv_dtype = Dtype.parse(kv)
        except ValueError:
            raise UnparsableWorkload(f"unknown kv cache dtype {kv!r}") from None
    return Quantization(weights=weights.weights, kv_cache=kv_dtype, method=weights.method)


def parse_workload(
    obj: Mapping[str, Any], resolver: Resolver, *, node_labels: Sequence[Mapping[str, str]] = ()
) -> ParsedWorkload:
    """Parse one workload object (camelCase dict as the API returns it).

    ``node_labels``: labels of the nodes its pods run on, used when the template names no GPU.
    Raises ``UnparsableWorkload`` with the reason.
    """
    meta = obj.get("metadata", {})
    found = inference_container(obj)
    if found is None:
        raise UnparsableWorkload("no container runs vLLM, TGI or SGLang")
    index, container, engine = found
    argv = container_argv(container, engine)
    if argv is None:
        raise UnparsableWorkload(
            f"cannot locate the {engine.value} command line in container {container.get('name')!r}"
        )
    flags = parse_flags(argv.tokens)
    runtime = kserve_runtime(container)
    if runtime:
        _runtime_checks(obj, argv.tokens)

    def get(knob: str) -> str | bool | None:
        if runtime and knob in HF_RUNTIME_FLAGS:
            return next((flags.values[f] for f in HF_RUNTIME_FLAGS[knob] if f in flags.values), None)
        return _flag(flags, argv.env, engine, knob)

    model_arg = get("model")
    from_storage = False
    if model_arg is None and engine == Engine.VLLM and flags.positional and not runtime:
        model_arg = flags.positional[0]
    if model_arg is None and runtime:
        uri = str(obj.get("spec", {}).get("predictor", {}).get("model", {}).get("storageUri", ""))
        hub_id = uri.removeprefix("hf://").partition(":")[0]  # hf://ORG/NAME[:REVISION]
        model_arg, from_storage = (hub_id, True) if uri.startswith("hf://") else (None, False)
    if not isinstance(model_arg, str) or not model_arg:
        where = (
            "KServe's Hugging Face runtime args (--model_id) or an hf:// storageUri"
            if runtime
            else (f"the {engine.value} command line")
        )
        raise UnparsableWorkload(f"no model argument in {where}")
    if "$(" in model_arg or "$" in model_arg:
        raise UnparsableWorkload(f"model argument {model_arg!r} uses a variable that is not set literally")
    served = get("served_model_name")
    served_name = served if isinstance(served, str) else (str(meta.get("name", "")) if runtime else model_arg)
    model, quant_from_name = _resolve_model(resolver, model_arg, served_name)

    template = pod_template(obj)
    gpu_label = gpu_from_template(template)
    source = "template"
    if gpu_label is None:
        labels = {gpu_from_node_labels(lbl) for lbl in node_labels} - {None}
        if len(labels) > 1:
            raise UnparsableWorkload(f"pods run on different GPU types: {sorted(str(x) for x in labels)}")
        gpu_label = next(iter(labels), None)
        source = "nodes"
    if gpu_label is None:
        raise UnparsableWorkload(
            "GPU type unknown: no nodeSelector/node affinity on a GPU label and no running pod to read it from"
        )
    try:
        gpu = resolver.gpu(gpu_label[1])
    except UnknownIdError:
        raise UnparsableWorkload(f"GPU {gpu_label[1]!r} ({gpu_label[0]}) is not in the catalog") from None

    request = gpu_request(container)
    if request is None:
        raise UnparsableWorkload(f"container {container.get('name')!r} requests no GPU (nvidia.com/gpu)")
    tp = _int(get("tensor_parallel"), "tensor parallel size") or 1
    pp = _int(get("pipeline_parallel"), "pipeline parallel size") or 1
    if tp * pp > request[1]:
        raise UnparsableWorkload(
            f"tensor x pipeline parallel = {tp * pp} GPUs but the container requests {request[1]} {request[0]}"
        )
    config_fields: dict[str, Any] = {
        "model": model.id,
        "gpu": gpu.id,
        "engine": engine,
        "tensor_parallel": tp,
        "pipeline_parallel": pp,
        "replicas": replicas_of(obj),
    }
    qmethod, kv = get("quantization"), get("kv_cache_dtype")
    config_fields["quantization"] = _quantization(
        engine,
        qmethod if isinstance(qmethod, str) else None,
        kv if isinstance(kv, str) else None,
        quant_from_name,
    )
    for knob in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
        value = _int(get(knob), knob.replace("_", " "))
        if value is not None and value > 0:
            config_fields[knob] = value
    if engine == Engine.SGLANG and _int(get("max_num_batched_tokens"), "chunked prefill size") == -1:
        config_fields["enable_chunked_prefill"] = False
    util = get("gpu_memory_utilization")
    if util is not None:
        try:
            config_fields["gpu_memory_utilization"] = float(str(util))
        except ValueError:
            raise UnparsableWorkload(f"gpu memory utilization is not a number: {util!r}") from None
    for knob, per_engine in BOOL_FLAGS.items():
        on, off = per_engine.get(engine, (None, None))
        if on and on in flags.values:
            config_fields[knob] = True
        if off and off in flags.values:
            config_fields[knob] = False
    try:
        config = ServingConfig.model_validate(config_fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UnparsableWorkload(
            f"invalid {'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}"
        ) from None
    port_value = _int(get("port"), "port")
    return ParsedWorkload(
        kind=str(obj.get("kind", "Deployment")),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "default")),
        engine=engine,
        config=config,
        container_index=index,
        argv=argv,
        model_arg=model_arg,
        served_model_name=served_name,
        port=port_value or (HF_RUNTIME_PORT if runtime else DEFAULT_PORTS[engine]),
        gpu_source=f"{source}:{gpu_label[0]}",
        gpu_resource=request[0],
        pod_labels=dict(template.get("metadata", {}).get("labels") or {}),
        runtime=runtime,
        model_from_storage_uri=from_storage,
    )


def _resolve_model(resolver: Resolver, model_arg: str, served: str) -> tuple[ModelSpec, Quantization | None]:
    candidates = [model_arg]
    if model_arg.startswith("/") or model_arg.startswith("."):
        candidates.append(model_arg.rstrip("/").rsplit("/", 1)[-1])
    if served != model_arg:
        candidates.append(served)
    for cand in candidates:
        try:
            return resolver.resolve_model(cand)
        except UnknownIdError:
            continue
    raise UnparsableWorkload(f"model {model_arg!r} is not in the catalog")


def is_candidate(obj: Mapping[str, Any]) -> bool:
    """Managed by label, or any container that looks like an inference server."""
    labels = obj.get("metadata", {}).get("labels") or {}
    if str(labels.get(MANAGED_LABEL, "")).lower() == "true":
        return True
    return inference_container(obj) is not None


def template_names_gpu(obj: Mapping[str, Any]) -> bool:
    """Whether the pod template itself says which GPU it needs (else node labels are read)."""
    try:
        return gpu_from_template(pod_template(obj)) is not None
    except UnparsableWorkload:
        return True
