"""Reading measurement CSVs (format: docs/performance-model.md) into typed rows, one error per bad row.

A malformed row never stops the file: it becomes a ``MeasurementRow`` with ``error`` set and no
configuration, so ``perf validate`` still reports exactly one entry per data row.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from servewise.domain import Engine, Quantization, ServingConfig
from servewise.domain.quantization import Dtype
from servewise.errors import InputError, ServewiseError
from servewise.perf.catalog import Catalog, get_catalog

REQUIRED_COLUMNS = (
    "source",
    "model",
    "gpu",
    "num_gpus",
    "tensor_parallel",
    "weight_dtype",
    "kv_dtype",
    "input_len",
    "output_len",
    "concurrency",
    "metric",
    "value",
)
METRICS = ("throughput_tok_s", "ttft_ms", "tpot_ms")
# Notes that say the engine admitted every request in flight (no max_num_seqs queueing).
ADMITS_ALL = re.compile(r"static batch|max_num_seqs\s*=\s*concurrency|=\s*max_num_seqs\s*=", re.IGNORECASE)
ENGINE_ALIASES = {"tensorrt-llm": "trtllm", "trt-llm": "trtllm", "tensorrt_llm": "trtllm", "hf-tgi": "tgi"}


@dataclass(frozen=True)
class MeasurementRow:
    index: int  # 0-based data-row index in file order
    line: int  # 1-based line number in the file
    raw: dict[str, str]
    metric: str | None = None
    measured: float | None = None
    config: ServingConfig | None = None  # one replica
    replicas: int = 1
    input_len: int = 0
    output_len: int = 0
    concurrency: int = 0  # requests in flight per replica
    source: str = ""
    engine: str = "vllm"
    error: str | None = None

    @property
    def group(self) -> str:
        """Configuration group (source + model + gpu + dtype + TP): rows that share an engine setup."""
        r = self.raw
        return "|".join(r.get(k, "") for k in ("source", "model", "gpu", "weight_dtype", "tensor_parallel"))

    @property
    def calibration_key(self) -> str:
        """Engine, or ``ENGINE-legacy`` for releases known to predate the current schedulers
        (vLLM < 0.8 before the V1 engine; TensorRT-LLM < 0.12 before in-flight batching by default)."""
        version = _version(self.raw.get("engine_version") or "")
        legacy = LEGACY_BEFORE.get(self.engine)
        if version and legacy and version < legacy:
            return f"{self.engine}-legacy"
        return self.engine

    @property
    def split(self) -> str:
        """Deterministic train/holdout split by configuration group (about 1 in 4 held out)."""
        digest = hashlib.sha256(self.group.encode()).digest()
        return "holdout" if digest[0] % 4 == 0 else "train"


LEGACY_BEFORE = {"vllm": (0, 8), "trtllm": (0, 12)}


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else ()


def _int(raw: dict[str, str], name: str, lo: int, hi: int) -> int:
    text = (raw.get(name) or "").strip()
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{name} must be an integer, got {text!r}", field=name) from None
    if not lo <= value <= hi:
        raise InputError(f"{name} must be in {lo}..{hi}, got {value}", field=name)
    return value


def engine_defaults(engine: str, version: str, gpu_memory_gb: float) -> dict[str, int]:
    """Scheduler defaults of each engine's OpenAI server / benchmark tool (documented defaults)."""
    if engine == "trtllm":  # trtllm-bench / trtllm-serve: large max batch, 8192-token budget
        return {"max_num_seqs": 2048, "max_num_batched_tokens": 8192}
    if engine == "sglang":  # SGLang: chunked prefill 8192 (16384 on big GPUs), large running batch
        return {"max_num_seqs": 1024, "max_num_batched_tokens": 8192}
    if engine == "vllm":
        major_minor = _version(version)
        if major_minor and major_minor < (0, 8):  # V0 engine: 256 seqs; budget = max_model_len w/o chunking
            return {"max_num_seqs": 256, "max_num_batched_tokens": 8192}
        big = gpu_memory_gb >= 70
        return {"max_num_seqs": 1024 if big else 256, "max_num_batched_tokens": 8192 if big else 2048}
    return {"max_num_seqs": 256, "max_num_batched_tokens": 8192}


