"""The study file: a YAML declaration of a what-if sweep, validated before any work starts.

A study names its question, the axes to sweep (catalog models and GPUs, custom chips, quantization,
parallelism, engine knobs, workloads, load), the evaluator (``analytical``, ``simulate`` or
``policy``), how to sample the space (grid, random, Sobol, optuna) and what to report. Every name is
checked against the catalog and every constraint against the grid here, so a typo fails in
milliseconds with the field that is wrong instead of after an hour of sweeping.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from servewise.domain import SLO, HardwareSpec, Workload
from servewise.errors import InputError, UnknownIdError
from servewise.perf.catalog import Catalog, get_catalog

# Axes a study may sweep, and what each value is.
CONFIG_AXES = {
    "model": "catalog model id or Hugging Face repo id",
    "gpu": "catalog GPU id, alias, or a chip from hardware/hardware_files",
    "weights": "weights dtype: bf16, fp8, int8, int4/awq/gptq, fp4",
    "kv_cache": "KV-cache dtype: bf16 or fp8",
    "engine": "vllm, sglang, trtllm, tgi",
    "tensor_parallel": "GPUs per replica (power of two)",
    "max_num_seqs": "engine admission limit",
    "max_num_batched_tokens": "engine token budget per step",
    "gpu_memory_utilization": "fraction of GPU memory the engine may use",
}
LOAD_AXES = {
    "workload": "name of an entry under workloads:",
    "concurrency": "requests in flight per replica (analytical)",
    "arrival_rate_per_s": "offered load in requests/s (per fleet for analytical, per replica for simulate)",
    "input_len": "prompt tokens (overrides the workload mean)",
    "output_len": "generated tokens (overrides the workload mean)",
}
POLICY_AXES = {
    "policy": "single, shift or cascade (policy evaluator)",
    "quality_floor": "lowest mean quality score the shift policy may reach",
    "cascade_threshold": "prompt tokens at or below which the cascade serves the small model",
    "small_model": "the smaller/quantized variant, as 'model' or 'model:weights'",
    "target_utilization": "autoscaler target: replicas = ceil(load / (capacity * target))",
}
KNOWN_AXES = {**CONFIG_AXES, **LOAD_AXES, **POLICY_AXES}
ANALYTICAL_METRICS = (
    "throughput_tok_s",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "request_rate_per_s",
    "cost_per_hour",
    "cost_per_1m_output_tokens",
    "kv_capacity_tokens",
    "replicas",
    "fleet_cost_per_hour",
    "quality",
)
SIMULATE_METRICS = (
    "throughput_tok_s",
    "request_rate_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
    "slo_attainment",
    "goodput_per_s",
    "kv_usage_peak",
    "preemptions",
    "cost_per_1m_output_tokens",
    "quality",
)
POLICY_METRICS = ("cost_per_day", "slo_attainment", "mean_quality", "share_small", "replica_hours")
METRICS = {"analytical": ANALYTICAL_METRICS, "simulate": SIMULATE_METRICS, "policy": POLICY_METRICS}
HIGHER_IS_BETTER = {
    "throughput_tok_s",
    "request_rate_per_s",
    "slo_attainment",
    "goodput_per_s",
    "quality",
    "mean_quality",
    "kv_capacity_tokens",
}
_CONSTRAINT = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


class Constraint(BaseModel):
    """``field op value``: on an axis it filters points before work; on a metric it marks feasibility."""

    model_config = ConfigDict(frozen=True)

    field: str
    op: Literal["<=", ">=", "==", "!=", "<", ">"]
    value: float | str

    @classmethod
    def parse(cls, text: str) -> Constraint:
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(f"constraint {text!r} is not 'field <op> value' (op: <= >= == != < >)")
        raw: float | str = m.group(3)
        with contextlib.suppress(ValueError):
            raw = float(raw)
        return cls(field=m.group(1), op=m.group(2), value=raw)

    def holds(self, value: Any) -> bool:
        if value is None:
            return False
        rhs: Any = self.value
        if isinstance(rhs, float) and not isinstance(value, str):
            value = float(value)
        elif isinstance(rhs, float):
            rhs = str(self.value).removesuffix(".0")
        return {
            "<=": lambda: value <= rhs,
            ">=": lambda: value >= rhs,
            "==": lambda: value == rhs,
            "!=": lambda: value != rhs,
            "<": lambda: value < rhs,
            ">": lambda: value > rhs,
        }[self.op]()

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"


class Objective(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    direction: Literal["minimize", "maximize"] | None = None

    @property
    def sign(self) -> float:
        """+1 when smaller is better."""
        direction = self.direction or ("maximize" if self.metric in HIGHER_IS_BETTER else "minimize")
        return 1.0 if direction == "minimize" else -1.0


class Sampling(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["grid", "random", "sobol", "optuna"] = "grid"
    n: int | None = Field(default=None, ge=1, description="points for random/sobol, trials for optuna")
    batch: int = Field(
        default=8, ge=1, description="optuna trials asked at once (fixed: results stay reproducible)"
    )


class ReportSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pareto: tuple[str, str] | None = Field(default=None, description="two metrics for the Pareto plot")
    compare_by: str | None = Field(default=None, description="axis whose values get a side-by-side table")
    split_by: str | None = Field(default=None, description="one side-by-side table per value of this axis")
    table_metrics: list[str] = Field(default_factory=list)


class PolicySpec(BaseModel):
    """The diurnal day a ``policy`` study serves (see servewise.studies.policies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_rate_per_s: float = Field(gt=0, description="fleet arrival rate at the daily peak")
    trough_fraction: float = Field(default=0.25, gt=0, le=1, description="lowest hour's rate / peak")
    peak_hour: float = Field(default=14.0, ge=0, lt=24)
    slots: int = Field(default=8, ge=1, le=96, description="equal time slots the day is cut into")
    peak_share: float = Field(default=0.3, gt=0, le=1, description="rate above (1-this)*peak counts as peak")
    requests_per_slot: int = Field(default=400, ge=20)


class StudyFile(BaseModel):
    """A validated study (names are not yet checked against the catalog; see ``load_study``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    question: str
    seed: int = 0
    evaluator: Literal["analytical", "simulate", "policy"] = "analytical"
    axes: dict[str, list[Any]]
    fixed: dict[str, Any] = Field(default_factory=dict, description="axis values held constant")
    workloads: dict[str, Workload] = Field(default_factory=dict)
    slo: SLO = Field(default_factory=SLO)
    sampling: Sampling = Field(default_factory=Sampling)
    objective: Objective | None = None
    constraints: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    hardware: list[dict[str, Any]] = Field(default_factory=list, description="inline custom chips")
    hardware_files: list[str] = Field(default_factory=list)
    num_requests: int = Field(default=500, ge=10, description="requests per simulated point")
    policy: PolicySpec | None = None
    assumptions: list[str] = Field(default_factory=list)
    limitations: list[str] = Field(default_factory=list)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not axes:
            raise ValueError("a study needs at least one axis")
        for name, values in axes.items():
            if name not in KNOWN_AXES:
                raise ValueError(f"unknown axis {name!r}; known axes: {', '.join(KNOWN_AXES)}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"axis {name!r} is empty: give at least one value")
        return axes


class Study(BaseModel):
    """A study file plus where it came from and the catalog its names resolve in."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: StudyFile
    source: str
    text: str
    base_dir: str
    chips: list[HardwareSpec] = Field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def catalog(self) -> Catalog:
        return get_catalog().with_hardware(self.chips)

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(c) for c in self.spec.constraints]


