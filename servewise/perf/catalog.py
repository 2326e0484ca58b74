"""Hardware and model catalogs: YAML data files with cited sources, and name resolution.

``get_catalog()`` returns the default catalog (package data plus any custom chip files named in
``SERVEWISE_HARDWARE_FILES``). Names resolve case-insensitively through ids, aliases (node labels,
Hugging Face repo ids) and instance-type patterns (``p5.*``); quantized repo ids such as
``Qwen/Qwen2.5-32B-Instruct-AWQ`` resolve to the base model plus its ``Quantization``.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from servewise.domain.config import ServingConfig
from servewise.domain.hardware import HardwareSpec
from servewise.domain.model import ModelSpec
from servewise.domain.quantization import Dtype, Quantization
from servewise.errors import InputError, UnknownIdError
from servewise.perf import shapes

DATA_DIR = Path(__file__).parent / "data"
HARDWARE_FILES_ENV = "SERVEWISE_HARDWARE_FILES"

# Repo-name suffixes of quantized checkpoints, longest first so '-fp8-dynamic' wins over '-fp8'.
_QUANT_SUFFIXES: tuple[tuple[str, Quantization], ...] = tuple(
    sorted(
        {
            "-awq": Quantization(weights=Dtype.INT4, method="awq"),
            "-awq-int4": Quantization(weights=Dtype.INT4, method="awq"),
            "-gptq": Quantization(weights=Dtype.INT4, method="gptq"),
            "-gptq-int4": Quantization(weights=Dtype.INT4, method="gptq"),
            "-gptq-int8": Quantization(weights=Dtype.INT8, method="gptq"),
            "-int4": Quantization(weights=Dtype.INT4, method="w4a16"),
            "-w4a16": Quantization(weights=Dtype.INT4, method="w4a16"),
            "-quantized.w4a16": Quantization(weights=Dtype.INT4, method="w4a16"),
            "-w8a8": Quantization(weights=Dtype.INT8),
            "-quantized.w8a8": Quantization(weights=Dtype.INT8),
            "-int8": Quantization(weights=Dtype.INT8),
            "-fp8": Quantization(weights=Dtype.FP8),
            "-fp8-dynamic": Quantization(weights=Dtype.FP8),
            "-fp8-kv": Quantization(weights=Dtype.FP8, kv_cache=Dtype.FP8),
            "-nvfp4": Quantization(weights=Dtype.FP4),
            "-fp4": Quantization(weights=Dtype.FP4),
        }.items(),
        key=lambda item: -len(item[0]),
    )
)
# Variant suffixes that keep the architecture (chat/instruct tunes).
_VARIANT_SUFFIXES = ("-instruct", "-chat", "-it", "-hf", "-base")
# Kubernetes node labels of time-sliced GPUs carry this suffix (GPU feature discovery).
_SHARED_SUFFIX = "-shared"


def estimate_params(model: ModelSpec) -> float:
    """Parameter count in billions from the shapes (matrices only; norms and biases are < 0.1%)."""
    return shapes.estimate_params(model) / 1e9


_INT4_LABELS = ("w4a16", "awq", "gptq", "int4")


def quality_score(model: ModelSpec, quantization: Quantization | None) -> tuple[float | None, str | None]:
    """Published score for a weights variant, and the label it was published under.

    Exact label first (``awq``, ``fp8``...), then another int4 weight-only method (their published
    recoveries are close), then the 16-bit score. ``(None, None)`` when the model has no scores.
    """
    by_label = {q.quantization: q.score for q in model.quality}
    label = quantization.label.split("+", 1)[0] if quantization else "bf16"
    candidates = [label, quantization.weights.value if quantization else "bf16"]
    if quantization is not None and quantization.weights == Dtype.INT4:
        candidates += list(_INT4_LABELS)
    candidates += ["bf16", "fp16"]
    for key in candidates:
        if key in by_label:
            return by_label[key], key
    return None, None


class Catalog:
    """Hardware and model specs with alias resolution. Immutable; ``with_hardware`` returns a copy."""

    def __init__(
        self, hardware: Iterable[HardwareSpec], models: Iterable[ModelSpec], *, version: str
    ) -> None:
        self._hardware: dict[str, HardwareSpec] = {}
        for spec in hardware:
            self._hardware[spec.id] = spec
        self._models: dict[str, ModelSpec] = {m.id: m for m in models}
        self.version = version
        self._gpu_names, self._gpu_patterns = _index(self._hardware)
        self._model_names, _ = _index(self._models)
        for model in self._models.values():  # repo basenames: 'org/Name' also answers to 'Name'
            for alias in model.aliases:
                self._model_names.setdefault(alias.lower().rsplit("/", 1)[-1], model.id)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, data_dir: Path = DATA_DIR) -> Catalog:
        hw_path, model_path = data_dir / "hardware.yaml", data_dir / "models.yaml"
        hardware = [
            _validate(HardwareSpec, item, hw_path, f"hardware[{i}]")
            for i, item in enumerate(_read_list(hw_path, "hardware"))
        ]
        models = [
            _validate(ModelSpec, item, model_path, f"models[{i}]")
            for i, item in enumerate(_read_list(model_path, "models"))
        ]
        digest = hashlib.sha256(hw_path.read_bytes() + model_path.read_bytes()).hexdigest()[:12]
        return cls(hardware, models, version=digest)

    def with_hardware(self, specs: Iterable[HardwareSpec]) -> Catalog:
        """A copy with custom or hypothetical chips added (same id replaces the catalog entry)."""
        extra = list(specs)
        if not extra:
            return self
        payload = json.dumps([s.model_dump(mode="json") for s in extra], sort_keys=True)
        digest = hashlib.sha256((self.version + payload).encode()).hexdigest()[:12]
        return Catalog([*self._hardware.values(), *extra], self._models.values(), version=digest)

    def load_hardware_file(self, path: str | Path) -> list[HardwareSpec]:
        """Read custom chips from a YAML list (or a mapping with a ``hardware:`` list).

        A chip is either a full spec, or ``base: <catalog gpu>`` with ``scale: {field: factor}``
        and/or absolute overrides of any field. Bases may also name chips defined earlier in the file.
        """
        path = Path(path)
        items = _read_list(path, "hardware")
        known = dict(self._hardware)
        out: list[HardwareSpec] = []
        for i, item in enumerate(items):
            where = f"hardware[{i}]"
            if not isinstance(item, Mapping):
                raise InputError("each chip must be a mapping", source=str(path), field=where)
            spec = _chip_from_entry(dict(item), known, path, where, self)
            known[spec.id] = spec
            out.append(spec)
        return out

    # -- lookups ---------------------------------------------------------------------------------
    def gpus(self) -> list[HardwareSpec]:
        return list(self._hardware.values())

    def models(self) -> list[ModelSpec]:
        return list(self._models.values())

    def gpu(self, name: str) -> HardwareSpec:
        """A GPU by id, alias (node label, VM size) or instance type (``p5.48xlarge``)."""
        key = name.strip().lower()
        candidates = [key, key.removesuffix(_SHARED_SUFFIX)]
        for cand in candidates:
            if cand in self._gpu_names:
                return self._hardware[self._gpu_names[cand]]
        for pattern, gpu_id in self._gpu_patterns:
            if fnmatch.fnmatchcase(key, pattern):
                return self._hardware[gpu_id]
        raise _unknown("gpu", name, self._gpu_names)

    def model(self, name: str) -> ModelSpec:
        """A model by id, alias or Hugging Face repo id (quantized repos resolve to their base)."""
        return self.resolve_model(name)[0]

    def served_context(self, config: ServingConfig) -> int:
        """The longest sequence a server of ``config`` accepts: its max_model_len, else the model's."""
        return config.max_model_len or self.model(config.model).max_context

    def resolve_model(self, name: str) -> tuple[ModelSpec, Quantization | None]:
        """Model and, for quantized repo ids (``...-AWQ``, ``...-FP8-dynamic``), its quantization."""
        key = name.strip().lower()
        quant: Quantization | None = None
        found = self._lookup_model(key)
        if found is None:
            for suffix, q in _QUANT_SUFFIXES:
                if key.endswith(suffix):
                    key, quant = key.removesuffix(suffix), q
                    found = self._lookup_model(key)
                    break
        if found is None:
            raise _unknown("model", name, self._model_names)
        return self._models[found], quant

    def _lookup_model(self, key: str) -> str | None:
        base = key.rsplit("/", 1)[-1]
        for cand in (key, base, *(base.removesuffix(s) for s in _VARIANT_SUFFIXES if base.endswith(s))):
            if cand in self._model_names:
                return self._model_names[cand]
        return None