def parse_row(index: int, line: int, raw: dict[str, str], catalog: Catalog) -> MeasurementRow:
    base = {"index": index, "line": line, "raw": raw, "source": (raw.get("source") or "").strip()}
    try:
        metric = (raw.get("metric") or "").strip()
        if metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS}, got {metric!r}", field="metric")
        try:
            value = float((raw.get("value") or "").strip())
        except ValueError:
            raise InputError(f"value must be a number, got {raw.get('value')!r}", field="value") from None
        if not value > 0:
            raise InputError(f"value must be positive, got {value}", field="value")
        model, quant_from_name = catalog.resolve_model((raw.get("model") or "").strip())
        gpu = catalog.gpu((raw.get("gpu") or "").strip())
        num_gpus = _int(raw, "num_gpus", 1, 4096)
        tp = _int(raw, "tensor_parallel", 1, 64)
        if num_gpus % tp:
            raise InputError(
                f"num_gpus ({num_gpus}) is not a multiple of tensor_parallel ({tp})", field="num_gpus"
            )
        try:
            weights = Dtype.parse(raw.get("weight_dtype") or "bf16")
            kv = Dtype.parse(raw.get("kv_dtype") or "bf16")
        except ValueError as exc:
            raise InputError(str(exc), field="weight_dtype/kv_dtype") from None
        method = quant_from_name.method if quant_from_name else None
        engine_name = (raw.get("engine") or "vllm").strip().lower() or "vllm"
        engine_name = ENGINE_ALIASES.get(engine_name, engine_name)
        try:
            engine = Engine(engine_name)
        except ValueError:
            engine = Engine.VLLM
        replicas = num_gpus // tp
        input_len = _int(raw, "input_len", 1, 2_000_000)
        output_len = _int(raw, "output_len", 1, 2_000_000)
        concurrency = _int(raw, "concurrency", 1, 10_000_000)
        defaults = engine_defaults(engine_name, (raw.get("engine_version") or "").strip(), gpu.memory_gb)
        per_replica = max(1, round(concurrency / replicas))
        explicit = (raw.get("max_num_seqs") or "").strip()
        if explicit:
            defaults["max_num_seqs"] = _int(raw, "max_num_seqs", 1, 65536)
        elif ADMITS_ALL.search(raw.get("note") or ""):
            # static batches and offline runs configured with max_num_seqs = prompts admit everything
            defaults["max_num_seqs"] = max(defaults["max_num_seqs"], min(per_replica, 65536))
        config = ServingConfig(
            model=model.id,
            gpu=gpu.id,
            quantization=Quantization(weights=weights, kv_cache=kv, method=method),
            engine=engine,
            tensor_parallel=tp,
            max_model_len=input_len + output_len,
            **defaults,
        )
        return MeasurementRow(
            **base,  # type: ignore[arg-type]
            metric=metric,
            measured=value,
            config=config,
            replicas=replicas,
            input_len=input_len,
            output_len=output_len,
            concurrency=per_replica,
            engine=engine_name,
        )
    except (ServewiseError, ValueError) as exc:
        return MeasurementRow(**base, metric=(raw.get("metric") or None), error=str(exc))  # type: ignore[arg-type]


def read_measurements(path: str | Path, catalog: Catalog | None = None) -> list[MeasurementRow]:
    """All data rows of ``path`` in file order; bad rows carry ``error``. A bad header raises."""
    cat = catalog or get_catalog()
    p = Path(path)
    try:
        handle = p.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read measurements: {exc.strerror}", source=str(p)) from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"missing columns {missing}; header is {header}", source=str(p))
        rows = []
        for index, raw in enumerate(reader):
            clean = {(k or "").strip(): (v if isinstance(v, str) else "") for k, v in raw.items()}
            rows.append(parse_row(index, reader.line_num, clean, cat))
    return rows