def load_study(path: str | Path) -> Study:
    """Read, validate and resolve a study file; raises ``InputError`` naming the field at fault."""
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except OSError as exc:
        raise InputError(f"cannot read study file: {exc.strerror or exc}", source=str(path)) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", source=str(path)) from exc
    return study_from_dict(data, source=str(path), text=text, base_dir=str(path.parent))


def study_from_dict(
    data: Any, *, source: str = "<study>", text: str | None = None, base_dir: str = "."
) -> Study:
    if not isinstance(data, dict):
        raise InputError("a study file is a mapping (name, question, axes, ...)", source=source)
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(err["msg"].removeprefix("Value error, "), source=source, field=loc or None) from exc
    chips = _load_chips(spec, source, Path(base_dir))
    spec = _resolve_traces(spec, source, Path(base_dir))
    study = Study(
        spec=spec,
        source=source,
        text=text if text is not None else yaml.safe_dump(data, sort_keys=False),
        base_dir=base_dir,
        chips=chips,
    )
    from servewise.studies.checking import check_study

    check_study(study)
    return study


def _resolve_traces(spec: StudyFile, source: str, base_dir: Path) -> StudyFile:
    """Trace paths relative to the study file; each trace read once to check it.

    The simulator replays a trace as it is. The analytical model needs one length pair and a rate, so
    for it a trace workload becomes its mean prompt and output lengths at the trace's mean arrival rate.
    """
    from servewise.domain import LengthDistribution
    from servewise.perf.sim_requests import read_trace

    workloads = dict(spec.workloads)
    for name, wl in spec.workloads.items():
        if wl.trace is None:
            continue
        path = Path(wl.trace) if Path(wl.trace).is_absolute() else base_dir / wl.trace
        try:
            arrivals, inputs, outputs = read_trace(path)
        except InputError as exc:
            raise InputError(str(exc), source=source, field=f"workloads.{name}.trace") from exc
        wl = wl.model_copy(update={"trace": str(path)})
        if spec.evaluator != "simulate":
            span = float(arrivals[-1] - arrivals[0])
            rate = wl.arrival_rate_per_s or ((len(arrivals) - 1) / span if span > 0 else None)
            wl = wl.model_copy(
                update={
                    "trace": None,
                    "input_len": LengthDistribution.fixed(max(int(round(inputs.mean())), 1)),
                    "output_len": LengthDistribution.fixed(max(int(round(outputs.mean())), 1)),
                    "arrival_rate_per_s": rate,
                }
            )
        workloads[name] = wl
    return spec.model_copy(update={"workloads": workloads})


def _load_chips(spec: StudyFile, source: str, base_dir: Path) -> list[HardwareSpec]:
    import tempfile

    cat = get_catalog()
    chips: list[HardwareSpec] = []
    for i, file in enumerate(spec.hardware_files):
        path = Path(file) if Path(file).is_absolute() else base_dir / file
        if not path.exists():
            raise InputError(f"no such chip file {str(path)!r}", source=source, field=f"hardware_files[{i}]")
        chips += cat.with_hardware(chips).load_hardware_file(path)
    if spec.hardware:
        with tempfile.TemporaryDirectory() as tmp:  # reuse the catalog's chip-file reader (base/scale)
            inline = Path(tmp) / "inline.yaml"
            inline.write_text(yaml.safe_dump({"hardware": spec.hardware}))
            try:
                chips += cat.with_hardware(chips).load_hardware_file(inline)
            except InputError as exc:
                raise InputError(str(exc).split(": ", 1)[-1], source=source, field=exc.field) from exc
    return chips


def resolve_gpu(catalog: Catalog, name: str, field: str) -> str:
    try:
        return catalog.gpu(str(name)).id
    except UnknownIdError as exc:
        raise UnknownIdError(str(exc), field=field) from exc
