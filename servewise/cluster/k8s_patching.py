"""Render a ``ServingConfig`` change as a minimal RFC 6902 JSON patch, and its rollback.

The desired object is the current one with only the changed knobs rewritten (engine flags in the
style they were written, GPU requests, the GPU node selector, replicas); ``previous_record`` is what
rollback needs (the previous ServingConfig and the exact container command/args/resources,
nodeSelector, affinity and replicas), kept where ``k8s_records`` says. ``jsonpatch`` then diffs
current -> desired, so the patch touches nothing else. JSON patch rather than merge patch:
a merge patch replaces whole lists (container args), which loses unrelated edits.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Mapping
from typing import Any

import jsonpatch

from servewise.cluster.k8s_argv import normalize_flag, parse_flags
from servewise.cluster.k8s_parsing import (
    BOOL_FLAGS,
    FLAGS,
    HF_RUNTIME,
    HF_RUNTIME_FLAGS,
    ParsedWorkload,
    Resolver,
)
from servewise.domain import Engine, ServingConfig
from servewise.domain.quantization import Dtype
from servewise.errors import InputError

_KV_SPELLING = {
    Engine.VLLM: {Dtype.FP8: "fp8", Dtype.BF16: "auto", Dtype.FP16: "auto"},
    Engine.SGLANG: {Dtype.FP8: "fp8_e4m3", Dtype.BF16: "auto", Dtype.FP16: "auto"},
    Engine.TGI: {Dtype.FP8: "fp8"},
}
_NUMERIC_KNOBS = (
    "tensor_parallel",
    "pipeline_parallel",
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "max_model_len",
)


def pod_spec_path(kind: str) -> tuple[str, ...]:
    return ("spec", "predictor") if kind == "InferenceService" else ("spec", "template", "spec")


def replicas_path(kind: str) -> tuple[str, ...]:
    return ("spec", "predictor", "minReplicas") if kind == "InferenceService" else ("spec", "replicas")


def _at(obj: dict[str, Any], path: tuple[str, ...], create: bool = False) -> dict[str, Any]:
    node = obj
    for key in path:
        if key not in node or node[key] is None:
            if not create:
                return {}
            node[key] = {}
        node = node[key]
    return node


def engine_container(obj: dict[str, Any], kind: str, index: int) -> dict[str, Any] | None:
    """The container that runs the engine: ``containers[index]`` of the pod template, or an
    InferenceService's ``predictor.model`` (a KServe runtime's container) when it has no containers."""
    pod = _at(obj, pod_spec_path(kind))
    containers = pod.get("containers")
    if containers:
        found: dict[str, Any] = containers[index]
        return found
    model = pod.get("model") if kind == "InferenceService" else None
    return model if isinstance(model, dict) else None


def _container(obj: dict[str, Any], parsed: ParsedWorkload) -> dict[str, Any]:
    container = engine_container(obj, parsed.kind, parsed.container_index)
    if container is None:
        raise InputError("workload has no containers to patch", source=f"{parsed.namespace}/{parsed.name}")
    return container


def patched_fields(obj: Mapping[str, Any], kind: str, container_index: int) -> dict[str, Any]:
    """Every field a patch may write (the engine container's command, args and resources, the pod's
    nodeSelector and affinity, replicas; an InferenceService's maxReplicas), as ``obj`` holds them;
    ``{}`` when it has no such container."""
    work = copy.deepcopy(dict(obj))
    try:
        container = engine_container(work, kind, container_index)
    except IndexError:
        container = None
    if container is None:
        return {}
    pod = _at(work, pod_spec_path(kind))
    replicas: Any = work
    for key in replicas_path(kind):
        replicas = replicas.get(key) if isinstance(replicas, Mapping) else None
    fields = {
        "command": container.get("command"),
        "args": container.get("args"),
        "resources": container.get("resources"),
        "nodeSelector": pod.get("nodeSelector"),
        "affinity": pod.get("affinity"),
        "replicas": replicas,
    }
    if kind == "InferenceService":
        fields["maxReplicas"] = pod.get("maxReplicas")  # raised with minReplicas when below it
    return fields


def previous_record(
    obj: Mapping[str, Any], parsed: ParsedWorkload, proposal_id: str, applied: ServingConfig | None = None
) -> dict[str, Any]:
    """What rollback needs to restore exactly the spec before ``proposal_id``, and the config the
    proposal applied (``applied_config``: a re-run of it is a no-op, the same id with another
    config, as an approver's edit, is applied anew)."""
    _container(copy.deepcopy(dict(obj)), parsed)  # a clear error when there is none
    return {
        "proposal_id": proposal_id,
        "config": parsed.config.model_dump(mode="json"),
        "applied_config": applied.model_dump(mode="json") if applied is not None else None,
        "container_index": parsed.container_index,
        **patched_fields(obj, parsed.kind, parsed.container_index),
    }


def desired_object(
    obj: Mapping[str, Any],
    parsed: ParsedWorkload,
    target: ServingConfig,
    resolver: Resolver,
) -> dict[str, Any]:
    """The workload as it should be after applying ``target`` (the caller diffs it into a patch)."""
    current = parsed.config
    if target.engine != current.engine:
        raise InputError(
            f"changing the engine ({current.engine.value} -> {target.engine.value}) is not a patch; redeploy",
            field="engine",
        )
    new = copy.deepcopy(dict(obj))
    container = _container(new, parsed)
    tokens = _raw_tokens(container, parsed)
    tokens = _render_flags(tokens, parsed, target, resolver)
    _write_tokens(container, parsed, tokens)
    if target.gpus_per_replica != current.gpus_per_replica:
        resources = container.setdefault("resources", {})
        for section in ("limits", "requests"):
            if section == "limits" or parsed.gpu_resource in (resources.get("requests") or {}):
                resources.setdefault(section, {})[parsed.gpu_resource] = str(target.gpus_per_replica)
    if target.gpu != current.gpu:
        _set_gpu_selector(new, parsed, target.gpu, resolver)
    if target.replicas != current.replicas:
        *parent, last = replicas_path(parsed.kind)
        _at(new, tuple(parent), create=True)[last] = target.replicas
        predictor = _at(new, pod_spec_path(parsed.kind)) if parsed.kind == "InferenceService" else {}
        if 0 < int(predictor.get("maxReplicas") or 0) < target.replicas:
            predictor["maxReplicas"] = target.replicas  # KServe refuses minReplicas above it (0: none)
    return new


def restored_object(obj: Mapping[str, Any], kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The workload with the recorded container/pod fields and replicas put back."""
    new = copy.deepcopy(dict(obj))
    pod = _at(new, pod_spec_path(kind))
    container = engine_container(new, kind, int(record.get("container_index", 0)))
    if container is None:
        raise InputError(
            "workload has no containers to restore", source=str(new.get("metadata", {}).get("name"))
        )
    for key in ("command", "args", "resources"):
        _put(container, key, record.get(key))
    for key in ("nodeSelector", "affinity"):
        _put(pod, key, record.get(key))
    if kind == "InferenceService" and "maxReplicas" in record:  # both put back, an absent one too
        _put(pod, "minReplicas", record.get("replicas"))
        _put(pod, "maxReplicas", record["maxReplicas"])
    elif record.get("replicas") is not None:
        *parent, last = replicas_path(kind)
        _at(new, tuple(parent), create=True)[last] = record["replicas"]
    return new


def _put(node: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        node.pop(key, None)
    else:
        node[key] = copy.deepcopy(value)


def locked(obj: Mapping[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ops`` guarded by the resourceVersion ``obj`` was read at: the API server answers 409 if
    the object moved since (kubernetes/kubernetes#15416)."""
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return [*ops, {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}] if rv else ops


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Minimal RFC 6902 operations turning ``old`` into ``new`` (status/managed fields ignored)."""
    strip = ("status",)
    a = {k: v for k, v in old.items() if k not in strip}
    b = {k: v for k, v in new.items() if k not in strip}
    ops: list[dict[str, Any]] = list(jsonpatch.make_patch(a, b))
    return ops


# -- engine flags -----------------------------------------------------------------------------------
def _raw_tokens(container: Mapping[str, Any], parsed: ParsedWorkload) -> list[str]:
    argv = parsed.argv
    if argv.source == "args":
        return [str(x) for x in (container.get("args") or [])[argv.offset :]]
    if argv.source == "command":
        return [str(x) for x in (container.get("command") or [])[argv.offset :]] + [
            str(x) for x in container.get("args") or []
        ]
    return list(argv.tokens)


def _write_tokens(container: dict[str, Any], parsed: ParsedWorkload, tokens: list[str]) -> None:
    argv = parsed.argv
    if list(tokens) == _raw_tokens(container, parsed):
        return
    if argv.source == "args":
        container["args"] = [*(container.get("args") or [])[: argv.offset], *tokens]
    elif argv.source == "command":
        container["command"] = [*(container.get("command") or [])[: argv.offset], *tokens]
        container.pop("args", None)
    else:
        holder = container[argv.shell_field]
        script = str(holder[-1])
        prefix_len = len(parsed.argv.tokens)
        segment_tokens = shlex.split(argv.segment) if argv.segment else []
        head = segment_tokens[: len(segment_tokens) - prefix_len]
        new_segment = shlex.join([*head, *tokens])
        if argv.segment and argv.segment in script:
            holder[-1] = script.replace(argv.segment, new_segment, 1)
        else:
            raise InputError(
                "cannot write the change back into the shell command; edit it by hand",
                source=f"{parsed.namespace}/{parsed.name}",
            )


def _set_flag(tokens: list[str], spellings: tuple[str, ...], value: str | None) -> list[str]:
    """Replace the flag's value in place (keeping ``=`` style), append it, or remove it (None)."""
    flags = parse_flags(tokens)
    for spelling in spellings:
        if spelling in flags.where:
            index, inline = flags.where[spelling]
            name = tokens[index].partition("=")[0]
            if value is None:
                return tokens[:index] + tokens[index + (1 if inline else 2) :]
            if inline:
                return [*tokens[:index], f"{name}={value}", *tokens[index + 1 :]]
            return [*tokens[: index + 1], value, *tokens[index + 2 :]]
    return tokens if value is None else [*tokens, spellings[0], value]


def _set_bool(tokens: list[str], on: str | None, off: str | None, enabled: bool) -> list[str]:
    out = [t for t in tokens if normalize_flag(t) not in {on, off}]
    wanted = on if enabled else off
    return [*out, wanted] if wanted else out


def _render_flags(
    tokens: list[str], parsed: ParsedWorkload, target: ServingConfig, resolver: Resolver
) -> list[str]:
    engine, current = parsed.engine, parsed.config
    shared = engine == Engine.SGLANG  # one flag: --chunked-prefill-size N, or -1 for chunked prefill off
    if shared:
        tokens = _render_sglang_chunking(tokens, current, target)
    for knob in _NUMERIC_KNOBS:
        value = getattr(target, knob)
        if value == getattr(current, knob) or value is None or (shared and knob == "max_num_batched_tokens"):
            continue
        spellings = FLAGS.get(knob, {}).get(engine)
        if not spellings:
            raise InputError(f"{engine.value} has no flag for {knob}", field=knob)
        tokens = _set_flag(tokens, spellings, str(value))
    for knob, per_engine in BOOL_FLAGS.items():
        if getattr(target, knob) == getattr(current, knob) or (shared and knob == "enable_chunked_prefill"):
            continue
        on, off = per_engine.get(engine, (None, None))
        target_on = bool(getattr(target, knob))
        if (on, off) == (None, None) or (not target_on and off is None):
            raise InputError(f"{engine.value} has no flag to set {knob}={target_on}", field=knob)
        tokens = _set_bool(tokens, on, off, target_on)
    tokens = _render_quantization(tokens, parsed, target, resolver)
    return tokens


def _render_sglang_chunking(tokens: list[str], current: ServingConfig, target: ServingConfig) -> list[str]:
    """SGLang's ``--chunked-prefill-size`` is both the prefill token budget and, at -1, chunked
    prefill off: a budget change while it stays off writes nothing (it would turn it on)."""

    def flag(c: ServingConfig) -> str:
        return str(c.max_num_batched_tokens) if c.enable_chunked_prefill else "-1"

    if flag(target) == flag(current):
        return tokens
    return _set_flag(tokens, FLAGS["max_num_batched_tokens"][Engine.SGLANG], flag(target))


def _render_quantization(
    tokens: list[str], parsed: ParsedWorkload, target: ServingConfig, resolver: Resolver
) -> list[str]:
    engine, current = parsed.engine, parsed.config
    q_old, q_new = current.quantization, target.quantization
    if q_new.kv_cache != q_old.kv_cache:
        spelling = _KV_SPELLING.get(engine, {}).get(q_new.kv_cache)
        if spelling is None and q_new.kv_cache not in (Dtype.BF16, Dtype.FP16):
            raise InputError(
                f"{engine.value} has no KV-cache dtype {q_new.kv_cache.value}", field="quantization"
            )
        tokens = _set_flag(tokens, FLAGS["kv_cache_dtype"][engine], spelling)
    weights_changed = (q_new.weights, q_new.method) != (q_old.weights, q_old.method)
    if target.model != current.model or (weights_changed and q_new.weights not in (Dtype.FP8, Dtype.BF16)):
        tokens = _set_model(tokens, parsed, _checkpoint_for(target, resolver))
        tokens = _set_flag(tokens, FLAGS["quantization"][engine], q_new.method if q_new.method else None)
    elif weights_changed:  # online FP8 quantization of a 16-bit checkpoint, or back to 16-bit
        tokens = _set_flag(
            tokens, FLAGS["quantization"][engine], "fp8" if q_new.weights == Dtype.FP8 else None
        )
    return tokens


def _checkpoint_for(target: ServingConfig, resolver: Resolver) -> str:
    """A Hugging Face repo id the catalog maps to the target model and weight format."""
    models = getattr(resolver, "models", None)
    candidates: list[str] = []
    if callable(models):
        for spec in models():
            if spec.id == target.model:
                candidates = [a for a in spec.aliases if "/" in a]
    q = target.quantization
    for alias in sorted(candidates, key=lambda a: ("instruct" not in a.lower(), len(a))):
        for name in (
            alias,
            *(f"{alias}-{s}" for s in ("AWQ", "GPTQ-Int4", "FP8-dynamic", "FP8", "quantized.w8a8")),
        ):
            try:
                spec, quant = resolver.resolve_model(name)
            except InputError:
                continue
            if spec.id != target.model:
                continue
            weights = quant.weights if quant else Dtype.BF16
            method = quant.method if quant else None
            if weights == q.weights and (q.method is None or method == q.method):
                return name
    raise InputError(
        f"no known checkpoint for model {target.model} with {q.label} weights; set the model argument by hand",
        field="model",
    )


def _set_model(tokens: list[str], parsed: ParsedWorkload, checkpoint: str) -> list[str]:
    engine = parsed.engine
    if parsed.runtime == HF_RUNTIME:  # KServe's runtime keeps serving under --model_name
        if parsed.model_from_storage_uri:
            raise InputError(
                f"{parsed.namespace}/{parsed.name} loads its model from storageUri; set it to"
                f" hf://{checkpoint} by hand",
                field="model",
            )
        return _set_flag(tokens, HF_RUNTIME_FLAGS["model"], checkpoint)
    flags = parse_flags(tokens)
    if (
        engine == Engine.VLLM
        and not any(s in flags.where for s in FLAGS["model"][engine])
        and flags.positional_at
    ):
        index = flags.positional_at[0]
        tokens = [*tokens[:index], checkpoint, *tokens[index + 1 :]]
    else:
        tokens = _set_flag(tokens, FLAGS["model"][engine], checkpoint)
    served = FLAGS["served_model_name"].get(engine)
    if served and not any(s in parse_flags(tokens).where for s in served):
        tokens = [*tokens, served[0], parsed.served_model_name]  # clients keep calling the old name
    return tokens


def _set_gpu_selector(obj: dict[str, Any], parsed: ParsedWorkload, gpu_id: str, resolver: Resolver) -> None:
    source, _, label = parsed.gpu_source.partition(":")
    value = _label_value(label, gpu_id, resolver)
    if value is None:
        label, value = "nvidia.com/gpu.product", _label_value("nvidia.com/gpu.product", gpu_id, resolver)
    if value is None:
        raise InputError(f"no node label value known for GPU {gpu_id}", field="gpu")
    pod = _at(obj, pod_spec_path(parsed.kind), create=True)
    selector = pod.get("nodeSelector") or {}
    terms = (pod.get("affinity") or {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}
    ).get("nodeSelectorTerms") or []
    old_label = parsed.gpu_source.partition(":")[2]
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == old_label and source == "template":
                expr["key"], expr["values"] = label, [value]
                return
    selector.pop(old_label, None)
    selector[label] = value
    pod["nodeSelector"] = selector


def _label_value(label: str, gpu_id: str, resolver: Resolver) -> str | None:
    spec = resolver.gpu(gpu_id)
    names = [a for a in spec.aliases if "*" not in a]
    if label == "nvidia.com/gpu.product":
        picks = [a for a in names if a.startswith("NVIDIA-")]
    elif label == "amd.com/gpu.product-name":
        picks = [a for a in names if a.startswith("AMD")]
    elif label == "cloud.google.com/gke-accelerator":
        picks = [a for a in names if a.startswith("nvidia-")]
    elif label == "karpenter.k8s.aws/instance-gpu-name":
        picks = [a.lower() for a in names if "-" not in a and "_" not in a]
    else:
        picks = []
    return picks[0] if picks else None