def _index(
    specs: Mapping[str, HardwareSpec] | Mapping[str, ModelSpec],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Lower-cased exact names -> id, and instance-type patterns (with '*') -> id."""
    names: dict[str, str] = {}
    patterns: list[tuple[str, str]] = []
    for spec_id, spec in specs.items():
        names[spec_id] = spec_id
        for alias in spec.aliases:
            low = alias.lower()
            if "*" in low or "?" in low:
                patterns.append((low, spec_id))
            else:
                names.setdefault(low, spec_id)
    return names, patterns


def _unknown_message(field: str, name: str, names: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(name.strip().lower(), list(names), n=3, cutoff=0.5)
    suggestions = list(dict.fromkeys(names.get(c, c) for c in close))
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    known = ", ".join(sorted(set(names.values())))
    return f"unknown {field} {name!r}{hint} (known {field}s: {known})"


def _unknown(field: str, name: str, names: Mapping[str, str]) -> UnknownIdError:
    return UnknownIdError(_unknown_message(field, name, names), field=field)


def _read_list(path: Path, key: str) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", source=str(path)) from exc
    if isinstance(data, Mapping):
        data = data.get(key)
    if not isinstance(data, list):
        raise InputError(
            f"expected a list of entries (or a mapping with a '{key}:' list)", source=str(path), field=key
        )
    return data


def _validate(cls: type[Any], item: Any, path: Path, where: str) -> Any:
    try:
        return cls.model_validate(item)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{where}.{loc}" if loc else where
        raise InputError(err["msg"], source=str(path), field=field) from exc


def _chip_from_entry(
    item: dict[str, Any], known: Mapping[str, HardwareSpec], path: Path, where: str, catalog: Catalog
) -> HardwareSpec:
    base_name = item.pop("base", None)
    scale = item.pop("scale", None) or {}
    if not isinstance(scale, Mapping):
        raise InputError("scale must be a mapping of field: factor", source=str(path), field=f"{where}.scale")
    if base_name is None:
        if scale:
            raise InputError("scale needs a base chip", source=str(path), field=f"{where}.scale")
        item.setdefault("hypothetical", True)
        return _validate(HardwareSpec, item, path, where)
    if "id" not in item:
        raise InputError("a chip needs an id", source=str(path), field=f"{where}.id")
    base_key = str(base_name).lower()
    if base_key in known:
        base = known[base_key]
    else:
        try:
            base = catalog.gpu(str(base_name))
        except UnknownIdError as exc:
            detail = _unknown_message("gpu", str(base_name), {**catalog._gpu_names, **{k: k for k in known}})
            raise InputError(detail, source=str(path), field=f"{where}.base") from exc
    data = base.model_dump()
    for key, factor in scale.items():
        field = f"{where}.scale.{key}"
        if key not in HardwareSpec.model_fields:
            raise InputError(f"unknown hardware field {key!r}", source=str(path), field=field)
        if key == "tflops":
            data["tflops"] = _scale_tflops(base, factor, path, field)
        elif isinstance(data.get(key), bool) or not isinstance(data.get(key), int | float):
            raise InputError(
                f"field {key!r} is not numeric and cannot be scaled", source=str(path), field=field
            )
        else:
            data[key] = data[key] * _factor(factor, path, field)
    if "tflops" in item and isinstance(item["tflops"], Mapping):
        data["tflops"] = {**data["tflops"], **{Dtype.parse(str(k)): v for k, v in item.pop("tflops").items()}}
    if item["id"] != base.id:  # a new (hypothetical) chip; the same id is an override (e.g. a price)
        data.update(name=f"{base.name} ({item['id']})", aliases=[], hypothetical=True)
    data["sources"] = [*base.sources, f"derived from {base.id} in {path.name}"]
    data.update(item)
    return _validate(HardwareSpec, data, path, where)


def _factor(value: Any, path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InputError(
            f"scale factor must be a positive number, got {value!r}", source=str(path), field=field
        )
    return float(value)


def _scale_tflops(base: HardwareSpec, factor: Any, path: Path, field: str) -> dict[Dtype, float]:
    if isinstance(factor, Mapping):
        out = dict(base.tflops)
        for dtype_name, f in factor.items():
            dtype = Dtype.parse(str(dtype_name))
            if dtype not in out:
                raise InputError(
                    f"base {base.id} has no {dtype.value} rate to scale",
                    source=str(path),
                    field=f"{field}.{dtype_name}",
                )
            out[dtype] = out[dtype] * _factor(f, path, f"{field}.{dtype_name}")
        return out
    f = _factor(factor, path, field)
    return {k: v * f for k, v in base.tflops.items()}


def _hardware_files_from_env() -> tuple[str, ...]:
    raw = os.environ.get(HARDWARE_FILES_ENV, "")
    return tuple(p for p in raw.split(os.pathsep) if p.strip())


@functools.lru_cache(maxsize=16)
def _cached_catalog(files: tuple[str, ...]) -> Catalog:
    catalog = Catalog.load()
    for file in files:
        catalog = catalog.with_hardware(catalog.load_hardware_file(file))
    return catalog


def get_catalog(extra_hardware_files: Sequence[str | Path] = ()) -> Catalog:
    """The default catalog plus custom chip files (arguments, then ``SERVEWISE_HARDWARE_FILES``)."""
    files = tuple(str(Path(f)) for f in extra_hardware_files) + _hardware_files_from_env()
    return _cached_catalog(tuple(dict.fromkeys(files)))
